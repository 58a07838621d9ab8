"""Device identity benchmark: bytes of graph state per device with four
aliases each, and replay speed of a two-vendor day with the aliases (the
graph learns and resolves) beside the same day named alike (nothing to learn),
alternated in one run, medians and their ratio.

    python -m bench.identity                         # 100,000 devices; a 6-hour day, 3 runs
    python -m bench.identity --devices 10000 --runs 5
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import time
from datetime import UTC, datetime
from typing import Any

from bench.replay import POLICY, deep_size
from detectors.identity import IdentityGraph
from streams.policy_file import load_policy
from streams.replay import replay
from streams.simulate import simulate


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


def two_vendor_day(users: int, hours: float) -> tuple[list[bytes], list[bytes]]:
    """The simulated day with each posture as Intune and Falcon give it: named
    each its own way with aliases, and named alike without them."""
    start = datetime(2026, 11, 23, tzinfo=UTC)
    events = simulate(
        load_policy(POLICY),
        users=users,
        devices=users + users // 10,
        hours=hours,
        violation_rate=0.02,
        seed=1,
        start=start,
    )
    with_aliases, without = [], []
    for e in events:
        if e["stream"] != "device_posture":
            line = json.dumps(e).encode() + b"\n"
            with_aliases.append(line)
            without.append(line)
            continue
        d = e["device_id"]
        shared = [
            {"kind": "serial", "value": f"sn-{d}"},
            {"kind": "hostname", "value": f"host-{d}"},
        ]
        intune = {
            **e,
            "event_id": e["event_id"] + ":i",
            "edr_running": None,
            "os_patch_age_days": None,
            "device_aliases": [{"kind": "entra_device_id", "value": d}, *shared],
        }
        falcon = {
            **e,
            "event_id": e["event_id"] + ":f",
            "device_id": f"aid-{d}",
            "managed": None,
            "disk_encrypted": None,
            "screen_lock": None,
            "jailbroken": None,
            "device_aliases": [{"kind": "falcon_aid", "value": f"aid-{d}"}, *shared],
        }
        for p in (intune, falcon):
            with_aliases.append(json.dumps(p).encode() + b"\n")
            # Named alike already (as a hand-written mapping would): the same
            # judgments, with nothing to learn or resolve.
            alike = {k: v for k, v in p.items() if k != "device_aliases"} | {"device_id": d}
            without.append(json.dumps(alike).encode() + b"\n")
    return with_aliases, without


def events_per_s(lines: list[bytes]) -> float:
    policy = load_policy(POLICY)
    started = time.perf_counter()
    replay(policy, lines, io.StringIO(), io.StringIO())
    return len(lines) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--hours", type=float, default=6)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    per_device = bytes_per_device(args.devices)
    print(
        f"identity graph: {per_device:,.0f} bytes per device with 4 aliases "
        f"({args.devices:,} devices, {per_device * args.devices / 2**20:,.1f} MiB)"
    )
    with_aliases, without = two_vendor_day(args.users, args.hours)
    learned, plain = [], []
    for _ in range(args.runs):
        plain.append(events_per_s(without))
        learned.append(events_per_s(with_aliases))
    a, b = statistics.median(learned), statistics.median(plain)
    print(
        f"replay, {len(without):,} events: with aliases {a:,.0f} events/s, "
        f"without {b:,.0f} events/s, ratio {a / b:.2f}"
    )


if __name__ == "__main__":
    main()
