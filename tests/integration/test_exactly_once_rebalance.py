"""The exactly-once stages' consumer across rebalances (streams/exactly_once.py),
in this process on a real broker: a fenced partition's reclaim when the
assignment moves under it, and the stage backlog it reports on /metrics."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import ProducerFenced
from aiokafka.structs import TopicPartition
from prometheus_client import REGISTRY

from bench.harness import free_port
from schemas.policy_file import load_policy
from streams import metrics
from streams.exactly_once import ExactlyOnceStages, OwnTable
from streams.kafka_io import ensure_topics
from streams.settings import Settings
from streams.stages.runner import StageRunner
from streams.topics import STORES, Topics
from tests.integration.conftest import POLICY

pytestmark = pytest.mark.integration


async def _nothing(event: Any, sent: list[Any]) -> None:
    raise AssertionError("no record is judged here")


def _stages(broker: str, prefix: str) -> ExactlyOnceStages:
    topics = Topics(prefix)
    ensure_topics(broker, topics, 1, retention_ms=3_600_000)
    own = {name: OwnTable(topics.changelog("device", name)) for name in STORES}
    runner = StageRunner("device", own, load_policy(POLICY), 1, [])
    settings = Settings(broker=broker, topic_prefix=prefix, kafka_session_timeout_s=6)
    return ExactlyOnceStages(settings, {"device": runner}, topics, lambda r, p: _nothing)


async def _with_consumer(
    broker: str, stages: ExactlyOnceStages, run: Callable[[AIOKafkaConsumer], Awaitable[None]]
) -> None:
    """The stages given a started consumer, assigned by hand (the group's
    assignment is what `assign` stands in for here: the same state aiokafka
    keeps for a subscription)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=broker, enable_auto_commit=False)
    await consumer.start()
    stages.consumer = consumer
    try:
        await run(consumer)
    finally:
        for reclaim in list(stages.reclaiming):
            reclaim.cancel()
        await stages.drop(set(stages.txns))
        await consumer.stop()


async def _log_says(caplog: pytest.LogCaptureFixture, text: str, timeout: float = 30) -> None:
    async def seen() -> None:
        while text not in caplog.text:
            await asyncio.sleep(0.002)

    await asyncio.wait_for(seen(), timeout)


async def _fenced_here(
    stages: ExactlyOnceStages, consumer: AIOKafkaConsumer, tp: TopicPartition
) -> None:
    """The partition assigned to this worker, then its producer fenced."""
    consumer.assign([tp])
    async with stages.lock:
        await stages.fenced(tp, ProducerFenced())


def test_a_partition_assigned_elsewhere_while_it_is_taken_back_is_dropped(
    broker: str, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The reclaim found the partition assigned here, and the assignment moved
    while its producer started and its tables were read (the join of a
    rebalance completes then): no IllegalStateError out of the task, the
    partition is not held, and the log says why."""
    caplog.set_level(logging.INFO, logger="sepwatch")
    stages = _stages(broker, prefix)
    tp = TopicPartition(stages.topics.stage("device"), 0)

    async def scenario(consumer: AIOKafkaConsumer) -> None:
        await _fenced_here(stages, consumer, tp)
        await _log_says(caplog, "still this worker's; taken back")
        consumer.assign([TopicPartition(stages.topics.stage("user"), 0)])
        await asyncio.wait_for(asyncio.gather(*stages.reclaiming), 60)

    asyncio.run(_with_consumer(broker, stages, scenario))
    assert tp not in stages.txns
    assert "assigned elsewhere while taken back; left to its holder" in caplog.text


def test_a_rebalance_begun_during_the_wait_leaves_the_partition_to_it(
    broker: str, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Revoked but not yet assigned, the consumer's assignment is still the
    old one: a reclaim then must not read it (it would start a producer for a
    partition going to another worker, fencing that worker)."""
    caplog.set_level(logging.INFO, logger="sepwatch")
    stages = _stages(broker, prefix)
    tp = TopicPartition(stages.topics.stage("device"), 0)

    async def scenario(consumer: AIOKafkaConsumer) -> None:
        await _fenced_here(stages, consumer, tp)
        await stages.on_partitions_revoked({tp})  # what aiokafka calls as a rebalance begins
        await asyncio.wait_for(asyncio.gather(*stages.reclaiming), 60)

    asyncio.run(_with_consumer(broker, stages, scenario))
    assert tp not in stages.txns
    assert "not taken back: the group rebalanced since" in caplog.text
    assert "taken back\n" not in caplog.text.replace("not taken back", "")


def test_a_partition_that_cannot_be_taken_is_paused_and_tried_again(
    broker: str, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Taking a partition fails (here its producer cannot start: the
    stages' settings name a port nothing listens on): it is not held with
    half its state, it is paused (nothing fetched is judged without it), and
    a reclaim is on its way."""
    caplog.set_level(logging.INFO, logger="sepwatch")
    stages = _stages(broker, prefix)
    stages.settings = stages.settings.model_copy(update={"broker": f"127.0.0.1:{free_port()}"})
    tp = TopicPartition(stages.topics.stage("device"), 0)

    async def scenario(consumer: AIOKafkaConsumer) -> None:
        consumer.assign([tp])
        async with stages.lock:
            assert not await stages.take([tp])
        assert tp not in stages.txns
        assert consumer.paused() == {tp}
        assert len(stages.reclaiming) == 1

    asyncio.run(_with_consumer(broker, stages, scenario))
    assert "not taken (" in caplog.text and "tried again in a session" in caplog.text


def test_the_stage_backlog_is_the_stages_own_consumers(broker: str, prefix: str) -> None:
    """With exactly once the stage topics are read by the stages' consumer,
    not Faust's: /metrics' rules backlog of a stage topic is what that
    consumer has not yet been handed."""
    stages = _stages(broker, prefix)
    topic = stages.topics.stage("device")
    tp = TopicPartition(topic, 0)
    gauge = metrics.CONSUMER_LAG.labels("rules", topic)

    async def scenario(consumer: AIOKafkaConsumer) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=broker)
        await producer.start()
        try:
            for n in range(10):
                await producer.send_and_wait(topic, b"x", key=str(n).encode(), partition=0)
        finally:
            await producer.stop()
        consumer.assign([tp])
        consumer.seek(tp, 0)
        got = await consumer.getmany(tp, timeout_ms=10_000, max_records=3)
        assert len(got[tp]) == 3
        gauge.set(-1)
        await stages.report_lag()

    asyncio.run(_with_consumer(broker, stages, scenario))
    labels = {"consumer": "rules", "topic": topic}
    assert REGISTRY.get_sample_value("sepwatch_consumer_lag_records", labels) == 7
