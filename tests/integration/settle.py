"""Waits on what a test means, instead of fixed sleeps.

A worker's consumer groups commit an offset only once what the records before
it became is on the broker (or in Elasticsearch, or delivered): the
validator's stage records and dead letters, the stages' findings and
changelogs, the sink's documents, the router's notifications. So once a group
has committed, on every partition, the end offsets its topics had when the
test asked, everything those records cause has been written: a duplicate or
an extra finding would already be there to read. The validators' idle marks
keep arriving on the stage topics, so "lag 0" is a matter of phase; the end
offsets are taken once, when asked.
"""

from __future__ import annotations

import os
import time
from collections.abc import Collection, Iterable

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from bench.harness import wait_until
from streams.kafka_connection import Broker, connection
from streams.kafka_io import admin
from streams.settings import Settings
from streams.topics import STAGES, Topics

Offsets = dict[TopicPartition, int]


def end_offsets(broker: Broker, names: Iterable[str]) -> Offsets:
    consumer = KafkaConsumer(**connection(broker).client_options(), enable_auto_commit=False)
    try:
        parts = [
            TopicPartition(t, p) for t in names for p in consumer.partitions_for_topic(t) or ()
        ]
        return {tp: n for tp, n in consumer.end_offsets(parts).items() if n > 0}
    finally:
        consumer.close()


def committed(client: KafkaAdminClient, group: str) -> Offsets:
    offsets = client.list_group_offsets({group: None}).get(group, {})
    return {tp: meta.offset for tp, meta in offsets.items()}


def committed_past(
    broker: Broker, group: str, names: Iterable[str], timeout: float = 120, step: float = 0.2
) -> None:
    """Wait until `group` has committed, on every partition of `names`, at
    least the end offset it has now; fail naming the partitions behind."""
    ends = end_offsets(broker, names)
    client = admin(broker)
    try:
        deadline = time.monotonic() + timeout
        while True:
            done = committed(client, group)
            behind = {
                tp: (done.get(tp, 0), end) for tp, end in ends.items() if done.get(tp, 0) < end
            }
            # A small gap may be commit markers only (records_between).
            if not behind or (
                all(e - c <= 100 for c, e in behind.values())
                and not records_between(broker, behind)
            ):
                return
            if time.monotonic() > deadline:
                shown = ", ".join(
                    f"{tp.topic}:{tp.partition} {c}/{e}" for tp, (c, e) in behind.items()
                )
                raise AssertionError(f"{group} not committed to the end in {timeout} s: {shown}")
            time.sleep(step)
    finally:
        client.close()


def records_between(broker: Broker, spans: dict[TopicPartition, tuple[int, int]]) -> int:
    """Committed records in [from, to) of each partition. A group that has
    read everything a transaction wrote commits the offset after its last
    record, one short of the commit marker that follows it (exactly once,
    docs/exactly-once.md): offsets alone would wait on it forever."""
    consumer = KafkaConsumer(
        **connection(broker).client_options(),
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    try:
        consumer.assign(list(spans))
        for tp, (start, _) in spans.items():
            consumer.seek(tp, start)
        count = 0
        deadline = time.monotonic() + 30
        while any(consumer.position(tp) < end for tp, (_, end) in spans.items()):
            if time.monotonic() > deadline:
                return max(count, 1)  # not read to the end: not settled
            for tp, records in consumer.poll(timeout_ms=200).items():
                count += sum(r.offset < spans[tp][1] for r in records)
        return count
    finally:
        consumer.close()


def adapters_group(prefix: str) -> str:
    """The group of the worker's adapters' agent (Faust's own group): with
    exactly once the stages' consumer owns `PREFIXworker` (streams/topology.py),
    so Faust's is `PREFIXadapters`. The workers the tests start inherit this
    process's environment, so its guarantee is theirs."""
    default = Settings.model_fields["processing_guarantee"].default
    guarantee = os.environ.get("SEPWATCH_PROCESSING_GUARANTEE", default)
    return f"{prefix}{'adapters' if guarantee == 'exactly_once' else 'worker'}"


def settled(
    broker: Broker,
    topics: Topics,
    timeout: float = 120,
    raw: Iterable[str] = (),
    sink: bool = False,
    alerts: bool = False,
) -> None:
    """Wait until everything produced so far has been judged and written:
    the raw vendor topics `raw` adapted (the worker's group), the inputs
    routed (the validator's), the stage records judged (the worker's), and,
    with `sink` or `alerts`, the findings indexed or notified."""
    prefix = topics.prefix
    if raw:
        committed_past(broker, adapters_group(prefix), [topics.raw(s) for s in raw], timeout)
    committed_past(broker, f"{prefix}validator", topics.inputs, timeout)
    committed_past(broker, f"{prefix}worker", [topics.stage(s) for s in STAGES], timeout)
    if sink:
        committed_past(broker, f"{prefix}es-sink", [topics.findings], timeout)
    if alerts:
        committed_past(broker, f"{prefix}alerts", [topics.findings], timeout)


def members_holding(broker: Broker, group: str, names: Collection[str]) -> list[int]:
    """How many partitions of `names` each member of `group` is assigned now
    (a Faust worker is also assigned changelogs and raw topics: not counted)."""
    client = admin(broker)
    try:
        described = client.describe_groups([group])[group]
    finally:
        client.close()
    return [
        sum(
            len(a["partitions"])
            for a in (m.get("member_assignment") or {}).get("assigned_partitions", [])
            if a["topic"] in names
        )
        for m in described["members"]
    ]


def each_holds_partitions(
    broker: Broker, group: str, names: Collection[str], members: int, timeout: float = 90
) -> None:
    """Wait until `group` has `members` members, each holding a partition of `names`."""

    def spread() -> bool:
        held = members_holding(broker, group, names)
        return len(held) == members and all(n > 0 for n in held)

    wait_until(spread, f"{members} members of {group}, each holding partitions", timeout)
