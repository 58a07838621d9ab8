"""Adapter benchmark: raw records/s of each vendor adapter on one core,
beside plain `json.loads` of the same records (target: each adapter at
least a third of plain parsing), in records per CPU second.

    python -m bench.adapters                 # 20,000 records a source, best of 5
    python -m bench.adapters --records 50000 --runs 7
    python -m bench.adapters --corpus tests/fixtures/vendors   # what each file maps to

The records are the vendor-shaped test fixtures (tests/fixtures/vendors),
cycled; an adapter's figure is parsing plus adapting (json.loads and the
adapter function), so the ratio is what adapting costs over reading. CEF
lines are text: their baseline is json.loads of the same record written as
a JSON object (its header fields and extension keys), which is what a
product with a JSON output would send. The process is pinned to one core
where the OS allows.

With `--corpus DIR`, no timing: every vendor file under DIR (named after
its source, `<source>-*.json` or `<vendor>-*.log`, or `<source>.jsonl` in a
folder) goes through its adapter as `sepwatch adapt` runs it, and a line a
file says what it gave: records, events by stream, skips by vendor type,
dead letters by reason.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from adapters import ADAPTERS
from adapters.cef_dlp import parse_cef
from adapters.intake import AdaptCounts, adapt_one, adapt_records, read_raw
from adapters.mapping import VendorMapping, load_mapping
from adapters.records import Unmappable
from schemas.policy_file import load_policy

ROOT = Path(__file__).resolve().parent.parent
VENDORS = ROOT / "tests" / "fixtures" / "vendors"
FIXTURES = {
    "okta": ["okta-logs-page.json", "day/okta.json"],
    "m365": ["m365-content-blob.json", "day/m365.json"],
    "entra-signin": ["entra-signin-graph-page.json", "entra-signin-eventhub.json"],
    "google-workspace": ["google-workspace-activities.json"],
    "netskope": ["netskope-events.jsonl", "day/netskope.jsonl"],
    "zscaler-zia": ["zscaler-nss-web.jsonl"],
    "intune": [
        "intune-managed-devices.json",
        "day/intune.json",
        "intune-diagnostic-devices.json",
    ],
    "osquery": ["osquery-results.log", "day/osquery.log"],
    "crowdstrike": ["crowdstrike-zta.json", "crowdstrike-hosts.jsonl"],
    "cef-dlp": ["cef-dlp.log"],
    "entra-device": ["entra-device-list-page.json", "entra-device-get.json"],
    "jamf": ["jamf-computers-inventory.json", "jamf-inventory-elastic.json"],
    "google-workspace-devices": [
        "google-workspace-devices-page.json",
        "google-workspace-devices-activities.log",
    ],
    "google-workspace-rules": [
        "google-workspace-rules-activities.log",
        "google-workspace-rules-page.json",
    ],
    "symantec-dlp": ["symantec-dlp-incidents.jsonl", "symantec-dlp-static-attributes.jsonl"],
    "slack": ["slack-audit.log", "slack-audit-page.json"],
    "purview-endpoint": ["purview-endpoint-dlp.jsonl", "purview-aip-discover.json"],
}


def records_of(source: str, count: int) -> list[bytes]:
    """`count` raw records of a source, one a line, as they arrive on its raw topic."""
    adapter = ADAPTERS[source]
    one = []
    for name in FIXTURES[source]:
        with (VENDORS / name).open("rb") as f:
            one += [r.raw for r in read_raw(f, adapter, name)]
    return list(itertools.islice(itertools.cycle(one), count))


def _as_object(line: str) -> dict[str, str]:
    try:
        header, extension = parse_cef(line)
    except Unmappable:
        return {"message": line}
    names = ("version", "vendor", "product", "product_version", "signature", "name", "severity")
    return {**dict(zip(names, header, strict=True)), **extension}


def rates(
    baseline: Callable[[], object], adapted: Callable[[], object], n: int, runs: int
) -> tuple[float, float]:
    """Records per CPU second of each, best of `runs` (the least disturbed
    run). CPU time, not wall time, so time spent waiting for the core on a
    shared machine is not counted; the two alternate, so what load remains
    (caches, frequency) weighs on both alike."""
    best = [float("inf"), float("inf")]
    for _ in range(runs):
        for i, run in enumerate((baseline, adapted)):
            began = time.process_time()
            run()
            best[i] = min(best[i], time.process_time() - began)
    return n / best[0], n / best[1]


def measure(source: str, mapping: VendorMapping, count: int, runs: int) -> tuple[float, float]:
    adapter = ADAPTERS[source]
    lines = records_of(source, count)
    loads = json.loads
    adapt = adapter.adapt

    if adapter.text:
        as_json = [json.dumps(_as_object(line.decode())).encode() for line in lines]
        texts = [line.decode() for line in lines]

        def baseline() -> None:
            for line in as_json:
                loads(line)

        def adapted() -> None:
            for text in texts:
                try:  # noqa: SIM105 (suppress() would cost more than some adapters)
                    adapt(text, mapping)
                except Unmappable:
                    pass

    else:

        def baseline() -> None:
            for line in lines:
                loads(line)

        def adapted() -> None:
            for line in lines:
                try:  # noqa: SIM105 (suppress() would cost more than some adapters)
                    adapt_one(adapter, loads(line), mapping)
                except Unmappable:
                    pass

    return rates(baseline, adapted, count, runs)


CORPUS_SUFFIXES = (".json", ".jsonl", ".log", ".ndjson")


def source_of_file(path: Path) -> str | None:
    """The source a corpus file holds, by its name: the longest source id it
    starts with (`okta-logs-page.json`, `day/okta.json`), else the vendor word
    of the one source it names (`zscaler-nss-web.jsonl`: zscaler-zia)."""
    name = path.name.lower()

    def starts(prefix: str) -> bool:
        return name.startswith(prefix) and name[len(prefix) : len(prefix) + 1] in ("-", ".", "_")

    sources = sorted((s for s in ADAPTERS if starts(s)), key=len)
    if sources:
        return sources[-1]
    by_vendor = [s for s in ADAPTERS if starts(s.split("-")[0])]
    return by_vendor[0] if len(by_vendor) == 1 else None


@dataclass
class FileReport:
    path: Path
    source: str | None
    counts: AdaptCounts


def corpus(root: Path, mapping: VendorMapping) -> list[FileReport]:
    """Every vendor file under `root` through its adapter, as `sepwatch adapt` does."""
    reports = []
    for path in sorted(p for p in root.rglob("*") if p.suffix in CORPUS_SUFFIXES):
        source = source_of_file(path)
        counts = AdaptCounts()
        if source is not None:
            adapter = ADAPTERS[source]
            with path.open("rb") as f:
                records = read_raw(f, adapter, str(path.relative_to(root)))
                for _ in adapt_records(
                    adapter, records, mapping, counts, io.StringIO(), validate=True
                ):
                    pass
        reports.append(FileReport(path.relative_to(root), source, counts))
    return reports


def print_corpus(reports: list[FileReport]) -> None:
    for r in reports:
        c = r.counts
        print(f"{r.path!s:<44} {r.source or '(no source: name it <source>-...)'}")
        if r.source is None:
            continue
        events = ", ".join(f"{k} {v}" for k, v in sorted(c.events.items())) or "none"
        print(f"    records {c.records}   events: {events}")
        for kind, n in c.skipped.most_common():
            print(f"    skipped {n:>4}  {kind}")
        for reason, n in c.dead_reasons.most_common():
            print(f"    dead    {n:>4}  {reason}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000, help="records a source")
    parser.add_argument("--runs", type=int, default=5, help="runs of each, best kept")
    parser.add_argument("--source", action="append", help="only this source (repeatable)")
    parser.add_argument(
        "--corpus", type=Path, help="no timing: what each vendor file under DIR maps to"
    )
    args = parser.parse_args()
    mapping = load_mapping(
        ROOT / "deploy" / "policy" / "vendor-mapping.yaml",
        load_policy(ROOT / "deploy" / "policy" / "example.yaml"),
    )
    if args.corpus is not None:
        print_corpus(corpus(args.corpus, mapping))
        return
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    print(f"{'source':<18}{'json.loads/s':>14}{'adapter/s':>12}{'ratio':>8}  target >= 0.33")
    worst = 1.0
    for source in args.source or list(ADAPTERS):
        plain, adapted = measure(source, mapping, args.records, args.runs)
        worst = min(worst, adapted / plain)
        print(f"{source:<18}{plain:>14,.0f}{adapted:>12,.0f}{adapted / plain:>8.2f}")
    print(f"lowest ratio {worst:.2f}: {'met' if worst >= 1 / 3 else 'NOT met'}")


if __name__ == "__main__":
    main()
