"""Report and lifecycle benchmark: the semiannual report over one million
findings in a real Elasticsearch node, and `findings ack` on them, beside a
single `count` and a single lookup by id over the same index in the same run.

    python -m bench.report                     # 1,000,000 findings (kept for the next run)
    python -m bench.report --findings 200000 --reload
    SEPWATCH_BENCH_ES_PORT=24200 SEPWATCH_BENCH_BROKER=127.0.0.1:19092 python -m bench.report

It starts the project's node on port 19200 (SEPWATCH_BENCH_ES_PORT) with
deploy/local/elasticsearch.sh (reusing it if it runs), loads the findings once
with the async bulk helper and a few parallel workers (800k in 2026H2, the rest
in 2026H1 for the comparison; statuses as a bank's half-year leaves them, set
as an analyst sets them: lifecycle records, about 1.5 records a finding), then
runs `sepwatch report --period 2026H2` as a user would, in a child process
whose wall time and peak RSS are measured. Targets: under 30 s, under 500 MB.

Then it acknowledges open findings one by one as `findings ack` does
(streams.lifecycle.record: who, the finding, its records, the create, the
read-back), and with SEPWATCH_BENCH_BROKER also the copy to the lifecycle
topic; target: median under 200 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
from elasticsearch import Elasticsearch

from detectors import CATALOGUE
from review.accesses import store_counts
from review.evidence import publish_lifecycle
from schemas import Finding
from schemas.findings import WaiverRef
from streams.elastic import async_client, document, index_for
from streams.indices import put_template
from streams.lifecycle import latest, lifecycle_index, record
from streams.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
ES = ROOT / "deploy" / "local" / "elasticsearch.sh"
PORT = os.environ.get("SEPWATCH_BENCH_ES_PORT", "19200")
URL = f"http://127.0.0.1:{PORT}"
INDEX = "bench-report-findings"
ENTITIES = ["HQ", "SUB-VN", *(f"BR-{n:02d}" for n in range(10))]
APPS = [
    "m365-sharepoint",
    "m365-onedrive",
    "m365-teams",
    "zoom",
    "jira-cloud",
    "dooray",
    "google-calendar",
    "box",
    "chatgpt-enterprise",
    "salesforce",
    "kdata-lab",
    "dropbox",
    "notion",
    "slack",
]
# Findings per rule as a bank's half-year has them; a rule not named here
# (added to the catalogue since) fails the run rather than going unweighted.
WEIGHT = {
    "SEP-001": 12,
    "SEP-002": 8,
    "SEP-003": 2,
    "SEP-004": 2,
    "SEP-005": 1,
    "SEP-006": 30,
    "SEP-007": 40,
    "SEP-008": 0.001,
    "SEP-009": 0.001,
    "SEP-010": 3,
    "SEP-011": 2,
}
RULES = list(CATALOGUE.values())
WEIGHTS = [WEIGHT[r.id] for r in RULES]
H2 = datetime(2026, 7, 1, tzinfo=UTC)
H1 = datetime(2026, 1, 1, tzinfo=UTC)
HALF = 184 * 86400


def _findings(n: int, seed: int = 7) -> Iterator[Finding]:
    rnd = random.Random(seed)
    for i in range(n):
        rule = rnd.choices(RULES, WEIGHTS)[0]
        start = H2 if i % 5 else H1
        ts = start + timedelta(seconds=rnd.randrange(HALF if start == H2 else 181 * 86400))
        status = rnd.choices(["resolved", "open", "acknowledged", "waived"], [70, 15, 10, 5])[0]
        yield Finding.model_construct(
            finding_id=f"{rule.id}-{i:012x}",
            rule_id=rule.id,
            rule_name=rule.title,
            severity=rule.severity,
            status=status,
            timestamp=ts,
            detected_at=ts + timedelta(seconds=2),
            entity=rnd.choice(ENTITIES),
            user_id=f"u-{rnd.randrange(20_000):05d}",
            device_id=f"dev-{rnd.randrange(22_000):05d}",
            saas_app=rnd.choice(APPS),
            evidence_event_ids=[f"e-{i}"],
            summary=f"{rule.title}.",
            regulation=rule.regulation,
            waiver=None,
            details={},
        )


def _docs(f: Finding, rnd: random.Random) -> list[dict[str, Any]]:
    """The finding as the engine stored it (open or waived), and the lifecycle
    records that moved it since."""
    if f.status == "waived":
        f = f.model_copy(
            update={
                "waiver": WaiverRef(
                    id="WV-BENCH", approved_by="CISO", reason="bench", valid_until="2026-12-31"
                )
            }
        )
    doc = document(f.model_copy(update={"status": "open" if f.status != "waived" else "waived"}))
    out = [{"_index": index_for(f.timestamp, INDEX), "_id": f.finding_id, **doc}]
    took = int(rnd.expovariate(1 / 86400))
    if f.status in ("acknowledged", "resolved"):
        out.append(_record(f, 1, "acknowledge", "open", "acknowledged", took // 3))
    if f.status == "resolved":
        out.append(_record(f, 2, "resolve", "acknowledged", "resolved", took, took))
    return out


def _record(
    f: Finding, seq: int, verb: str, was: str, to: str, after: int, seconds: int | None = None
) -> dict[str, Any]:
    sw: dict[str, Any] = {
        "finding_id": f.finding_id,
        "finding_time": f.timestamp.isoformat(),
        "severity": f.severity,
        "seq": seq,
        "from_status": was,
        "to_status": to,
        "actor": {"username": "soc", "authentication_type": "unauthenticated"},
    }
    if seconds is not None:
        sw["resolve_seconds"] = seconds
    return {
        "_index": lifecycle_index(INDEX),
        "_id": f"{f.finding_id}.{seq}",
        "@timestamp": (f.detected_at + timedelta(seconds=after)).isoformat(),
        "event": {"action": verb, "kind": "event", "dataset": "sepwatch.lifecycle"},
        "rule": {"id": f.rule_id},
        "organization": {"name": f.entity},
        "sepwatch": sw,
    }


async def _load(n: int, workers: int = 4) -> float:
    """Bulk-load with `workers` concurrent async_bulk streams; returns docs/s."""
    from elasticsearch.helpers import async_bulk

    es = async_client(URL, request_timeout=120)
    rnd = random.Random(11)
    source = iter(_findings(n))
    lock = asyncio.Lock()

    async def actions() -> Any:
        while True:
            async with lock:
                batch = [
                    d for _, f in zip(range(2000), source, strict=False) for d in _docs(f, rnd)
                ]
            if not batch:
                return
            for a in batch:
                yield a

    began = time.perf_counter()
    try:
        await asyncio.gather(
            *(
                async_bulk(es, actions(), chunk_size=5000, max_retries=3, raise_on_error=True)
                for _ in range(workers)
            )
        )
    finally:
        await es.close()
    return n / (time.perf_counter() - began)


def _tally(es: Elasticsearch) -> None:
    """Internal accesses per entity, day and app: about 40 findings-free
    accesses for each finding, so the compliant share is realistic."""
    rnd = random.Random(5)
    counts: Counter[tuple[str, date, str]] = Counter()
    day = H1.date()
    while day < date(2027, 1, 1):
        for e in ENTITIES:
            for a in APPS:
                counts[(e, day, a)] = rnd.randint(100, 350)
        day += timedelta(days=1)
    store_counts(es, INDEX, counts)


def _node_cpu() -> float | None:
    """CPU seconds the local Elasticsearch node on PORT has used so far (None:
    not a process of this machine)."""
    for p in psutil.process_iter(["cmdline"]):
        cmdline = p.info["cmdline"] or []
        if f"http.port={PORT}" in cmdline and any(a.endswith("java") for a in cmdline[:1]):
            # The launcher's JVM hands its settings to the server's, its child.
            spent = 0.0
            for q in [p, *p.children(recursive=True)]:
                t = q.cpu_times()
                spent += t.user + t.system
            return spent
    return None


def _measure(cmd: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """Wall time, peak RSS (MB, the process and its children) and exit code;
    prints the CPU seconds the report and the node spent, and the machine's
    load, without which a wall time on a shared machine says little."""
    load = os.getloadavg()[0]
    node = _node_cpu()
    own = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT)
    peak = 0
    ps = psutil.Process(proc.pid)
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            try:
                rss = ps.memory_info().rss + sum(
                    c.memory_info().rss for c in ps.children(recursive=True)
                )
                peak = max(peak, rss)
            except psutil.Error:
                pass
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    code = proc.wait()
    elapsed = time.perf_counter() - began
    done.set()
    sampler.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - own.ru_utime - own.ru_stime
    node_after = _node_cpu()
    spent = f"{node_after - node:.1f} s" if node is not None and node_after is not None else "n/a"
    print(
        f"report CPU: {cpu:.1f} s in the report process, {spent} in the node; "
        f"load average {load:.1f} at start, {os.getloadavg()[0]:.1f} at end "
        f"({os.cpu_count()} CPUs)"
    )
    return elapsed, peak / 2**20, code


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--findings", type=int, default=1_000_000)
    ap.add_argument("--reload", action="store_true", help="Delete and load the findings again.")
    ap.add_argument("--workers", type=int, default=4, help="Parallel bulk streams.")
    ap.add_argument("--acks", type=int, default=200, help="Findings to acknowledge.")
    args = ap.parse_args()

    subprocess.run(
        [str(ES), "up"], check=True, env={**os.environ, "SEPWATCH_ES_PORT": PORT}, timeout=900
    )
    es = Elasticsearch(URL, request_timeout=120)
    have = int(es.count(index=INDEX)["count"]) if es.indices.exists_alias(name=INDEX) else 0
    if args.reload or have != args.findings:
        _load_afresh(es, args.findings, args.workers)
    began = time.perf_counter()
    total = int(es.count(index=INDEX)["count"])
    count_s = time.perf_counter() - began
    assert total == args.findings, f"{total:,} findings in {INDEX}, not {args.findings:,}"

    out = Path(tempfile.mkdtemp(prefix="sepwatch-bench-report-"))
    env = {**os.environ, "SEPWATCH_ES_URL": URL, "SEPWATCH_ES_INDEX": INDEX}
    report = [sys.executable, "-m", "cli.main", "report", "--period", "2026H2", "--no-reviews"]
    elapsed, peak_mb, code = _measure([*report, "--as-of", "2027-01-05", "--out", str(out)], env)
    assert code == 0, f"report exited {code}"
    pages = subprocess.run(
        ["pdfinfo", str(out / "report.pdf")], capture_output=True, text=True, check=False
    ).stdout
    print(f"findings in {INDEX}: {total:,}")
    print(f"single count query:  {count_s * 1000:8.1f} ms")
    print(
        f"report 2026H2:       {elapsed * 1000:8.1f} ms  (target < 30,000 ms), "
        f"peak RSS {peak_mb:,.0f} MB (target < 500 MB)"
    )
    print(
        "files: "
        + ", ".join(f"{p.name} {p.stat().st_size / 1024:,.0f} KiB" for p in sorted(out.iterdir()))
        + "; "
        + " ".join(line for line in pages.splitlines() if line.startswith("Pages"))
    )
    ack_ms, lookup_ms, copy_ms = _acks(es, args.acks)
    records = int(es.count(index=lifecycle_index(INDEX))["count"])
    print(f"lifecycle records:   {records:,}")
    print(f"single lookup by id: {statistics.median(lookup_ms):8.1f} ms median")
    print(
        f"findings ack:        {statistics.median(ack_ms):8.1f} ms median, "
        f"p95 {_p95(ack_ms):.1f} ms over {len(ack_ms)} acks (target < 200 ms); "
        f"{statistics.median(ack_ms) / statistics.median(lookup_ms):.1f}x the lookup"
    )
    if copy_ms:
        print(
            f"ack with topic copy: {statistics.median(copy_ms):8.1f} ms median, "
            f"p95 {_p95(copy_ms):.1f} ms over {len(copy_ms)} acks"
        )
    ok = elapsed < 30 and peak_mb < 500 and statistics.median(ack_ms) < 200
    print("PASS" if ok else "FAIL")
    es.close()
    raise SystemExit(0 if ok else 1)


def _load_afresh(es: Elasticsearch, findings: int, workers: int) -> None:
    """The findings indices emptied and loaded again, merged as a long-lived index is."""
    es.indices.delete(index=f"{INDEX}-*", ignore_unavailable=True, allow_no_indices=True)
    es.indices.delete(index=f"{INDEX}.accesses", ignore_unavailable=True)
    es.indices.delete(index=lifecycle_index(INDEX), ignore_unavailable=True)
    put_template(es, INDEX)
    rate = asyncio.run(_load(findings, workers))
    for name in (INDEX, lifecycle_index(INDEX)):
        es.indices.refresh(index=name)
        es.indices.forcemerge(index=name, max_num_segments=1, wait_for_completion=True)
    _tally(es)
    print(f"loaded {findings:,} findings at {rate:,.0f}/s ({workers} workers)")


def _p95(xs: list[float]) -> float:
    return sorted(xs)[int(0.95 * (len(xs) - 1))]


def _acks(es: Elasticsearch, n: int) -> tuple[list[float], list[float], list[float]]:
    """Acknowledge open findings one at a time, as `findings ack` does; beside
    each, one search by id (the least any command on a finding costs)."""
    resp = es.search(
        index=INDEX,
        query={"term": {"sepwatch.status": "open"}},
        # Stored open, most moved on by records since, and earlier runs' acks
        # among the first by id: enough candidates for a rerun too.
        size=min(100 * n, 10_000),
        source=False,
        sort=[{"sepwatch.finding_id": "asc"}],
    )
    have = latest(es, INDEX, [h["_id"] for h in resp["hits"]["hits"]])
    open_ids = [h["_id"] for h in resp["hits"]["hits"] if h["_id"] not in have]
    broker = os.environ.get("SEPWATCH_BENCH_BROKER")
    ack_ms: list[float] = []
    lookup_ms: list[float] = []
    copy_ms: list[float] = []
    settings = Settings(broker=broker or "localhost:9092", topic_prefix=f"bench-{os.getpid()}.")
    for k, fid in enumerate(open_ids[:n]):
        began = time.perf_counter()
        es.search(index=INDEX, query={"ids": {"values": [fid]}}, size=1)
        lookup_ms.append((time.perf_counter() - began) * 1000)
        began = time.perf_counter()
        record_id, stored = record(es, INDEX, fid, "acknowledge", at=datetime.now(UTC))
        ack_ms.append((time.perf_counter() - began) * 1000)
        if broker and k % 4 == 0:
            began = time.perf_counter()
            publish_lifecycle(settings, record_id, stored)
            copy_ms.append(ack_ms[-1] + (time.perf_counter() - began) * 1000)
    return ack_ms, lookup_ms, copy_ms


if __name__ == "__main__":
    main()
