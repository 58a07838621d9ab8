"""How far consumers trail their partitions: one measurement, two vantage points.

- From inside, for /metrics: the records on a live consumer's assigned
  partitions it has not yet been handed (`records_behind_by_topic`), for an
  aiokafka consumer or Faust's, which answers the same two questions.
- From outside, for the benchmarks and operators: the records a consumer
  group has not yet committed (`uncommitted`)."""

from __future__ import annotations

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


def uncommitted(broker: Broker, group: str, topics: Iterable[str]) -> int:
    """Records of `topics` the consumer group `group` has not committed yet,
    read from outside the group (it is not joined)."""
    consumer = KafkaConsumer(
        **connection(broker).client_options(), group_id=group, enable_auto_commit=False
    )
    try:
        parts = [
            TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t) or ()
        ]
        end = consumer.end_offsets(parts)
        return sum(end[tp] - (consumer.committed(tp) or 0) for tp in parts)
    finally:
        consumer.close()
