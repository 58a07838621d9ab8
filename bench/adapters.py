"""Adapter benchmark: raw records/s of each vendor adapter on one core,
beside plain `json.loads` of the same records (target: each adapter at
least a third of plain parsing).

    python -m bench.adapters                 # 20,000 records a source, best of 5
    python -m bench.adapters --records 50000 --runs 7

The records are the vendor-shaped test fixtures (tests/fixtures/vendors),
cycled; an adapter's figure is parsing plus adapting (json.loads and the
adapter function), so the ratio is what adapting costs over reading. CEF
lines are text: their baseline is json.loads of the same record written as
a JSON object (its header fields and extension keys), which is what a
product with a JSON output would send. The process is pinned to one core
where the OS allows.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from streams.adapters import ADAPTERS
from streams.adapters.cef_dlp import parse_cef
from streams.adapters.intake import adapt_one, read_raw
from streams.adapters.mapping import VendorMapping, load_mapping
from streams.adapters.records import Unmappable
from streams.policy_file import load_policy

ROOT = Path(__file__).resolve().parent.parent
VENDORS = ROOT / "tests" / "fixtures" / "vendors"
FIXTURES = {
    "okta": ["okta-logs-page.json", "day/okta.json"],
    "m365": ["m365-content-blob.json", "day/m365.json"],
    "entra-signin": ["entra-signins-graph-page.json", "entra-signins-eventhub.json"],
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
    "entra-device": ["entra-devices-page.json", "entra-device-get.json"],
    "jamf": ["jamf-computers-inventory.json", "jamf-inventory-elastic.json"],
    "google-workspace-devices": ["google-device-page.json", "google-device-activities.log"],
    "google-workspace-rules": ["google-rules-activities.log", "google-rules-page.json"],
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


def rate(run: Callable[[], object], n: int, runs: int) -> float:
    """Records/s, best of `runs` (the least disturbed run)."""
    best = float("inf")
    for _ in range(runs):
        began = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - began)
    return n / best


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

    return rate(baseline, count, runs), rate(adapted, count, runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000, help="records a source")
    parser.add_argument("--runs", type=int, default=5, help="runs of each, best kept")
    parser.add_argument("--source", action="append", help="only this source (repeatable)")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    mapping = load_mapping(
        ROOT / "deploy" / "policy" / "vendor-mapping.yaml",
        load_policy(ROOT / "deploy" / "policy" / "example.yaml"),
    )
    print(f"{'source':<18}{'json.loads/s':>14}{'adapter/s':>12}{'ratio':>8}  target >= 0.33")
    worst = 1.0
    for source in args.source or list(ADAPTERS):
        plain, adapted = measure(source, mapping, args.records, args.runs)
        worst = min(worst, adapted / plain)
        print(f"{source:<18}{plain:>14,.0f}{adapted:>12,.0f}{adapted / plain:>8.2f}")
    print(f"lowest ratio {worst:.2f}: {'met' if worst >= 1 / 3 else 'NOT met'}")


if __name__ == "__main__":
    main()
