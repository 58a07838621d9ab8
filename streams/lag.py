"""How far consumers trail their partitions: one measurement, two vantage points.

- From inside, for /metrics: the records on a live consumer's assigned
  partitions it has not yet been handed (`records_behind_by_topic`), for an
  aiokafka consumer or Faust's, which answers the same two questions.
- From outside, for the benchmarks and the tests' waits: the committed
  records a consumer group has not yet committed past (`uncommitted`)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Set
from typing import Any, Protocol

from aiokafka.errors import KafkaError
from kafka import KafkaConsumer, TopicPartition

from streams.kafka_connection import Broker, connection


class Trailing(Protocol):
    """What a consumer must answer to be measured: aiokafka's and Faust's both do."""

    def assignment(self) -> Set[Any]: ...

    def highwater(self, tp: Any) -> int | None: ...

    async def position(self, tp: Any) -> int: ...


async def records_behind_by_topic(consumer: Trailing) -> dict[str, int] | None:
    """Records on the assigned partitions not yet returned to the consumer, by
    topic (a topic with nothing assigned is absent); None while a rebalance
    leaves nothing to measure."""
    behind: dict[str, int] = {}
    try:
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            if high is not None:
                trail = max(0, high - await consumer.position(tp))
                behind[tp.topic] = behind.get(tp.topic, 0) + trail
    except (KafkaError, AssertionError):
        return None
    return behind


async def records_behind(consumer: Trailing) -> int | None:
    """All of records_behind_by_topic."""
    by_topic = await records_behind_by_topic(consumer)
    return None if by_topic is None else sum(by_topic.values())


# Offsets: past this gap on a partition, `uncommitted` does not read what is between.
SMALL_GAP = 100


def uncommitted(
    broker: Broker,
    group: str,
    topics: Iterable[str],
    ends: dict[TopicPartition, int] | None = None,
) -> int:
    """Committed records of `topics` the consumer group has not committed
    past, up to `ends` (default: the end offsets now), read from outside the
    group (it is not joined). Not "end - committed": a topic written in
    transactions holds a commit marker after each transaction's last record,
    and a consumer commits the offset after the last record it read, so a
    group that has read everything stays a marker short of the end
    (docs/exactly-once.md). Without transactions the two agree. A gap of more
    than SMALL_GAP offsets on a partition is returned as it is (an upper
    bound: not drained either way), so that waiting costs no reading."""
    consumer = KafkaConsumer(
        **connection(broker).client_options(),
        group_id=group,
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    try:
        parts = list(ends) if ends else _partitions(consumer, topics)
        end = ends or consumer.end_offsets(parts)
        behind = {tp: consumer.committed(tp) or 0 for tp in parts}
        behind = {tp: at for tp, at in behind.items() if at < end[tp]}
        if not behind or any(end[tp] - at > SMALL_GAP for tp, at in behind.items()):
            return sum(end[tp] - at for tp, at in behind.items())
        return _committed_records(consumer, behind, end)
    finally:
        consumer.close()


def _partitions(consumer: KafkaConsumer, topics: Iterable[str]) -> list[TopicPartition]:
    return [TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t) or ()]


def _committed_records(
    consumer: KafkaConsumer, behind: dict[TopicPartition, int], end: dict[TopicPartition, int]
) -> int:
    """The committed records between each partition's committed offset and its end."""
    consumer.assign(list(behind))
    for tp, at in behind.items():
        consumer.seek(tp, at)
    count = 0
    deadline = time.monotonic() + 60
    while any(consumer.position(tp) < end[tp] for tp in behind):
        if time.monotonic() > deadline:
            return max(count, 1)  # not read to the end: not drained
        for tp, records in consumer.poll(timeout_ms=200).items():
            count += sum(r.offset < end[tp] for r in records)
    return count
