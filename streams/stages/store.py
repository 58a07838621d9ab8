"""What a stage record changes, on its way to the changelogs: the stores of
one stage partition (PartitionStore), and their changes written once per key
per record, each delivery watched (TableChanges)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any, TypeVar

from faust.utils import json as faust_json

from streams.exactly_once import OwnTable

log = logging.getLogger("sepwatch")
_T = TypeVar("_T")


class Undelivered(RuntimeError):
    """A write the broker did not take (a finding, a changelog record, a dead
    letter): no stage offset is committed from then on, so the records that
    produced it are judged again by the worker that takes over."""


class TableChanges:
    """What judging one stage record writes: its findings and dead letters
    as it goes, and its table changes, written to the changelogs once per
    key when the record is done.

    Faust writes a changelog record for every `table[key] = value`, each
    through its per-message machinery; a batch of events changes the same
    keys again and again (a device's postures, a user's accesses), and that
    machinery was the worker's largest cost. The stores are changed at once
    (reads see the change); the changelog gets each key's last value, in the
    format Faust writes and restores (JSON key and value, None deletes), in
    one Kafka batch per changelog partition, before the record's offset can
    be committed (see _changelog_before_commit, which awaits `settled`).

    A record's changes reach several changelog partitions, and a worker
    killed while they are under way leaves some on the broker and not others.
    The partition's clocks (the meta table: the engine's largest event time,
    the sources' clocks, end-of-input markers) go last, once every other
    change of the record is on the broker: a restore never holds a clock
    ahead of the stores it came with. The record is then judged again by the
    worker that takes over with the clocks it had, each event late or not as
    the first time, its duplicates recognised. With the clocks first, a kill
    between the two left a clock past events whose stores were lost: judged
    again, they were late, joined nothing, and their findings were never made
    (a SEP-004 lost in CI's fault run).

    Every write's delivery is watched: one the broker does not take makes
    every later commit fail (`settled` raises) and no changelog record is
    written after it, since a restore would read it even though the input
    offset before it is never committed (a pending decision's tombstone
    without its finding would lose the finding for good). Findings are sent
    through Faust's topic machinery no more: it logs a failed delivery as a
    WARNING and commits past it (issue 19)."""

    def __init__(self, producer: Any, clocks: frozenset[str] = frozenset()) -> None:
        self.producer = producer  # Faust's; its Kafka client sends the batches
        self.clocks = clocks  # changelogs written once the others are delivered
        # (changelog topic, partition) -> key -> value, None to delete.
        self.changed: dict[tuple[str, int], dict[str, Any]] = {}
        self.submitting: set[asyncio.Future[Any]] = set()
        self.clocks_sending: asyncio.Future[None] | None = None  # the last record's clocks
        self.unsent: set[asyncio.Future[Any]] = set()
        self.failed: BaseException | None = None

    def note(self, topic: str, partition: int, key: str, value: Any) -> None:
        keys = self.changed.get((topic, partition))
        if keys is None:
            keys = self.changed[(topic, partition)] = {}
        keys[key] = value

    async def publish(
        self, topic: str, key: bytes | None, value: bytes, delivered: Callable[[], None]
    ) -> asyncio.Future[Any] | None:
        """Send one record; `delivered` runs once the broker has it. The
        returned future settles with the delivery (None: not sent at all)."""
        self._refuse_after_failure()
        try:
            fut: asyncio.Future[Any] = await self.producer._ensure_producer().send(
                topic, value, key=key
            )
        except Exception as exc:  # the client refused it outright (too large, closed)
            self._failure(exc, topic)
            return None
        self.track(fut, topic)

        def settled(f: asyncio.Future[Any]) -> None:
            if not (f.cancelled() or f.exception()):
                delivered()

        fut.add_done_callback(settled)
        return fut

    async def write(self) -> None:
        if not self.changed:
            return
        self._refuse_after_failure()
        changed, self.changed = self.changed, {}
        clocks = {tp: keys for tp, keys in changed.items() if tp[0] in self.clocks}
        stores = {tp: keys for tp, keys in changed.items() if tp[0] not in self.clocks}
        # Until every batch is handed to the client its future is unknown: a
        # commit meanwhile waits for the whole write (settled), or it could
        # cover the record before its changes are sent.
        sent = await self._tracked(self._submit(stores))
        if clocks:
            # The next record is judged meanwhile; the clocks go out in the
            # records' order, each after its own record's stores.
            self.clocks_sending = self._tracked(
                self._clocks_after(sent, clocks, self.clocks_sending)
            )

    def _tracked(self, work: Awaitable[_T]) -> asyncio.Future[_T]:
        task = asyncio.ensure_future(work)
        self.submitting.add(task)
        task.add_done_callback(self.submitting.discard)
        return task

    async def _clocks_after(
        self,
        sent: list[asyncio.Future[Any]],
        clocks: dict[tuple[str, int], dict[str, Any]],
        before: asyncio.Future[Any] | None,
    ) -> None:
        await asyncio.gather(*sent, *([before] if before else []), return_exceptions=True)
        if self.failed is None:  # nothing is written after a write that failed
            await self._submit(clocks)

    async def settled(self) -> None:
        """Every write made so far is on the broker, or this raises
        Undelivered; those of a record still being judged are not awaited:
        its offset is not committed."""
        while self.submitting:
            await asyncio.gather(*list(self.submitting), return_exceptions=True)
        if self.unsent:
            await asyncio.gather(*list(self.unsent), return_exceptions=True)
        self._refuse_after_failure()

    def _refuse_after_failure(self) -> None:
        if self.failed is not None:
            raise Undelivered(
                f"a write was not delivered ({type(self.failed).__name__}: {self.failed}); "
                "no stage offset is committed past it"
            ) from self.failed

    def _failure(self, exc: BaseException, topic: str) -> None:
        if self.failed is None:
            self.failed = exc
            log.error(
                "a record for %s was not delivered (%s: %s): this worker commits no stage "
                "offset from now on; restart it once the cause is fixed, and the records "
                "since the last commit are judged again",
                topic,
                type(exc).__name__,
                exc,
            )

    def track(self, fut: asyncio.Future[Any], topic: str) -> None:
        self.unsent.add(fut)

        def done(f: asyncio.Future[Any]) -> None:
            self.unsent.discard(f)
            exc = f.exception() if not f.cancelled() else asyncio.CancelledError()
            if exc is not None:
                self._failure(exc, topic)

        fut.add_done_callback(done)

    async def _submit(
        self, changed: dict[tuple[str, int], dict[str, Any]]
    ) -> list[asyncio.Future[Any]]:
        """Hand the batches to the client; their deliveries."""
        client = self.producer._ensure_producer()
        sent: list[asyncio.Future[Any]] = []
        try:
            for (topic, partition), keys in changed.items():
                batch = client.create_batch()
                for key, value in keys.items():
                    k = faust_json.dumps(key)
                    v = None if value is None else faust_json.dumps(value)
                    if batch.append(key=k, value=v, timestamp=None) is None:  # full
                        sent.append(await self._send(client, batch, topic, partition))
                        batch = client.create_batch()
                        batch.append(key=k, value=v, timestamp=None)  # a first always fits
                sent.append(await self._send(client, batch, topic, partition))
        except Exception as exc:  # the client refused a batch outright
            self._failure(exc, "a changelog")
            raise
        return sent

    async def _send(
        self, client: Any, batch: Any, topic: str, partition: int
    ) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = await client.send_batch(batch, topic, partition=partition)
        self.track(fut, topic)
        return fut


class PartitionStore(MutableMapping[str, Any]):
    """One partition's slice of a Faust table: keys carry the partition, so
    engines of several partitions in one worker never share an entry. Changes
    go to the table's store at once and to its changelog with `changes`."""

    def __init__(self, table: Any, partition: int, changes: TableChanges) -> None:
        self._data = table.data  # the store, below Faust's per-key changelog
        self._changelog = (
            table.changelog
            if isinstance(table, OwnTable)
            else table.changelog_topic.get_topic_name()
        )
        self._partition = partition
        self._prefix = f"{partition}|"
        self._changes = changes

    def __getitem__(self, key: str) -> Any:
        value = self._data.get(self._prefix + key)
        if value is None:
            raise KeyError(key)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        value = self._data.get(self._prefix + key)
        return default if value is None else value

    def __setitem__(self, key: str, value: Any) -> None:
        self._data[self._prefix + key] = value
        self._changes.note(self._changelog, self._partition, self._prefix + key, value)

    def __delitem__(self, key: str) -> None:
        del self._data[self._prefix + key]
        self._changes.note(self._changelog, self._partition, self._prefix + key, None)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and (self._prefix + key) in self._data

    def __iter__(self) -> Iterator[str]:
        n = len(self._prefix)
        return iter([k[n:] for k in list(self._data.keys()) if k.startswith(self._prefix)])

    def __len__(self) -> int:
        return sum(1 for _ in self)
