"""Device identity benchmark: bytes of graph state per device with four
aliases each, and replay speed of the simulated multi-vendor day
(simulator/vendors.py, the identity tests' day: the graph learns and
resolves) beside the same events named alike, as a complete hand-written
mapping would name them (nothing to learn), alternated in one run, medians
and their ratio.

    python -m bench.identity              # 100,000 devices; 2,000 users, 12 h from midnight, 3 runs
    python -m bench.identity --devices 10000 --runs 5
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from adapters.mapping import DEFAULT_MAPPING, load_mapping
from bench.replay import POLICY, deep_size
from detectors.identity import IdentityGraph
from schemas.policy_file import load_policy
from simulator.vendors import lines, named_alike, simulated_vendor_day
from streams.replay import replay


def bytes_per_device(devices: int) -> float:
    store: dict[str, Any] = {}
    graph = IdentityGraph(store)
    for d in range(devices):
        entra = f"3f9c1a52-7d4e-4b8a-9c61-{d:012d}"
        aliases = [
            ("entra_device_id", entra),
            ("intune_device_id", f"1c2d3e4f-aaaa-4bbb-8ccc-{d:012d}"),
            ("serial", f"PF3X{d:08d}"),
            ("hostname", f"HQ-PC-{d:06d}"),
        ]
        graph.learn(entra, aliases, 1.8e9 + d, "intune")
    return deep_size(store) / devices


def vendor_day(users: int, hours: float) -> tuple[list[bytes], list[bytes]]:
    """The simulated multi-vendor day the identity tests use
    (simulator/vendors.py): as the products name devices, through the
    adapters (the graph learns and resolves), and the same events named alike
    (nothing to learn or resolve)."""
    policy = load_policy(POLICY)
    start = datetime(2026, 11, 23, tzinfo=ZoneInfo("Asia/Seoul"))
    d = simulated_vendor_day(
        policy,
        load_mapping(DEFAULT_MAPPING),
        start,
        users=users,
        devices=users + users // 10,
        hours=hours,
        violation_rate=0.02,
        seed=1,
    )
    return lines(d.adapted), lines(named_alike(d))


def events_per_s(lines: list[bytes]) -> tuple[float, float]:
    """Events a second of wall-clock time, and of this process's CPU time:
    replay is one thread, and on a machine shared with other work the CPU
    time is the steadier measure of what the code costs."""
    policy = load_policy(POLICY)
    wall, cpu = time.perf_counter(), time.process_time()
    replay(policy, lines, io.StringIO(), io.StringIO())
    return len(lines) / (time.perf_counter() - wall), len(lines) / (time.process_time() - cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--hours", type=float, default=12)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    per_device = bytes_per_device(args.devices)
    print(
        f"identity graph: {per_device:,.0f} bytes per device with 4 aliases "
        f"({args.devices:,} devices, {per_device * args.devices / 2**20:,.1f} MiB)"
    )
    with_aliases, without = vendor_day(args.users, args.hours)
    learned, plain = [], []
    for _ in range(args.runs):
        plain.append(events_per_s(without))
        learned.append(events_per_s(with_aliases))
    print(f"replay, {len(without):,} events of the multi-vendor day, medians of {args.runs}:")
    for i, clock in enumerate(("wall-clock", "CPU")):
        a = statistics.median(r[i] for r in learned)
        b = statistics.median(r[i] for r in plain)
        print(
            f"  {clock}: named as the vendors do (learned, resolved) {a:,.0f} events/s, "
            f"named alike {b:,.0f} events/s, ratio {a / b:.2f}"
        )


if __name__ == "__main__":
    main()
