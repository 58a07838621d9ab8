"""The order in which a stage record's table changes reach the changelogs:
its clocks (the meta table) only once every other change is delivered, so a
worker killed in between never leaves a restore with a clock ahead of its
stores (streams.stages.store.TableChanges)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from streams.stages.store import TableChanges, Undelivered

META = "t.user-meta-changelog"
PENDING = "t.user-pending-changelog"
ACCESSES = "t.user-accesses-changelog"


class Batch:
    def __init__(self) -> None:
        self.keys: list[bytes] = []

    def append(self, *, key: bytes, value: bytes | None, timestamp: None) -> int:
        self.keys.append(key)
        return len(self.keys)


class Client:
    """The Kafka client's batch interface; each delivery settles when the test says."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int, list[bytes]]] = []
        self.deliveries: list[asyncio.Future[Any]] = []

    def create_batch(self) -> Batch:
        return Batch()

    async def send_batch(self, batch: Batch, topic: str, partition: int) -> asyncio.Future[Any]:
        self.sent.append((topic, partition, batch.keys))
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.deliveries.append(fut)
        return fut


class Producer:
    def __init__(self) -> None:
        self.client = Client()

    def _ensure_producer(self) -> Client:
        return self.client


async def _until(condition: Any) -> None:
    while not condition():
        await asyncio.sleep(0)


def _changes() -> tuple[TableChanges, Client]:
    producer = Producer()
    changes = TableChanges(producer, frozenset({META}))
    # The engine moves its clock first (max_ts), then changes its stores.
    changes.note(META, 3, "3|max_ts", 1.0)
    changes.note(PENDING, 3, "3|d:x", ["d", {}])
    changes.note(ACCESSES, 3, "3|u", [])
    changes.note(META, 3, "3|source_clocks", {"in:3": 1.0})
    return changes, producer.client


def test_the_clocks_are_sent_only_once_the_stores_are_delivered() -> None:
    async def run() -> None:
        changes, client = _changes()
        await changes.write()  # the next record is judged meanwhile
        assert {topic for topic, _, _ in client.sent} == {PENDING, ACCESSES}
        settled = asyncio.ensure_future(changes.settled())
        client.deliveries[0].set_result(None)
        for _ in range(20):
            await asyncio.sleep(0)
        assert len(client.sent) == 2, "a clock sent while a store's change was not delivered"
        assert not settled.done()
        client.deliveries[1].set_result(None)
        await _until(lambda: len(client.sent) == 3)
        assert client.sent[2] == (META, 3, [b'"3|max_ts"', b'"3|source_clocks"'])
        assert not settled.done(), "settled before the clocks were delivered"
        client.deliveries[2].set_result(None)
        await settled

    asyncio.run(run())


def test_the_records_clocks_go_out_in_their_order() -> None:
    async def run() -> None:
        changes, client = _changes()
        await changes.write()
        changes.note(PENDING, 3, "3|d:z", ["d", {}])
        changes.note(META, 3, "3|max_ts", 2.0)
        await changes.write()
        assert [t for t, _, _ in client.sent] == [PENDING, ACCESSES, PENDING]
        client.deliveries[2].set_result(None)  # the second record's store first
        for _ in range(20):
            await asyncio.sleep(0)
        assert len(client.sent) == 3, "a later record's clock before an earlier one's"
        client.deliveries[0].set_result(None)
        client.deliveries[1].set_result(None)
        await _until(lambda: len(client.sent) == 5)
        assert [t for t, _, _ in client.sent[3:]] == [META, META]
        assert client.sent[4][2] == [b'"3|max_ts"']

    asyncio.run(run())


def test_a_store_change_not_delivered_keeps_the_clocks_back_and_stops_the_commits() -> None:
    async def run() -> None:
        changes, client = _changes()
        await changes.write()
        client.deliveries[0].set_exception(TimeoutError("broker gone"))
        client.deliveries[1].set_result(None)
        with pytest.raises(Undelivered):
            await changes.settled()
        assert [topic for topic, _, _ in client.sent] == [PENDING, ACCESSES]
        changes.note(PENDING, 3, "3|d:z", None)
        with pytest.raises(Undelivered):
            await changes.write()

    asyncio.run(run())


def test_a_record_that_moves_no_clock_waits_for_nothing() -> None:
    async def run() -> None:
        producer = Producer()
        changes = TableChanges(producer, frozenset({META}))
        changes.note(PENDING, 0, "0|d:y", None)
        await changes.write()
        assert [topic for topic, _, _ in producer.client.sent] == [PENDING]

    asyncio.run(run())
