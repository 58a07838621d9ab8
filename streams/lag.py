"""How far an aiokafka consumer trails its partitions, for /metrics."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError


async def records_behind(consumer: AIOKafkaConsumer) -> int | None:
    """Records on the assigned partitions not yet returned to the consumer;
    None while a rebalance leaves nothing to measure."""
    behind = 0
    try:
        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            if high is not None:
                behind += max(0, high - await consumer.position(tp))
    except (KafkaError, AssertionError):
        return None
    return behind
