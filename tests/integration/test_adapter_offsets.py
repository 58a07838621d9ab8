"""The adapters' raw topic offsets carried over a switch of the processing
guarantee (streams/adapter_offsets.py), on a real broker: Faust's group is
PREFIXworker at least once and PREFIXadapters exactly once, and a group with
no offsets would read the raw topics from their start again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.errors import (
    CoordinatorLoadInProgressError,
    CoordinatorNotAvailableError,
    NoError,
    NotCoordinatorError,
)
from kafka.structs import OffsetAndMetadata

from bench.harness import wait_until
from streams.adapter_offsets import carry_adapter_offsets
from streams.kafka_io import ensure_topics
from streams.settings import Settings
from streams.topics import Topics
from tests.integration.conftest import Worker

pytestmark = pytest.mark.integration
PARTITIONS = 4  # the worker's default: it refuses others


@pytest.fixture
def client(broker: str, prefix: str) -> Iterator[KafkaAdminClient]:
    ensure_topics(broker, Topics(prefix), PARTITIONS, retention_ms=3_600_000)
    admin = KafkaAdminClient(bootstrap_servers=broker)
    yield admin
    admin.close()


# On a broker just started, the group coordinator answers only once the
# offsets topic is made (the suite's first test of groups met this in CI).
COORDINATOR_AWAY = (
    CoordinatorNotAvailableError,
    NotCoordinatorError,
    CoordinatorLoadInProgressError,
)


def _commit(client: KafkaAdminClient, group: str, offsets: dict[TopicPartition, int]) -> None:
    def committed() -> dict[TopicPartition, Any] | None:
        done: dict[TopicPartition, Any] = client.alter_group_offsets(
            group, {tp: OffsetAndMetadata(at, "", -1) for tp, at in offsets.items()}
        )
        # A coordinator still loading, or just moved, answers each partition
        # with a retriable error.
        if any(e is not NoError and e.retriable for e in done.values()):
            return None
        assert all(e.errno == 0 for e in done.values()), done
        return done

    wait_until(committed, f"offsets committed for {group}", unready=COORDINATOR_AWAY)


def _offsets(client: KafkaAdminClient, group: str) -> dict[TopicPartition, int]:
    found = wait_until(
        lambda: client.list_group_offsets({group: None}),
        f"offsets of {group}",
        unready=COORDINATOR_AWAY,
    ).get(group, {})
    return {tp: o.offset for tp, o in found.items() if o.offset >= 0}


def test_a_worker_switched_to_exactly_once_goes_on_where_the_adapters_were(
    broker: str, prefix: str, client: KafkaAdminClient, tmp_path: Path
) -> None:
    """The adapters read the raw topics at least once (group PREFIXworker);
    a worker started exactly once has its Faust group PREFIXadapters begin at
    those offsets, not at the start of the raw topics."""
    raw = Topics(prefix).raw("okta")
    read = {TopicPartition(raw, 0): 5, TopicPartition(raw, 1): 3}
    _commit(client, f"{prefix}worker", read)
    worker = Worker(
        broker,
        prefix,
        tmp_path / "state",
        tmp_path / "w.log",
        env={"SEPWATCH_PROCESSING_GUARANTEE": "exactly_once"},
    )
    try:
        worker.wait_ready()
        assert _offsets(client, f"{prefix}adapters") == read
    finally:
        worker.stop()


def test_switching_back_carries_only_what_the_other_group_is_ahead_on(
    broker: str, prefix: str, client: KafkaAdminClient
) -> None:
    """Back to at least once, PREFIXworker holds the offsets it had before
    the first switch: those PREFIXadapters moved past are carried, one it is
    ahead on stays; a second start carries nothing."""
    raw = Topics(prefix).raw("okta")
    p0, p1 = TopicPartition(raw, 0), TopicPartition(raw, 1)
    _commit(client, f"{prefix}worker", {p0: 5, p1: 9})
    _commit(client, f"{prefix}adapters", {p0: 8, p1: 4})
    at_least_once = Settings(
        broker=broker, topic_prefix=prefix, processing_guarantee="at_least_once"
    )
    assert carry_adapter_offsets(at_least_once) == {p0: 8}
    assert _offsets(client, f"{prefix}worker") == {p0: 8, p1: 9}
    assert carry_adapter_offsets(at_least_once) == {}


def test_a_group_with_members_keeps_its_offsets(
    broker: str, prefix: str, client: KafkaAdminClient
) -> None:
    """A worker of the same guarantee (here at least once, the group
    PREFIXworker) already reading (the group has members): nothing is
    carried, and the start goes on."""
    raw = Topics(prefix).raw("okta")
    p0 = TopicPartition(raw, 0)
    _commit(client, f"{prefix}adapters", {p0: 6})
    member = KafkaConsumer(
        raw, bootstrap_servers=broker, group_id=f"{prefix}worker", enable_auto_commit=False
    )
    try:
        wait_until(lambda: bool(member.poll(timeout_ms=200) or member.assignment()), "joined")
        at_least_once = Settings(
            broker=broker, topic_prefix=prefix, processing_guarantee="at_least_once"
        )
        assert carry_adapter_offsets(at_least_once) == {}
    finally:
        member.close()
    assert p0 not in _offsets(client, f"{prefix}worker")
