"""The cost of exactly once (issue 19): one worker's events/s with
SEPWATCH_PROCESSING_GUARANTEE=exactly_once beside the same worker at least
once, on the same produced day, the two alternated in one run, and a Faust
agent that only reads the same input topics (bench/faust_floor.py).

    python -m bench.exactly_once                  # 100,000 events, 3 runs
    SEPWATCH_BENCH_KAFKA_PORT=30192 python -m bench.exactly_once --runs 2

It starts its own broker with deploy/local/kafka.sh on
SEPWATCH_BENCH_KAFKA_PORT (default 19192; one already running there is used
and left running). Each worker's committed findings are counted read
committed: the two guarantees must find the same, each once.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time
from collections import Counter
from pathlib import Path

from bench import stream
from streams.kafka_io import ensure_topics, produce, read_topics
from streams.topics import Topics

GUARANTEES = ("at_least_once", "exactly_once")


def committed_findings(topic: str) -> tuple[int, int]:
    """Records on the findings topic read committed, and distinct ids among them."""
    records = read_topics(stream.BROKER, [topic], timeout_s=120)
    ids = Counter(json.loads(r.value)["finding_id"] for r in records)
    return sum(ids.values()), len(ids)


def one_worker(guarantee: str, lines: list[bytes], workdir: Path, run: int) -> tuple[float, Topics]:
    """events/s of one worker draining the day, on topics of its own."""
    os.environ["SEPWATCH_PROCESSING_GUARANTEE"] = guarantee  # the worker inherits it
    topics = Topics(f"eos{run}-{guarantee[:3]}-{int(time.time())}.")
    ensure_topics(stream.BROKER, topics, 4, retention_ms=3_600_000)
    produce(lines, stream.BROKER, topics, end_of_input=True, marker_key=stream.MARKER_KEY)
    proc = stream.start_worker(topics.prefix, workdir / f"worker-{run}-{guarantee}.log")
    began = time.perf_counter()
    try:
        if not stream.rules_drained(topics, deadline_s=3600):
            raise SystemExit(f"{guarantee}: not drained in an hour")
        rate = len(lines) / (time.perf_counter() - began)
    finally:
        stream.stop(proc)
    records, distinct = committed_findings(topics.findings)
    print(
        f"  run {run + 1} {guarantee}: {rate:,.0f} events/s; {records:,} findings committed, "
        f"{distinct:,} distinct; load {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    return rate, topics


def compare(n: int, runs: int, workdir: Path) -> None:
    lines = stream.events(n, stream.PERIOD_START, seed=21)
    rates: dict[str, list[float]] = {g: [] for g in GUARANTEES}
    floors: list[float] = []
    for run in range(runs):
        order = GUARANTEES if run % 2 == 0 else GUARANTEES[::-1]
        for guarantee in order:
            rate, topics = one_worker(guarantee, lines, workdir, run)
            rates[guarantee].append(rate)
        floors.append(stream.faust_floor(topics.inputs, n))  # the last worker's inputs
        print(f"  run {run + 1} Faust agent that only reads: {floors[-1]:,.0f} events/s")
    alo, eos = rates["at_least_once"], rates["exactly_once"]
    per_run = [e / a for e, a in zip(eos, alo, strict=True)]
    per_floor = [e / f for e, f in zip(eos, floors, strict=True)]
    print(f"exactly once, one worker, 4 partitions, {n:,} events, {runs} runs:")
    print(
        f"  exactly once / at least once: {statistics.median(per_run):.2f}x (runs: "
        f"{', '.join(f'{r:.2f}' for r in per_run)}; target >= 0.75x)"
    )
    print(
        f"  exactly once / Faust read-only agent: {statistics.median(per_floor):.2f}x (runs: "
        f"{', '.join(f'{r:.2f}' for r in per_floor)}; target >= 1.2x)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    workdir = stream.ROOT / "out" / "bench-exactly-once"
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "SEPWATCH_KAFKA_PORT": stream.PORT}
    ours = subprocess.run([str(stream.KAFKA), "status"], env=env, capture_output=True).returncode
    subprocess.run([str(stream.KAFKA), "up"], check=True, env=env)
    try:
        print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
        compare(args.events, args.runs, workdir)
    finally:
        if ours:
            subprocess.run([str(stream.KAFKA), "down"], check=False, env=env)


if __name__ == "__main__":
    main()
