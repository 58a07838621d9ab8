"""Replay benchmark: events/s, peak RSS and bytes of state per tracked device,
beside plain `json.loads` of the same file measured in the same run.

    python -m bench.replay                      # 1M events, 50k devices, 40k users
    python -m bench.replay --events 200000 --runs 3
    python -m bench.replay --events 200000 --runs 7 --pseudonyms

Each measured run is its own process (so peak RSS is that run's alone), the
baseline and the replay alternate, and the medians are printed with their
ratio. The events come from `sepwatch simulate` and are cached.

--pseudonyms: the cost of pseudonymisation instead. Replay as it runs, and
replay admitting every event as it came (the baseline), alternate, each run
its own process; the CPU seconds of replay() are compared pair by pair.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

POLICY = Path(__file__).resolve().parent.parent / "deploy" / "policy" / "example.yaml"
CACHE = Path(os.environ.get("SEPWATCH_CACHE_DIR", Path.home() / ".cache" / "sepwatch")) / "bench"


def deep_size(obj: Any, seen: set[int] | None = None) -> int:
    """Bytes held by a structure of dicts, lists, tuples and scalars."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    size = sys.getsizeof(obj)
    if isinstance(obj, dict):
        size += sum(deep_size(k, seen) + deep_size(v, seen) for k, v in obj.items())
    elif isinstance(obj, list | tuple | set | frozenset):
        size += sum(deep_size(v, seen) for v in obj)
    return size


def events_file(n: int, users: int, devices: int, hours: float, seed: int) -> Path:
    from schemas.policy_file import load_policy
    from simulator.day import simulate

    path = CACHE / f"events-{n}-{users}u-{devices}d-{hours}h-s{seed}.jsonl"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    tmp = path.with_suffix(".tmp")
    start = datetime(2026, 11, 23, tzinfo=ZoneInfo("Asia/Seoul"))
    with tmp.open("w", encoding="utf-8") as out:
        stream = simulate(
            load_policy(POLICY),
            users=users,
            devices=devices,
            hours=hours,
            violation_rate=0.02,
            seed=seed,
            start=start,
        )
        for event in itertools.islice(stream, n):
            out.write(json.dumps(event, ensure_ascii=False) + "\n")
    tmp.rename(path)
    print(f"generated {path} in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return path


def phase_json(path: Path) -> dict[str, Any]:
    started = time.perf_counter()
    n = 0
    with path.open("rb") as f:
        for line in f:
            json.loads(line)
            n += 1
    return {"seconds": time.perf_counter() - started, "events": n}


def phase_replay(path: Path, pseudonyms: bool = True) -> dict[str, Any]:
    from detectors import Engine
    from detectors.pseudonyms import Pseudonymiser
    from schemas import EventAdapter
    from schemas.policy_file import load_policy
    from streams.replay import replay, utc_now

    class AsItCame(Pseudonymiser):
        """The baseline of --pseudonyms: every event parsed by the contract's
        validator and admitted as it came (and without building the
        pseudonymiser's own validator)."""

        def __init__(self, key: bytes) -> None:
            self.key = key
            self.parse_clean = EventAdapter.validator.validate_json

        def validate_json(self, raw: bytes) -> tuple[Any, bool]:
            return EventAdapter.validator.validate_json(raw), True

        def event(self, event: Any) -> tuple[Any, tuple[str, ...]]:
            return event, ()

    policy = load_policy(POLICY)
    engine = Engine(policy, now=utc_now)
    key = b"bench.replay: a key of 32 bytes."
    started, cpu = time.perf_counter(), time.process_time()
    with path.open("rb") as f, open(os.devnull, "w") as out, open(os.devnull, "w") as dead:
        summary = replay(
            policy,
            f,
            out,
            dead,
            engine=engine,
            pseudonyms=Pseudonymiser(key) if pseudonyms else AsItCame(key),
        )
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    state = engine.state
    stores = {name: deep_size(store) for name, store in vars(state).items()}
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "pseudonymised": sum(summary.pseudonymised.values()),
        "events": summary.events,
        "findings": summary.findings,
        "devices": len(state.postures),
        "state_bytes": stores,
    }


def run_phase(phase: str, path: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.replay", "--phase", phase, str(path)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(proc.stdout)


def flat_memory(devices: int, users: int, days: int) -> list[tuple[float, int]]:
    """State size sampled along a long history at a fixed fleet size."""
    from detectors import Engine
    from schemas import EventAdapter
    from schemas.policy_file import load_policy
    from simulator.day import simulate

    policy = load_policy(POLICY)
    engine = Engine(policy, now=lambda: datetime(2030, 1, 1, tzinfo=ZoneInfo("UTC")))
    # The whole history in the past: no event stamped ahead of the wall clock.
    today = datetime.now(ZoneInfo("Asia/Seoul")).replace(hour=0, minute=0, second=0, microsecond=0)
    start = today - timedelta(days=days + 1)
    samples = []
    for n, event in enumerate(
        simulate(
            policy,
            users=users,
            devices=devices,
            hours=24 * days,
            violation_rate=0.02,
            seed=5,
            start=start,
        )
    ):
        engine.process(EventAdapter.validate_python(event))
        if n % 20000 == 0:
            samples.append((n, deep_size(vars(engine.state))))
    return samples


PHASES = {
    "json": phase_json,
    "replay": phase_replay,
    "replay-as-it-came": lambda path: phase_replay(path, pseudonyms=False),
}


def pseudonym_cost(path: Path, runs: int) -> None:
    """Replay with and without pseudonymisation, alternately, each run its own
    process; the ratio of their CPU seconds, pair by pair."""
    base, rep = [], []
    for _ in range(runs):
        base.append(run_phase("replay-as-it-came", path))
        rep.append(run_phase("replay", path))
    ratios = sorted(r["cpu_seconds"] / b["cpu_seconds"] for r, b in zip(rep, base, strict=True))
    n = rep[0]["events"]
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}; file {path.name}")
    print(
        f"events: {n:,}; findings: {rep[0]['findings']:,} (as it came: {base[0]['findings']:,}); "
        f"identifiers pseudonymised: {rep[0]['pseudonymised']:,}; runs: {runs} (medians)"
    )
    print(f"{'':32}{'CPU s':>8}{'wall s':>8}{'events/s (CPU)':>16}")
    medians = []
    for name, rs in (("replay, events as they came", base), ("replay, pseudonymised", rep)):
        cpu = statistics.median(r["cpu_seconds"] for r in rs)
        wall = statistics.median(r["seconds"] for r in rs)
        medians.append(cpu)
        print(f"{name:32}{cpu:>8.2f}{wall:>8.2f}{n / cpu:>16,.0f}")
    print(
        f"pseudonymised / as they came (CPU): pair by pair median {statistics.median(ratios):.3f}x "
        f"(range {ratios[0]:.3f}-{ratios[-1]:.3f}); of the medians {medians[1] / medians[0]:.3f}x"
    )


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--users", type=int, default=40_000)
    ap.add_argument("--devices", type=int, default=50_000)
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--flat-days", type=int, default=6)
    ap.add_argument(
        "--pseudonyms",
        action="store_true",
        help="measure pseudonymisation: replay beside replay without it (CPU seconds)",
    )
    ap.add_argument("--phase", choices=list(PHASES), help=argparse.SUPPRESS)
    ap.add_argument("path", nargs="?", help=argparse.SUPPRESS)
    return ap


def main() -> None:
    args = _parser().parse_args()

    if args.phase:
        result = PHASES[args.phase](Path(args.path))
        result["max_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print(json.dumps(result))
        return

    path = events_file(args.events, args.users, args.devices, args.hours, args.seed)
    if args.pseudonyms:
        pseudonym_cost(path, args.runs)
        return
    base, rep = [], []
    for _ in range(args.runs):
        base.append(run_phase("json", path))
        rep.append(run_phase("replay", path))
    n = rep[0]["events"]
    b_s = statistics.median(r["seconds"] for r in base)
    r_s = statistics.median(r["seconds"] for r in rep)
    ratios = sorted(r["seconds"] / b["seconds"] for r, b in zip(rep, base, strict=True))
    state = rep[0]["state_bytes"]
    devices = rep[0]["devices"]
    rss = statistics.median(r["max_rss_bytes"] for r in rep)
    base_rss = statistics.median(r["max_rss_bytes"] for r in base)
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}; file {path.name}")
    print(f"events: {n:,}; findings: {rep[0]['findings']:,}; runs: {args.runs} (medians)")
    print(f"{'':24}{'seconds':>10}{'events/s':>12}{'peak RSS MiB':>14}")
    print(f"{'json.loads baseline':24}{b_s:>10.2f}{n / b_s:>12,.0f}{base_rss / 2**20:>14.0f}")
    print(f"{'sepwatch replay':24}{r_s:>10.2f}{n / r_s:>12,.0f}{rss / 2**20:>14.0f}")
    print(
        f"replay / json.loads: median {statistics.median(ratios):.2f}x "
        f"(range {ratios[0]:.2f}-{ratios[-1]:.2f})"
    )
    total = sum(state.values())
    print(
        f"state at end: {total / 2**20:.1f} MiB for {devices:,} devices = "
        f"{total / max(devices, 1):.0f} B per tracked device "
        f"(postures alone {state['postures'] / max(devices, 1):.0f} B); by store: "
        + ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in state.items())
    )
    if args.flat_days:
        samples = flat_memory(devices=2000, users=1600, days=args.flat_days)
        quarter = len(samples) // 4
        print(
            f"flat memory, 2,000 devices over {args.flat_days} days of history: state bytes "
            + " -> ".join(f"{s / 1024:.0f} KiB@{n:,}ev" for n, s in samples[quarter::quarter])
        )


if __name__ == "__main__":
    main()
