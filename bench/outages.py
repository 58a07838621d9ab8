"""The outage run (issue 7, part 2): a simulated working day streamed through
a worker that is SIGKILLed again and again, the broker restarted under it,
Elasticsearch stopped (a worker killed meanwhile); afterwards every finding
replay gives must be in Elasticsearch exactly once and every critical finding
must have reached a signed webhook.

    python -m bench.outages --kafka-port 26092 --es-port 26200 --events 200000 --outage 60 --runs 3

The broker and the node are not started here: start them with
deploy/local/kafka.sh and deploy/local/elasticsearch.sh on ports that disturb
nobody (the run stops and starts both, their data kept) and stop them after.
The suite runs the same scenario on a small day with the shortest outages
that still show the behaviour (tests/integration/test_faults.py); this is
the long form, at the size of a bank's day.

Each fault waits on what it is meant to hit (a worker writing findings, the
sink holding findings Elasticsearch cannot take); `--outage` only makes
Elasticsearch's absence last at least that long.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml
from aiohttp import web
from elasticsearch import Elasticsearch
from elasticsearch.helpers import scan
from kafka import KafkaConsumer, TopicPartition

from bench.harness import free_port, wait_until
from bench.stream import unread
from schemas.policy_file import load_policy
from simulator.day import simulate
from streams.alerts.channels import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature
from streams.kafka_io import admin, ensure_topics, produce
from streams.topics import STAGES, Topics

ROOT = Path(__file__).resolve().parent.parent
KAFKA = ROOT / "deploy" / "local" / "kafka.sh"
ES = ROOT / "deploy" / "local" / "elasticsearch.sh"
POLICY = ROOT / "deploy" / "policy" / "example.yaml"
PARTITIONS = 4
MARKER_KEY = secrets.token_hex(16)  # the workers honour end-of-input markers it signs
SECRET = secrets.token_hex(16)  # the webhook's signing secret
# A notification delivered this long before a fault may be delivered again:
# the router records a finding as notified only after the delivery.
REDELIVERY_WINDOW_S = 15.0


def day(count: int) -> list[bytes]:
    """Simulated bank traffic of one fixed working day: about 20 events per user."""
    users = max(50, count // 19)
    return [
        json.dumps(e, ensure_ascii=False).encode() + b"\n"
        for e in simulate(
            load_policy(POLICY),
            users=users,
            devices=users + users // 10,
            hours=8,
            violation_rate=0.02,
            seed=71,
            start=datetime(2026, 11, 23, 8, tzinfo=ZoneInfo("Asia/Seoul")),
        )
    ]


def replayed(lines: list[bytes]) -> dict[str, dict[str, Any]]:
    import io

    from streams.replay import replay

    out = io.StringIO()
    replay(load_policy(POLICY), lines, out, io.StringIO())
    return {f["finding_id"]: f for f in map(json.loads, out.getvalue().splitlines())}


class Intake:
    """A signed webhook on loopback, served from its own thread: it refuses
    what is not signed with SECRET and records each firing delivery of a
    finding id with the (monotonic) time it arrived, as a SOC's intake
    deduplicating by id would."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/intake"
        self.deliveries: list[tuple[float, str]] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        stamp = request.headers.get(TIMESTAMP_HEADER, "")
        if not verify_signature(SECRET, stamp, body, request.headers.get(SIGNATURE_HEADER, "")):
            return web.Response(status=401)
        note = json.loads(body)
        if note["kind"] == "firing":
            now = time.monotonic()
            self.deliveries += [(now, fid) for fid in note["finding_ids"]]
        return web.Response(status=200)

    async def _serve(self) -> web.AppRunner:
        app = web.Application()
        app.router.add_post("/intake", self._handle)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        return runner

    def __enter__(self) -> Intake:
        self._thread.start()
        self._runner = asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def notified(self) -> set[str]:
        return {fid for _, fid in self.deliveries}


@dataclass
class Worker:
    """`sepwatch worker` as a process an operator (or a service manager) runs."""

    env: dict[str, str]
    policy: Path
    state: Path
    log: Path
    web_port: int = field(default_factory=free_port)

    def __post_init__(self) -> None:
        command = ["cli.main", "worker", "--policy", str(self.policy), "--loglevel", "info"]
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                *command,
                "--state-dir",
                str(self.state),
                "--web-port",
                str(self.web_port),
            ],
            stdout=(out := self.log.open("ab")),
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=ROOT,
        )
        out.close()  # the worker has its own copy of the descriptor
        # Restoring a big day's changelogs under load takes minutes (the suite's
        # 200,000-event run once failed at 180 s): a slow start is measured, not failed.
        wait_until(self._ready, f"worker ready (log: {self.log})", timeout=600)

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"worker exited {self.proc.returncode}; log: {self.log}")
        return "[^Worker]: Ready" in self.log.read_text(errors="replace")

    def metric(self, name: str) -> float:
        """One unlabelled series of the worker's /metrics (-1: not served)."""
        try:
            url = f"http://127.0.0.1:{self.web_port}/metrics"
            text = urllib.request.urlopen(url, timeout=5).read().decode()
        except OSError:
            return -1
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
        return -1

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class Outcome:
    events: int
    wanted: int
    critical: int
    lost: list[str]
    extra: list[str]
    stored_twice: list[str]
    not_notified: int
    notified_unexpected: int
    deliveries: int
    redelivered: int  # finding ids delivered more than once
    unexplained: list[str]  # of those, delivered again with no fault after the first
    faults: list[str]
    seconds: float
    settled: bool  # everything stored, notified and committed within the wait

    @property
    def passed(self) -> bool:
        return self.settled and not (
            self.lost
            or self.extra
            or self.stored_twice
            or self.not_notified
            or self.notified_unexpected
            or self.unexplained
        )


class Run:
    """One outage run's servers, topics, workers and the faults it made."""

    def __init__(
        self, kafka_port: int, es_port: int, workdir: Path, outage_s: float, intake: Intake
    ) -> None:
        self.broker = f"127.0.0.1:{kafka_port}"
        self.es_url = f"http://127.0.0.1:{es_port}"
        self.kafka = {"SEPWATCH_KAFKA_PORT": str(kafka_port), "SEPWATCH_KAFKA_KEEP_DATA": "1"}
        self.node = {"SEPWATCH_ES_PORT": str(es_port), "SEPWATCH_ES_KEEP_DATA": "1"}
        self.workdir = workdir
        self.outage_s = outage_s
        self.topics = Topics(f"o{uuid.uuid4().hex[:8]}.")
        self.index = f"{self.topics.prefix.rstrip('.')}-findings"
        self.intake = intake
        self.workers: list[Worker] = []
        self.faults: list[tuple[float, str]] = []  # (monotonic time, what)

    @property
    def worker(self) -> Worker:
        return self.workers[-1]

    def start(self) -> Worker:
        policy = yaml.safe_load(POLICY.read_text())
        policy["alerting"]["routes"] = [
            {"name": "critical", "match": {"severity": "critical"}, "channels": ["soc"]}
        ]
        path = self.workdir / "policy.yaml"
        path.write_text(yaml.safe_dump(policy, allow_unicode=True))
        env = {
            **os.environ,
            "SEPWATCH_BROKER": self.broker,
            "SEPWATCH_TOPIC_PREFIX": self.topics.prefix,
            "SEPWATCH_ES_URL": self.es_url,
            "SEPWATCH_ES_INDEX": self.index,
            "SEPWATCH_END_OF_INPUT_KEY": MARKER_KEY,
            "PYTHONUNBUFFERED": "1",
            # Channel settings in the worker's environment, not on its command line.
            "SEPWATCH_CHANNELS__SOC__KIND": "webhook",
            "SEPWATCH_CHANNELS__SOC__URL": self.intake.url,
            "SEPWATCH_CHANNELS__SOC__SECRET": SECRET,
        }
        log = self.workdir / f"worker-{len(self.workers)}.log"
        worker = Worker(env, path, self.workdir / "state", log)
        self.workers.append(worker)
        return worker

    def fault(self, what: str) -> None:
        self.faults.append((time.monotonic(), what))

    def kill(self) -> Worker:
        """SIGKILL the worker and start its successor (same state directory)."""
        self.fault(f"SIGKILL worker-{len(self.workers) - 1}")
        self.worker.kill()
        return self.start()

    def alive(self) -> bool:
        """A worker that exited on its own (say, the broker gone too long) is
        started again, as its service manager would; the run says so."""
        if self.worker.proc.poll() is not None:
            self.fault(f"worker-{len(self.workers) - 1} exited {self.worker.proc.returncode}")
            self.start()
        return True

    def progress(self, at_least: int, timeout: float = 300) -> None:
        """Wait until the findings topic holds `at_least` records."""
        wait_until(
            lambda: self.alive() and self.findings_written() >= at_least,
            f"{at_least} records on the findings topic",
            timeout,
        )

    def script(self, script: Path, action: str, env: dict[str, str]) -> None:
        self.fault(f"{script.stem} {action}")
        subprocess.run([str(script), action], check=True, env={**os.environ, **env}, timeout=900)

    def findings_written(self) -> int:
        """Records on the findings topic so far (a progress gauge; ids may repeat)."""
        try:
            consumer = KafkaConsumer(bootstrap_servers=self.broker, request_timeout_ms=10_000)
        except Exception:  # the broker is away
            return -1
        try:
            parts = [TopicPartition(self.topics.findings, p) for p in range(PARTITIONS)]
            return sum(consumer.end_offsets(parts).values())
        except Exception:
            return -1
        finally:
            consumer.close()

    def produce(self, lines: list[bytes], end: bool) -> None:
        from pydantic import SecretStr

        key = SecretStr(MARKER_KEY)
        produce(lines, self.broker, self.topics, end_of_input=end, marker_key=key)

    def settled(self, timeout: float) -> None:
        """Every group committed to the end offsets its topics have now: what
        those records cause (a finding stored twice, a delivery made again) has
        happened by then."""
        t = self.topics
        for group, names in (
            ("validator", t.inputs),
            ("worker", [t.stage(s) for s in STAGES]),
            ("es-sink", [t.findings]),
            ("alerts", [t.findings]),
        ):
            committed_to_end(self.broker, f"{t.prefix}{group}", names, timeout)


def committed_to_end(broker: str, group: str, names: Iterable[str], timeout: float) -> None:
    consumer = KafkaConsumer(bootstrap_servers=broker, enable_auto_commit=False)
    try:
        parts = [TopicPartition(n, p) for n in names for p in range(PARTITIONS)]
        ends = consumer.end_offsets(parts)
    finally:
        consumer.close()
    # Committed records left, not offsets: a transaction's commit marker
    # follows its last record (bench.stream.unread).
    wait_until(
        lambda: unread(group, list(names), ends, broker) == 0,
        f"{group} committed to the end",
        timeout,
    )


def es_ids(es: Elasticsearch, index: str) -> Counter[str]:
    """Every document id under the alias, with how often it occurs."""
    es.indices.refresh(index=index)
    return Counter(
        hit["_id"]
        for hit in scan(es, index=index, query={"query": {"match_all": {}}}, _source=False)
    )


def es_count(es: Elasticsearch, index: str) -> int:
    try:
        es.indices.refresh(index=index)
        return int(es.count(index=index)["count"])
    except Exception:  # the node is away, or the index not made yet
        return -1


def one_run(
    kafka_port: int, es_port: int, lines: list[bytes], outage_s: float, workdir: Path
) -> Outcome:
    began = time.monotonic()
    want = replayed(lines)
    critical = {k for k, f in want.items() if f["severity"] == "critical" and f["status"] == "open"}
    workdir.mkdir(parents=True, exist_ok=True)
    with Intake() as intake:
        run = Run(kafka_port, es_port, workdir, outage_s, intake)
        ensure_topics(run.broker, run.topics, PARTITIONS, retention_ms=6 * 3_600_000)
        es = Elasticsearch(run.es_url, request_timeout=30)
        try:
            settled = _faults(run, lines, len(want), critical, es)
            stored = es_ids(es, run.index)
        finally:
            for w in run.workers:
                w.stop()
            es.close()
        deliveries = list(intake.deliveries)
    missing = sorted(set(want) - set(stored))
    if missing:
        _where_lost(run, [want[k] for k in missing])
    per_id = Counter(fid for _, fid in deliveries)
    again = [fid for fid, n in per_id.items() if n > 1]
    # At least once, not exactly once: the router writes a finding's id to the
    # notified topic after its delivery, so a worker killed (or a broker gone)
    # between the two delivers it again; nothing else may.
    fault_times = [at for at, _ in run.faults]
    unexplained = [
        fid
        for fid in again
        if not any(
            0 <= at - min(t for t, d in deliveries if d == fid) <= REDELIVERY_WINDOW_S
            for at in fault_times
        )
    ]
    return Outcome(
        events=len(lines),
        wanted=len(want),
        critical=len(critical),
        lost=missing,
        extra=sorted(set(stored) - set(want)),
        stored_twice=[k for k, n in stored.items() if n > 1],
        not_notified=len(critical - set(per_id)),
        notified_unexpected=len(set(per_id) - critical),
        deliveries=len(deliveries),
        redelivered=len(again),
        unexplained=unexplained,
        faults=[what for _, what in run.faults],
        seconds=time.monotonic() - began,
        settled=settled,
    )


def _faults(
    run: Run, lines: list[bytes], expected: int, critical: set[str], es: Elasticsearch
) -> bool:
    """Stream the day in quarters while the faults happen; True when it
    settled (everything stored and notified, every group committed)."""
    quarter = len(lines) // 4
    chunks = [lines[i * quarter : (i + 1) * quarter] for i in range(3)] + [lines[3 * quarter :]]
    run.start()
    run.produce(chunks[0], end=False)
    # 1: a kill once findings are being written, then one in the successor's
    # first moments of work. Each successor waits out the killed member's session.
    run.progress(expected // 20)
    run.kill()
    before = run.findings_written()
    run.produce(chunks[1], end=False)
    run.progress(before + 1)
    run.kill()
    run.progress(expected * 3 // 10)
    # 2: the broker restarted under the running worker, its data kept.
    run.script(KAFKA, "down", run.kafka)
    run.script(KAFKA, "up", run.kafka)
    # 3: Elasticsearch away while findings come (the sink holds them), a
    # worker killed meanwhile: its successor holds them too, none committed.
    run.script(ES, "down", run.node)
    try:
        away = time.monotonic()
        run.produce(chunks[2], end=False)
        backlog = "sepwatch_es_sink_backlog_findings"
        wait_until(lambda: run.alive() and run.worker.metric(backlog) > 0, "a backlog", 300)
        time.sleep(max(0.0, run.outage_s / 2 - (time.monotonic() - away)))
        run.kill()
        wait_until(lambda: run.alive() and run.worker.metric(backlog) > 0, "its backlog", 300)
        time.sleep(max(0.0, run.outage_s - (time.monotonic() - away)))
    finally:
        run.script(ES, "up", run.node)
    run.produce(chunks[3], end=True)
    # 4: a kill while the stages read the end-of-input markers.
    run.progress(expected * 9 // 10)
    run.kill()
    try:
        wait_until(
            lambda: (
                run.alive()
                and es_count(es, run.index) >= expected
                and critical <= run.intake.notified()
            ),
            "every finding stored and every critical one notified",
            600,
        )
        run.settled(timeout=300)
    except AssertionError as exc:
        print(f"not settled: {exc}", flush=True)
        return False
    return True


def _where_lost(run: Run, lost: list[dict[str, Any]]) -> None:
    """On a loss, say where the lost findings' evidence got to: the input and
    stage topics (partition and offset) and the groups' offsets there."""
    evidence = {e for f in lost for e in f["evidence_event_ids"]}
    for f in lost[:40]:
        print(f"  lost {f['rule_id']} {f['finding_id']} evidence {f['evidence_event_ids']}")
    consumer = KafkaConsumer(bootstrap_servers=run.broker, enable_auto_commit=False)
    client = admin(run.broker)
    try:
        t = run.topics
        for topic in [*t.inputs, *(t.stage(s) for s in STAGES), t.findings]:
            parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
            consumer.assign(parts)
            consumer.seek_to_beginning()
            ends = consumer.end_offsets(parts)
            found: list[tuple[int, int]] = []
            while any(consumer.position(tp) < ends[tp] for tp in parts):
                for tp, records in consumer.poll(timeout_ms=1000).items():
                    found += [
                        (tp.partition, r.offset)
                        for r in records
                        if any(e.encode() in (r.value or b"") for e in evidence)
                    ]
            group = "validator" if topic in t.inputs else "worker"
            group = "es-sink" if topic == t.findings else group
            offsets = client.list_group_offsets({t.prefix + group: None}).get(t.prefix + group, {})
            committed = [offsets[tp].offset if tp in offsets else None for tp in parts]
            print(
                f"  {topic}: {len(found)} records of the lost evidence at {sorted(found)[:12]}; "
                f"ends {[ends[tp] for tp in parts]}; {group} committed {committed}"
            )
    finally:
        consumer.close()
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kafka-port", type=int, required=True, help="deploy/local/kafka.sh's")
    parser.add_argument("--es-port", type=int, required=True, help="elasticsearch.sh's")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--outage", type=float, default=60.0, help="s Elasticsearch is away")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=Path("out/outages"))
    args = parser.parse_args()
    lines = day(args.events)
    passed = 0
    for n in range(1, args.runs + 1):
        o = one_run(args.kafka_port, args.es_port, lines, args.outage, args.workdir / f"run-{n}")
        passed += o.passed
        print(
            f"run {n}: {'PASS' if o.passed else 'FAIL'}  events {o.events:,}  findings wanted "
            f"{o.wanted:,}  lost {len(o.lost)}  extra {len(o.extra)}  stored twice "
            f"{len(o.stored_twice)}  critical {o.critical:,}  not notified {o.not_notified}  "
            f"notified unexpectedly {o.notified_unexpected}  deliveries {o.deliveries:,}  "
            f"delivered again {o.redelivered} (with no fault before: {len(o.unexplained)})  "
            f"{o.seconds:.0f} s{'' if o.settled else ' (not settled)'}\n"
            f"  faults: {', '.join(o.faults)}",
            flush=True,
        )
    print(f"{passed} of {args.runs} runs passed")
    sys.exit(0 if passed == args.runs else 1)


if __name__ == "__main__":
    main()
