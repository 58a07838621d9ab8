"""The fault run (issue 19): a simulated day streamed through two workers
while the cluster and the workers fail, then the findings on Kafka compared
with replay's for the same file.

    SEPWATCH_KAFKA_PORT=29092 deploy/local/kafka.sh up --brokers 3
    python -m bench.faults --broker 127.0.0.1:29092,127.0.0.1:29094,127.0.0.1:29096 \\
        --victim-port 29094 --events 200000 --runs 5 --guarantee exactly_once

During each run, in this order, while the day is being produced:
  1. the broker on --victim-port is SIGKILLed and restarted (deploy/local/kafka.sh up
     --brokers N, N and the first broker's port read from --broker, the data kept);
  2. a worker is SIGKILLed;
  3. a worker is SIGSTOPped past its session and SIGCONTed (a zombie);
  4. the findings topic refuses every write for 30 s (max.message.bytes below a finding);
  5. throughout, the stages raise on one chosen posture (SEPWATCH_TEST_FAULT_EVENT_ID).
A worker that exits (killed, or stopped because a write was not delivered) is
started again, as a service manager would. The workers run with
SEPWATCH_PROCESSING_GUARANTEE set to --guarantee. The findings are read from
Kafka as their consumers read them, committed records only (read_committed).
The run passes when those are, by id, replay's for the file without the
chosen posture (0 lost, 0 extra), the chosen posture is in the dead letters
with its reason, and, under exactly_once, no id is there twice. Under
at_least_once duplicates are counted and shown, not failed: a record judged
again is written again.

The brokers are not started here: start them (deploy/local/kafka.sh up, on
ports that disturb nobody) and stop them after.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from pydantic import SecretStr

from bench.stream import unread
from detectors.masking import mask_text
from schemas.policy_file import load_policy
from simulator.day import simulate
from streams.kafka_io import (
    admin,
    ensure_topics,
    paced,
    produce,
    read_dead_letters,
    read_topics,
    set_topic_configs,
)
from streams.replay import replay
from streams.topics import STAGES, Topics

# The workers honour the end-of-input marker this run signs
# (docs/architecture.md, "Streaming on Kafka").
MARKER_KEY = SecretStr(secrets.token_hex(16))

ROOT = Path(__file__).resolve().parent.parent
KAFKA = ROOT / "deploy" / "local" / "kafka.sh"
POLICY = ROOT / "deploy" / "policy" / "example.yaml"
PARTITIONS = 4
SESSION_S = 6.0  # the workers' session: the zombie is stopped well past it
REFUSE_S = 30.0
REFUSING = 200  # max.message.bytes below any finding's size
FAULTS = {"broker", "kill", "zombie", "refuse"}  # the stage raising on one posture is always on
GUARANTEES = ("exactly_once", "at_least_once")


def day(n: int, seed: int) -> list[bytes]:
    """About `n` events of a simulated day, all in the past."""
    users = max(20, n // 8)  # the simulation gives a user ~9 events a day
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=30)
    lines = [
        json.dumps(e, ensure_ascii=False).encode()
        for e in simulate(
            load_policy(POLICY),
            users=users,
            devices=users + users // 10,
            hours=24,
            violation_rate=0.05,
            seed=seed,
            start=start,
        )
    ]
    return lines[:n]


def replayed(lines: list[bytes]) -> dict[str, dict[str, Any]]:
    """Replay's findings by id."""
    out = io.StringIO()
    replay(load_policy(POLICY), lines, out, io.StringIO())
    return {f["finding_id"]: f for f in map(json.loads, out.getvalue().splitlines())}


class Workers:
    """Two `sepwatch worker` processes, each started again when it exits."""

    def __init__(
        self, broker: str, prefix: str, workdir: Path, poison: str, guarantee: str
    ) -> None:
        self.env = {
            **os.environ,
            "SEPWATCH_BROKER": broker,
            "SEPWATCH_PROCESSING_GUARANTEE": guarantee,
            "SEPWATCH_TOPIC_PREFIX": prefix,
            "SEPWATCH_ES_URL": "",
            "SEPWATCH_KAFKA_SESSION_TIMEOUT_S": str(SESSION_S),
            "SEPWATCH_TEST_FAULT_EVENT_ID": poison,
            "SEPWATCH_END_OF_INPUT_KEY": MARKER_KEY.get_secret_value(),
            "PYTHONUNBUFFERED": "1",
        }
        self.workdir = workdir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.restarts = 0
        self.stopped: set[str] = set()  # SIGSTOPped on purpose: not dead
        self.done = threading.Event()
        for name in ("a", "b"):
            self.start(name)
        self.watch = threading.Thread(target=self._supervise, daemon=True)
        self.watch.start()

    def start(self, name: str) -> None:
        log = (self.workdir / f"worker-{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cli.main",
                "worker",
                "--policy",
                str(POLICY),
                "--state-dir",
                str(self.workdir / f"state-{name}"),
                "--web-port",
                "0",
                "--loglevel",
                "info",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=ROOT,
        )

    def _supervise(self) -> None:
        while not self.done.wait(1.0):
            for name, proc in list(self.procs.items()):
                if proc.poll() is not None:
                    self.restarts += 1
                    self.start(name)

    def signal(self, name: str, sig: int) -> None:
        self.procs[name].send_signal(sig)

    def stop(self) -> None:
        self.done.set()
        self.watch.join()
        for proc in self.procs.values():
            proc.send_signal(signal.SIGCONT)
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def refuse_findings(broker: str, topic: str, limit: int | None) -> None:
    client = admin(broker)
    try:
        value = str(limit) if limit else "1048588"
        set_topic_configs(client, {topic: {"max.message.bytes": value}})
    finally:
        client.close()


@dataclass(frozen=True)
class Cluster:
    """The deploy/local/kafka.sh brokers of --broker: broker n (1..N) listens on
    the first one's port + 2(n-1) and keeps its pid file under kafka-FIRST/
    (broker 1) or kafka-FIRST/node-n/."""

    first: int
    brokers: int

    @classmethod
    def of(cls, bootstrap: str) -> Cluster:
        ports = sorted(int(b.rsplit(":", 1)[1]) for b in bootstrap.split(","))
        return cls(ports[0], len(ports))

    def node(self, port: int) -> int | None:
        node = (port - self.first) // 2 + 1
        return node if 1 <= node <= self.brokers and not (port - self.first) % 2 else None

    def kill(self, port: int) -> None:
        node = self.node(port)
        assert node is not None  # checked by main()
        run = Path(os.environ.get("SEPWATCH_RUN_DIR", Path.home() / ".cache/sepwatch/run"))
        home = run / f"kafka-{self.first}"
        pid_file = (home if node == 1 else home / f"node-{node}") / "kafka.pid"
        os.kill(int(pid_file.read_text()), signal.SIGKILL)

    def restart(self) -> None:
        """`up` starts only the brokers not running: the one killed."""
        env = {**os.environ, "SEPWATCH_KAFKA_PORT": str(self.first)}
        subprocess.run(
            [str(KAFKA), "up", "--brokers", str(self.brokers)],
            check=True,
            env=env,
            timeout=300,
            capture_output=True,
        )


class FeedFailed(RuntimeError):
    """The day could not be produced (with one broker, its outage outlasted the
    producer's patience): the run says nothing about the workers."""


@dataclass
class Outcome:
    events: int
    wanted: int
    lost: int
    extra: int
    duplicated: int
    dead_lettered: bool
    restarts: int
    seconds: float
    guarantee: str

    @property
    def passed(self) -> bool:
        once = self.guarantee != "exactly_once" or not self.duplicated
        return not self.lost and not self.extra and self.dead_lettered and once


def one_run(
    broker: str,
    victim: int | None,
    lines: list[bytes],
    workdir: Path,
    rate: float,
    wait_s: float,
    faults: set[str] = FAULTS,
    guarantee: str = "exactly_once",
) -> Outcome:
    began = time.monotonic()
    prefix = f"f{uuid.uuid4().hex[:8]}."
    topics = Topics(prefix)
    postures = [n for n, line in enumerate(lines) if b'"device_posture"' in line]
    chosen = postures[len(postures) // 3]
    poison = json.loads(lines[chosen])["event_id"]
    want = replayed(lines[:chosen] + lines[chosen + 1 :])
    ensure_topics(broker, topics, PARTITIONS, retention_ms=24 * 3_600_000)
    (workdir / prefix.rstrip(".")).mkdir(parents=True, exist_ok=True)
    workers = Workers(broker, prefix, workdir / prefix.rstrip("."), poison, guarantee)
    fed: list[BaseException] = []

    def feed() -> None:
        try:
            produce(paced(lines, rate), broker, topics, end_of_input=True, marker_key=MARKER_KEY)
        except Exception as exc:  # the run fails with this reason, not as lost findings
            fed.append(exc)

    feeding = threading.Thread(target=feed, daemon=True)
    feed_s = len(lines) / rate

    def at(fraction: float, what: Callable[[], None]) -> None:
        delay = began + feed_s * fraction - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        what()

    def made(fault: str) -> None:
        """Said as it happens: a fault made after the day was fed hit less."""
        fed_by = "during the feed" if feeding.is_alive() else "after the feed"
        print(f"  {time.monotonic() - began:5.0f} s ({fed_by}): {fault}", flush=True)

    try:
        time.sleep(8)  # the workers join their groups
        began = time.monotonic()
        feeding.start()
        if victim is not None and "broker" in faults:
            cluster = Cluster.of(broker)
            at(0.15, lambda: cluster.kill(victim))
            made(f"broker {victim} SIGKILLed")
            time.sleep(5)
            cluster.restart()
            made(f"broker {victim} restarted")
        if "kill" in faults:
            at(0.35, lambda: workers.signal("a", signal.SIGKILL))
            made("worker a SIGKILLed")
        if "zombie" in faults:
            at(0.5, lambda: workers.signal("b", signal.SIGSTOP))
            made("worker b SIGSTOPped")
            time.sleep(SESSION_S * 2.5)
            workers.signal("b", signal.SIGCONT)
            made("worker b SIGCONTed")
        if "refuse" in faults:
            at(0.7, lambda: refuse_findings(broker, topics.findings, REFUSING))
            made("the findings topic refuses writes")
            time.sleep(REFUSE_S)
            refuse_findings(broker, topics.findings, None)
            made("the findings topic takes writes again")
        feeding.join()
        if fed:
            raise FeedFailed(f"the producer of the day gave up: {fed[0]!r}")
        deadline = time.monotonic() + wait_s
        got: Counter[str] = Counter()
        while time.monotonic() < deadline:
            got = Counter((r.key or b"").decode() for r in read_topics(broker, [topics.findings]))
            if set(got) >= set(want):
                # Every input routed and every stage record judged and
                # committed: anything extra or twice is on the topic by then.
                judged(broker, topics, deadline)
                got = Counter(
                    (r.key or b"").decode() for r in read_topics(broker, [topics.findings])
                )
                break
            time.sleep(5)
        for fid in sorted(set(want) - set(got))[:20]:  # what a failed run lost, to look into
            print(f"  lost {fid} evidence {want[fid]['evidence_event_ids']}", flush=True)
        # The id is masked in the reason, as any text in a dead letter is.
        letters = [
            d
            for d in read_dead_letters(broker, topics)
            if d.get("stage") and mask_text(poison) in d["reason"]
        ]
        return Outcome(
            events=len(lines),
            wanted=len(want),
            lost=len(set(want) - set(got)),
            extra=len(set(got) - set(want)),
            duplicated=sum(c - 1 for c in got.values()),
            dead_lettered=any("InjectedFault" in d["reason"] for d in letters),
            restarts=workers.restarts,
            seconds=time.monotonic() - began,
            guarantee=guarantee,
        )
    finally:
        workers.stop()
        drop_topics(broker, prefix)


def judged(broker: str, topics: Topics, deadline: float) -> None:
    """Wait until the validators' group has committed past every input record
    there is now, then the workers' group past every stage record there is
    then (committed records left, bench.stream.unread); until `deadline`."""
    consumer = KafkaConsumer(bootstrap_servers=broker, enable_auto_commit=False)
    try:
        for group, names in (
            ("validator", list(topics.inputs)),
            ("worker", [topics.stage(s) for s in STAGES]),
        ):
            parts = [TopicPartition(n, p) for n in names for p in range(PARTITIONS)]
            ends = consumer.end_offsets(parts)
            while unread(f"{topics.prefix}{group}", names, ends, broker) > 0:
                if time.monotonic() > deadline:
                    return
                time.sleep(1)
    finally:
        consumer.close()


def drop_topics(broker: str, prefix: str) -> None:
    """A run's topics, deleted after it: a broker restarted after SIGKILL
    recovers every partition's log first, and old runs' would slow that."""
    client = admin(broker)
    try:
        client.delete_topics([t for t in client.list_topics() if t.startswith(prefix)])
    finally:
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--broker", required=True, help="bootstrap servers, comma-separated")
    parser.add_argument(
        "--victim-port",
        type=int,
        default=None,
        help="port of a deploy/local/kafka.sh broker to SIGKILL and restart "
        "(none: no broker fault)",
    )
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rate", type=float, default=2_000.0, help="events/s produced")
    parser.add_argument("--wait", type=float, default=600.0, help="s to wait for the findings")
    parser.add_argument("--workdir", type=Path, default=Path("out/faults"))
    parser.add_argument(
        "--faults",
        default=",".join(sorted(FAULTS)),
        help="which faults to inject (to find which one a failure comes from)",
    )
    parser.add_argument(
        "--guarantee",
        choices=GUARANTEES,
        default="exactly_once",
        help="the workers' SEPWATCH_PROCESSING_GUARANTEE; under exactly_once a finding "
        "id twice among the committed records fails the run",
    )
    args = parser.parse_args()
    faults = set(args.faults.split(",")) - {""}
    if unknown := faults - FAULTS:
        parser.error(f"--faults: unknown {', '.join(sorted(unknown))} (of {', '.join(FAULTS)})")
    if args.victim_port is not None and Cluster.of(args.broker).node(args.victim_port) is None:
        parser.error(f"--victim-port {args.victim_port} is no broker of --broker {args.broker}")
    lines = day(args.events, seed=11)
    outcomes = []
    for run in range(1, args.runs + 1):
        try:
            o = one_run(
                args.broker,
                args.victim_port,
                lines,
                args.workdir,
                args.rate,
                args.wait,
                faults,
                args.guarantee,
            )
        except FeedFailed as exc:
            print(f"run {run}: NOT RUN  {exc}", flush=True)
            continue
        outcomes.append(o)
        print(
            f"run {run}: {'PASS' if o.passed else 'FAIL'}  events {o.events:,}  findings wanted "
            f"{o.wanted:,}  lost {o.lost}  extra {o.extra}  committed duplicated by id "
            f"{o.duplicated} ({o.guarantee})  "
            f"poison dead-lettered {o.dead_lettered}  worker restarts {o.restarts}  "
            f"{o.seconds:.0f} s",
            flush=True,
        )
    passed = sum(o.passed for o in outcomes)
    print(f"{passed} of {args.runs} runs passed")
    sys.exit(0 if passed == args.runs else 1)


if __name__ == "__main__":
    main()
