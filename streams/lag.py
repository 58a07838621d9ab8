"""How far an aiokafka consumer trails its partitions, for /metrics."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError


async def records_behind_by_topic(consumer: AIOKafkaConsumer) -> dict[str, int] | None:
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


async def records_behind(consumer: AIOKafkaConsumer) -> int | None:
    """All of records_behind_by_topic."""
    by_topic = await records_behind_by_topic(consumer)
    return None if by_topic is None else sum(by_topic.values())
