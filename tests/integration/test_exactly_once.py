"""Exactly once on the stage path (issue 19, streams/exactly_once.py), on a
real broker: a refused write aborts the transaction and nothing of it is
committed; a second holder of a partition's transactional id fences the
first; tables are restored from what was committed only."""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.structs import TopicPartition
from kafka import KafkaConsumer
from kafka import TopicPartition as KafkaPartition

from bench.harness import wait_until
from streams.exactly_once import OwnTable, restore
from streams.kafka_io import ensure_topics, produce, read_topics
from streams.settings import Settings
from streams.topics import Topics
from tests.integration.conftest import MARKER_KEY, Worker
from tests.integration.settle import settled
from tests.integration.test_delivery import _findings_limit, _stage_progress
from tests.integration.test_stream import PARTITIONS, _compare, _day, _replayed

pytestmark = pytest.mark.integration

EXACTLY_ONCE = {"SEPWATCH_PROCESSING_GUARANTEE": "exactly_once"}


@pytest.fixture
def workers(broker: str, prefix: str, tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    ensure_topics(broker, Topics(prefix), PARTITIONS, retention_ms=3_600_000)
    started: list[Worker] = []

    def start(name: str) -> Worker:
        w = Worker(broker, prefix, tmp_path / "state", tmp_path / f"{name}.log", env=EXACTLY_ONCE)
        started.append(w)
        return w

    yield start
    for w in started:
        w.stop()


def committed_findings(broker: str, topic: str) -> list[dict[str, object]]:
    """Every committed record of the findings topic, duplicates kept."""
    return [json.loads(r.value) for r in read_topics(broker, [topic])]


def _once_each(found: list[dict[str, object]]) -> dict[str, dict[str, object]]:
    ids = Counter(str(f["finding_id"]) for f in found)
    twice = {k: n for k, n in ids.items() if n > 1}
    assert not twice, f"committed more than once: {list(twice.items())[:5]}"
    return {str(f["finding_id"]): f for f in found}


# Kafka 4.1.1's coordinator answers an EndTxn that meets its own epoch fence with
# UNKNOWN_SERVER_ERROR (the broker logs an IllegalStateException, "PREPARE_COMMIT
# while it already a pending state PREPARE_EPOCH_FENCE"); aiokafka's sender logs
# that with its traceback, and the worker handles it as the fence it is: its very
# next line says so. Seen once, in a clone run of the whole suite.
FENCE_MET_BY_COMMIT = re.compile(
    r"\[ERROR\] Unexpected error in sender routine \n"
    r"Traceback \(most recent call last\):\n(?:[ \t][^\n]*\n)*"
    r"aiokafka\.errors\.UnknownError: \[Error -1\] UnknownError\n"
    r"(?=[^\n]*\[ERROR\] [^\n]*: fenced by a newer holder of the partition)"
)


def _stopped_cleanly(worker: Worker) -> None:
    """Stopped, its log holds no exception that nothing handled (a task's, a
    future's never retrieved, aiokafka's IllegalStateError)."""
    worker.stop()
    text = FENCE_MET_BY_COMMIT.sub("", worker.log.read_text(errors="replace"))
    for unhandled in ("Traceback", "never retrieved", "IllegalStateError"):
        assert unhandled not in text, text[text.index(unhandled) - 2000 :][:4000]


def _holding(worker: Worker, what: str) -> bool:
    return any(
        "exactly once: holding" in line and what in line
        for line in worker.log.read_text(errors="replace").splitlines()
    )


def test_a_refused_write_aborts_and_the_records_are_judged_again(
    broker: str, prefix: str, workers: Callable[..., Worker]
) -> None:
    """With the findings topic refusing every finding, each transaction that
    holds one is aborted: no finding and no stage offset past it is
    committed. Once the topic takes them again, the same worker (not
    restarted) judges the records again from the committed offsets, and the
    committed findings are replay's, each once."""
    topics = Topics(prefix)
    lines = _day(users=40, hours=2, seed=3)
    want = _replayed(lines)
    _findings_limit(broker, topics.findings, 200)  # below any finding's size
    worker = workers("a")
    worker.wait_ready()
    produce(lines, broker, topics, end_of_input=True, marker_key=MARKER_KEY)
    wait_until(lambda: "transaction aborted" in worker.log.read_text(), "an abort", 120)
    committed, end = _stage_progress(broker, topics)
    assert committed < end, (committed, end)
    assert committed_findings(broker, topics.findings) == []
    _findings_limit(broker, topics.findings, None)
    wait_until(
        lambda: len(committed_findings(broker, topics.findings)) >= len(want),
        "every finding committed",
        240,
    )
    settled(broker, topics)  # anything extra is on the topic by now
    _compare(want, _once_each(committed_findings(broker, topics.findings)))
    _stopped_cleanly(worker)


def test_a_second_holder_of_a_partition_fences_the_first(
    broker: str, prefix: str, workers: Callable[..., Worker]
) -> None:
    """A producer that starts with a stage partition's transactional id (as
    the partition's next holder does) fences the worker: its next
    transaction on that partition fails and is not committed, and the
    partition's offset does not move while it is fenced. The worker takes the
    partition back only after a session with no rebalance, and the committed
    findings are replay's, each once."""
    topics = Topics(prefix)
    lines = _day(users=40, hours=2, seed=5)
    want = _replayed(lines)
    worker = workers("a")
    worker.wait_ready()
    stage = topics.stage("device")
    wait_until(lambda: _holding(worker, f"{stage}:0"), "the device stage's partition 0 held")

    async def fence() -> None:
        zombie_killer = AIOKafkaProducer(
            bootstrap_servers=broker, transactional_id=f"{prefix}stage-device-0"
        )
        await zombie_killer.start()  # init_transactions: a new epoch
        await zombie_killer.stop()

    asyncio.run(fence())
    produce(lines, broker, topics, end_of_input=True, marker_key=MARKER_KEY)
    wait_until(lambda: "fenced by a newer holder" in worker.log.read_text(), "fenced", 120)
    consumer = KafkaConsumer(bootstrap_servers=broker, group_id=f"{prefix}worker")
    try:
        assert not consumer.committed(KafkaPartition(stage, 0))
    finally:
        consumer.close()
    wait_until(lambda: "still this worker's; taken back" in worker.log.read_text(), "reclaim", 120)
    wait_until(
        lambda: len(committed_findings(broker, topics.findings)) >= len(want),
        "every finding committed",
        240,
    )
    settled(broker, topics)
    _compare(want, _once_each(committed_findings(broker, topics.findings)))
    _stopped_cleanly(worker)


def test_tables_are_restored_from_committed_changes_only(broker: str, prefix: str) -> None:
    """A changelog record of an aborted transaction (a worker killed or fenced
    mid-fetch) is not restored; a committed one is."""
    topics = Topics(prefix)
    ensure_topics(broker, topics, 1, retention_ms=3_600_000)
    topic = topics.changelogs[0]

    async def write_and_restore() -> dict[str, object]:
        producer = AIOKafkaProducer(bootstrap_servers=broker, transactional_id=f"{prefix}t")
        await producer.start()
        try:
            for value, commit in (({"n": 1}, True), ({"n": 2}, False), ({"n": 3}, True)):
                await producer.begin_transaction()
                await producer.send_and_wait(
                    topic, json.dumps(value).encode(), key=json.dumps(f"0|k{value['n']}").encode()
                )
                await (producer.commit_transaction() if commit else producer.abort_transaction())
        finally:
            await producer.stop()
        table = OwnTable(topic)
        await restore(Settings(broker=broker), {topic: table}, [TopicPartition(topic, 0)])
        return table.data

    assert asyncio.run(write_and_restore()) == {"0|k1": {"n": 1}, "0|k3": {"n": 3}}
