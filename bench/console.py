"""Console benchmark: the findings page and the overview over one million
findings in a real Elasticsearch, through the real server (uvicorn) as a
browser asks for them.

    SEPWATCH_ES_PORT=25200 python -m bench.console              # 1,000,000 findings
    SEPWATCH_ES_PORT=25200 python -m bench.console --findings 200000 --reload

It starts the project's node on SEPWATCH_ES_PORT (default 25200) with
deploy/local/elasticsearch.sh (reusing it if it runs, leaving it running: stop
it with `deploy/local/elasticsearch.sh down`), loads the findings once as
bench/report.py does, then times each page end to end (HTTP request to the
last byte) and, beside it, the bare Elasticsearch search of the same page, so
the console's own cost shows as a ratio. Targets: findings page p95 < 300 ms,
overview < 1 s.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

PORT = os.environ.get("SEPWATCH_ES_PORT", "25200")
os.environ["SEPWATCH_BENCH_ES_PORT"] = PORT  # bench.report reads it on import

from elasticsearch import Elasticsearch  # noqa: E402

from bench import report as loader  # noqa: E402
from console import queries  # noqa: E402
from console.serve import InThread as ConsoleServer  # noqa: E402
from streams.lifecycle import lifecycle_index  # noqa: E402
from streams.settings import Settings  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ES = ROOT / "deploy" / "local" / "elasticsearch.sh"


def _pages(rnd: random.Random) -> list[dict[str, str]]:
    """What analysts filter by: nothing, a rule, an entity and a status (as the
    records leave it), an app, a user, a month and a status."""
    rules = [r.id for r in loader.RULES]
    return [
        {},
        {"rule": rnd.choice(rules)},
        {"entity": rnd.choice(loader.ENTITIES), "status": "open"},
        {"severity": "high", "app": rnd.choice(loader.APPS)},
        {"user": f"u-{rnd.randrange(20_000):05d}"},
        {"from": "2026-11-01", "to": "2026-12-01", "status": "acknowledged"},
    ]


def _get(url: str) -> float:
    began = time.perf_counter()
    with urllib.request.urlopen(url) as resp:
        resp.read()
        assert resp.status == 200, resp.status
    return time.perf_counter() - began


def _p95(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=20)[18] if len(xs) >= 20 else max(xs)


def _line(name: str, xs: list[float]) -> str:
    return (
        f"{name:<34} n={len(xs):>4}  p50 {1000 * statistics.median(xs):7.1f} ms  "
        f"p95 {1000 * _p95(xs):7.1f} ms  max {1000 * max(xs):7.1f} ms"
    )


def _pages_timed(
    url: str, es: Elasticsearch, rounds: int
) -> tuple[list[float], list[float], list[float], dict[str, list[float]]]:
    """Findings pages through the console, their next pages, and the same
    queries on a bare client; seconds each, and the pages by filter."""
    rnd = random.Random(3)
    page_t: list[float] = []
    next_t: list[float] = []
    bare_t: list[float] = []
    by_filter: dict[str, list[float]] = {}
    _get(f"{url}/findings")  # warm: first connection, templates compiled
    for _ in range(rounds):
        for params in _pages(rnd):
            page_t.append(_get(f"{url}/findings?{urlencode(params)}"))
            by_filter.setdefault(",".join(sorted(params)) or "(none)", []).append(page_t[-1])
            began = time.perf_counter()
            found = queries.page(es, loader.INDEX, queries.Filters.of(params))
            bare_t.append(time.perf_counter() - began)
            if found.next_cursor:
                q = urlencode({**params, "after": found.next_cursor})
                next_t.append(_get(f"{url}/findings?{q}"))
    return page_t, next_t, bare_t, by_filter


def _overviews_timed(url: str) -> tuple[list[float], list[float]]:
    """First view of each entity: the half-year's figures are computed (kept
    a minute); then views within the minute: open findings and trend."""
    entities = ["", *loader.ENTITIES]
    cold_t = [_get(f"{url}/overview?entity={entity}") for entity in entities]
    warm_t = [_get(f"{url}/overview?entity={e}") for _ in range(3) for e in entities]
    return cold_t, warm_t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--findings", type=int, default=1_000_000)
    ap.add_argument("--reload", action="store_true", help="delete and load again")
    ap.add_argument("--rounds", type=int, default=40, help="page requests per filter")
    args = ap.parse_args()

    env = {**os.environ, "SEPWATCH_ES_PORT": PORT}
    subprocess.run([str(ES), "up"], check=True, env=env, timeout=900)
    es = Elasticsearch(loader.URL, request_timeout=120)
    loader.put_template(es, loader.INDEX)
    have = (
        int(es.count(index=loader.INDEX)["count"]) if es.indices.exists(index=loader.INDEX) else 0
    )
    records = lifecycle_index(loader.INDEX)
    if args.reload or have != args.findings:
        # As bench.report loads them: statuses set by lifecycle records (about
        # 1.5 a finding), and the access tally the device share is read from.
        loader._load_afresh(es, args.findings, workers=4)
    print(
        f"{int(es.count(index=loader.INDEX)['count']):,} findings and "
        f"{int(es.count(index=records)['count']):,} lifecycle records in {loader.INDEX} "
        f"at {loader.URL}"
    )

    settings = Settings(
        es_url=loader.URL,
        es_index=loader.INDEX,
        broker="127.0.0.1:1",
        policy=ROOT / "deploy/policy/example.yaml",
    )
    # Each run starts from a cold shard request cache (the counts are cached there).
    es.indices.clear_cache(index=f"{loader.INDEX},{records}", request=True)
    with ConsoleServer(settings) as server:
        page_t, next_t, bare_t, by_filter = _pages_timed(server.url, es, args.rounds)
        cold_t, warm_t = _overviews_timed(server.url)
    print(_line("findings page (console, HTTP)", page_t))
    for name, xs in by_filter.items():
        print(_line(f"  filtered by {name}", xs))
    print(_line("  next page (search_after)", next_t))
    print(_line("  same query, bare ES client", bare_t))
    print(
        f"  console / bare ES (p50): {statistics.median(page_t) / statistics.median(bare_t):.2f}x"
    )
    print(_line("overview, first view (console, HTTP)", cold_t))
    print(_line("overview, again (console, HTTP)", warm_t))
    ok = _p95(page_t) < 0.3 and max(cold_t) < 1.0
    print("targets (page p95 < 300 ms, overview < 1 s):", "met" if ok else "NOT met")
    print(f"Elasticsearch on {PORT} left running: SEPWATCH_ES_PORT={PORT} {ES} down")
    es.close()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
