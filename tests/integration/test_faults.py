"""Fault injection over a long run (issue 7, part 2): a worker killed with
SIGKILL again and again, the broker restarted, Elasticsearch stopped for a
minute; afterwards every finding the replay gives is in Elasticsearch exactly
once and every critical finding reached the alert receiver.

Everything is real and on loopback: the broker and the node are the session's
own (deploy/local scripts, on SEPWATCH_TEST_KAFKA_PORT / SEPWATCH_TEST_ES_PORT),
the receiver is a signed webhook served by the test.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml
from aiohttp import web
from elasticsearch import Elasticsearch
from elasticsearch.helpers import scan
from kafka import KafkaConsumer, TopicPartition

from schemas.policy_file import load_policy
from simulator.day import simulate
from streams.kafka_io import ensure_topics, produce
from streams.topics import STAGES, Topics
from tests.integration.conftest import ES, ES_PORT, KAFKA, MARKER_KEY, POLICY, PORT, Worker
from tests.integration.receivers import SignedWebhook
from tests.integration.test_elasticsearch import _count
from tests.integration.test_stream import _exported, _replayed, _wait_for
from tests.integration.test_worker_alerts import SECRET, Receiver

pytestmark = [pytest.mark.integration, pytest.mark.slow]
PARTITIONS = 4
EVENTS = int(os.environ.get("SEPWATCH_TEST_FAULT_EVENTS", "200000"))
OUTAGE_S = float(os.environ.get("SEPWATCH_TEST_ES_OUTAGE", "60"))
# A notification delivered this long before a fault may be delivered again:
# the router records a finding as notified only after the delivery.
REDELIVERY_WINDOW_S = 15.0


class DedupingWebhook(SignedWebhook):
    """The signed webhook, which also records each firing delivery of a
    finding id with the (monotonic) time it arrived: the receiver keeps the
    first and counts the others, as a SOC's intake deduplicating by id does."""

    def __init__(self) -> None:
        super().__init__(SECRET)
        self.deliveries: list[tuple[float, str]] = []

    def _verify(self, request: web.Request, body: bytes) -> int:
        status = super()._verify(request, body)
        if status == 200:
            note = json.loads(body)
            if note["kind"] == "firing":
                now = time.monotonic()
                self.deliveries += [(now, fid) for fid in note["finding_ids"]]
        return status


def _events(count: int) -> list[bytes]:
    """Simulated bank traffic of a working day: about 20 events per user."""
    users = max(50, count // 19)
    lines = [
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
    assert len(lines) >= count * 0.95, len(lines)
    return lines


def _script(script: Path, action: str, env: dict[str, str]) -> None:
    subprocess.run([str(script), action], check=True, env={**os.environ, **env}, timeout=900)


def _findings_written(broker: str, topics: Topics) -> int:
    """Records on the findings topic so far (a progress gauge; ids may repeat)."""
    try:
        consumer = KafkaConsumer(bootstrap_servers=broker, request_timeout_ms=10_000)
    except Exception:
        return -1
    try:
        parts = [TopicPartition(topics.findings, p) for p in range(PARTITIONS)]
        return sum(consumer.end_offsets(parts).values())
    except Exception:
        return -1
    finally:
        consumer.close()


def _where_lost(broker: str, topics: Topics, lost: list[dict[str, object]]) -> None:
    """On a loss, say where the lost findings' evidence got to: the input
    topics, the stage topics (partition and offset), and the workers' group
    offsets there: whether the validator or a stage dropped it."""
    evidence = {e for f in lost for e in f["evidence_event_ids"]}  # type: ignore[attr-defined]
    consumer = KafkaConsumer(bootstrap_servers=broker, enable_auto_commit=False)
    # The validator's group reads the inputs, the rules' group the stage topics.
    groups = {
        name: KafkaConsumer(bootstrap_servers=broker, group_id=name, enable_auto_commit=False)
        for name in (f"{topics.prefix}validator", f"{topics.prefix}worker")
    }
    try:
        for topic in [*topics.inputs, *(topics.stage(s) for s in STAGES)]:
            parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
            consumer.assign(parts)
            consumer.seek_to_beginning()
            ends = consumer.end_offsets(parts)
            found: list[tuple[int, int]] = []
            while any(consumer.position(tp) < ends[tp] for tp in parts):
                for tp, records in consumer.poll(timeout_ms=1000).items():
                    for r in records:
                        if any(e.encode() in (r.value or b"") for e in evidence):
                            found.append((tp.partition, r.offset))
            if found:
                reader = "validator" if topic in topics.inputs else "worker"
                group = groups[f"{topics.prefix}{reader}"]
                committed = [group.committed(tp) for tp in parts]
                print(
                    f"  {topic}: {len(found)} records of the lost evidence at "
                    f"{sorted(found)[:12]}; ends {[ends[tp] for tp in parts]}; "
                    f"committed {committed}"
                )
    finally:
        consumer.close()
        for group in groups.values():
            group.close()


def _es_ids(es: Elasticsearch, index: str) -> Counter[str]:
    """Every document id under the alias, with how often it occurs."""
    es.indices.refresh(index=index)
    return Counter(
        hit["_id"]
        for hit in scan(es, index=index, query={"query": {"match_all": {}}}, _source=False)
    )


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.hook = DedupingWebhook()
    with r:
        yield r


def test_faults_lose_no_finding_and_duplicate_none(
    broker: str, elasticsearch: str, prefix: str, tmp_path: Path, receiver: Receiver
) -> None:
    began = time.monotonic()
    topics = Topics(prefix)
    index = f"{prefix.rstrip('.')}-findings"  # as the Worker fixture names it
    lines = _events(EVENTS)
    want = _replayed(lines)
    critical = {k for k, f in want.items() if f["severity"] == "critical" and f["status"] == "open"}
    print(f"\n{len(lines)} events, {len(want)} findings expected, {len(critical)} critical")
    assert len(lines) >= 200_000 or EVENTS < 200_000
    assert critical

    policy = yaml.safe_load(POLICY.read_text())
    policy["alerting"]["routes"] = [
        {"name": "critical", "match": {"severity": "critical"}, "channels": ["soc"]}
    ]
    policy_path = tmp_path / "policy.yaml"
    policy_path.write_text(yaml.safe_dump(policy, allow_unicode=True))
    channel = {
        "SEPWATCH_CHANNELS__SOC__KIND": "webhook",
        "SEPWATCH_CHANNELS__SOC__URL": receiver.hook.url + "/intake",
        "SEPWATCH_CHANNELS__SOC__SECRET": SECRET,
    }
    ensure_topics(broker, topics, PARTITIONS, retention_ms=6 * 3_600_000)
    es = Elasticsearch(elasticsearch, request_timeout=30)
    workers: list[Worker] = []
    faults: list[tuple[float, str]] = []  # (monotonic time, what)

    def start() -> Worker:
        # Channel settings in the worker's environment, not on its command line.
        w = Worker(
            broker,
            prefix,
            tmp_path / "state",
            tmp_path / f"worker-{len(workers)}.log",
            policy_path,
            es_url=elasticsearch,
            env=channel,
        )
        workers.append(w)
        w.wait_ready(timeout=180)
        return w

    def kill(w: Worker) -> Worker:
        faults.append((time.monotonic(), f"SIGKILL worker-{len(workers) - 1}"))
        w.kill()
        return start()

    def alive(w: Worker) -> Worker:
        """A worker that exited on its own (say, the broker gone too long) is
        restarted, as its service manager would; the test says so."""
        if w.proc.poll() is None:
            return w
        print(f"worker-{len(workers) - 1} exited {w.proc.returncode}; restarted")
        faults.append((time.monotonic(), f"worker-{len(workers) - 1} exited"))
        return start()

    def progress(at_least: int, timeout: float = 240) -> None:
        _wait_for(lambda: _findings_written(broker, topics) >= at_least, timeout=timeout)

    quarter = len(lines) // 4
    chunks = [lines[i * quarter : (i + 1) * quarter] for i in range(3)] + [lines[3 * quarter :]]
    expected = len(want)
    try:
        worker = start()
        produce(chunks[0], broker, topics, end_of_input=False)
        # 1: a kill a few seconds into the run, then one in a new worker's first
        # seconds. Each restart waits out the killed member's session (10 s).
        progress(expected // 20)
        worker = kill(worker)
        produce(chunks[1], broker, topics, end_of_input=False)
        time.sleep(3)
        worker = kill(worker)
        progress(expected * 3 // 10)
        # 2: the broker restarted under the running worker, its data kept.
        kafka = {"SEPWATCH_KAFKA_PORT": PORT, "SEPWATCH_KAFKA_KEEP_DATA": "1"}
        faults.append((time.monotonic(), "broker down"))
        _script(KAFKA, "down", kafka)
        time.sleep(5)
        _script(KAFKA, "up", kafka)
        faults.append((time.monotonic(), "broker up"))
        time.sleep(10)
        worker = alive(worker)
        produce(chunks[2], broker, topics, end_of_input=False)
        # 3: Elasticsearch away for a minute, a worker killed meanwhile.
        node = {"SEPWATCH_ES_PORT": ES_PORT, "SEPWATCH_ES_KEEP_DATA": "1"}
        faults.append((time.monotonic(), "elasticsearch down"))
        _script(ES, "down", node)
        try:
            away = time.monotonic()
            time.sleep(OUTAGE_S / 2)
            worker = kill(worker)
            time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - away)))
        finally:
            _script(ES, "up", node)
        faults.append((time.monotonic(), "elasticsearch up"))
        worker = alive(worker)
        produce(chunks[3], broker, topics, end_of_input=True, marker_key=MARKER_KEY)
        # 4: a kill while the stages read the end-of-input markers.
        progress(expected * 9 // 10)
        worker = kill(worker)
        # Everything settled: all findings stored and every critical one notified.
        notified = lambda: {fid for _, fid in receiver.hook.deliveries}  # noqa: E731
        done = _wait_for(
            lambda: _count(es, index) >= expected and critical <= notified(), timeout=360
        )
        if not done:
            worker = alive(worker)
        time.sleep(5)  # anything extra, or a second delivery, would arrive now
        stored = _es_ids(es, index)
    finally:
        for w in workers:
            w.stop()
        es.close()

    print(f"run took {time.monotonic() - began:.0f} s; faults: {[what for _, what in faults]}")
    on_topic = _exported(broker, topics)
    missing = sorted(set(want) - set(stored))
    if missing:
        lost_by_engine = [k for k in missing if k not in on_topic]
        print(f"missing from Elasticsearch: {len(missing)}, of them never on the findings topic:")
        for k in lost_by_engine[:40]:
            f = want[k]
            print(f"  {f['rule_id']} {k} at {f['timestamp']} evidence {f['evidence_event_ids']}")
        _where_lost(broker, topics, [want[k] for k in lost_by_engine])
    extra = sorted(set(stored) - set(want))
    twice = {k: n for k, n in stored.items() if n > 1}
    assert not missing, (
        f"{len(missing)} findings lost: {Counter(want[k]['rule_id'] for k in missing)}"
    )
    assert not extra, f"{len(extra)} unexpected findings: {extra[:5]}"
    assert not twice, f"stored more than once: {list(twice)[:5]}"

    deliveries = receiver.hook.deliveries
    per_id = Counter(fid for _, fid in deliveries)
    duplicates = {fid: n for fid, n in per_id.items() if n > 1}
    print(
        f"critical findings {len(critical)}, deliveries {len(deliveries)}, "
        f"finding ids delivered more than once {len(duplicates)} "
        f"(extra deliveries {sum(duplicates.values()) - len(duplicates)})"
    )
    assert set(per_id) == critical, (
        f"not notified {len(critical - set(per_id))}, unexpected {len(set(per_id) - critical)}"
    )
    # At least once, not exactly once: the router writes a finding's id to the
    # notified topic after its delivery, so a worker killed (or a broker gone)
    # between the two delivers it again; nothing else may.
    fault_times = [at for at, _ in faults]
    for fid in duplicates:
        first = min(at for at, d in deliveries if d == fid)
        assert any(0 <= at - first <= REDELIVERY_WINDOW_S for at in fault_times), (
            f"{fid} delivered {per_id[fid]} times with no fault after its first delivery"
        )
