"""Faust 0.15 compatibility: what its consumer does at a rebalance, made safe
for the stages (see seek_before_fetch). The aiokafka driver's private workings
(its thread, `_paused_partitions`, `_read_offset`) are what this wraps."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any, cast

import faust
from aiokafka.errors import IllegalStateError
from aiokafka.structs import TopicPartition
from faust.transport.drivers.aiokafka import Consumer as FaustKafkaConsumer

log = logging.getLogger("sepwatch")


def seek_before_fetch(app: faust.App) -> None:
    """Fetch no record of a stream partition between Faust's seek to the
    committed offsets and the clearing of the agents' queues that follows it,
    and seek every stream partition, even one with no offset committed.

    At the end of a rebalance Faust 0.15 resumes the stream partitions, seeks
    them to their committed offsets (`perform_seek`, one broker round trip per
    partition, with the flow active), then resumes its flow control, which
    clears the agents' queues. Two things then lose records:
    - what the fetcher reads during the seek is queued and cleared while the
      read offset is already past it, so it is never read again;
    - the Kafka client seeks only to a committed offset above 0, so a
      partition with no commit yet (a new group member, or the successor of a
      worker killed before its first commit) keeps its position after records
      that were queued and cleared.
    A killed worker's successor, or a second worker joining, then never judged
    some events and never flushed at the end of input (CI, issue 7).

    Here the seek pauses the stream partitions being fetched, seeks those with
    no commit (or 0) to their earliest offset as a fresh start would (the
    workers read from `earliest`), and resumes them with the consumer's flow,
    which Faust resumes right after clearing the queues. Records read before
    the seek are read again from the committed offset: duplicates, which the
    engines recognise, rather than losses.

    Pausing is not enough: Faust's pause only stops it asking for the
    partition, and a fetch already under way in the consumer's thread hands
    its records over after the seek, with the client's position moved past
    them. Queued, they were then cleared with the agents' queues, and a worker
    that took over a killed one's partitions never judged those records (and a
    later record's offset made Faust count them as a gap and commit past
    them). So a fetch that began before a seek of a partition hands none of
    that partition's records over: the partition is read again from where
    the seek put it when the position has moved past that. This happens at
    nearly every takeover; the worker logs it at INFO.

    Faust's fetch loop also seeks, when a rebalance stops the flow under a
    fetch, and could overlap the recovery's seek or be overtaken by the
    flow's resumption, leaving its partitions paused. Seeks here run one at a
    time, and one that the flow's resumption overtook resumes its partitions
    itself (a guard from reading Faust's code, not a fault seen).

    Faust pauses a partition only in its own books: the Kafka client goes on
    fetching it, and a fetch begun while the partition was active hands its
    records over after the pause, moving the client's position past them,
    while Faust drops them (not active) before any code here sees them. When
    that handover came after the recovery's seek of the partition, the
    partition went on from there: a successor that took a killed worker's
    partitions never read the records between its committed offset and that
    position (CI, issue 19's delivery test). So a pause and a resume here
    also pause and resume the partition in the Kafka client, which keeps a
    paused partition's position and fetches nothing for it (aiokafka's
    `pause`); a seek, queued to the client after the pause, comes after
    any handover."""
    _SeekBeforeFetch(app).install()


class _SeekBeforeFetch:
    """The consumer's seek, pause, resume and fetch, wrapped (seek_before_fetch)."""

    def __init__(self, app: faust.App) -> None:
        self.app = app
        # The aiokafka driver's consumer (kafka:// brokers).
        self.consumer = consumer = cast(FaustKafkaConsumer, app.consumer)
        self.perform_seek = consumer.perform_seek
        self.pause_partitions = consumer.pause_partitions
        self.resume_partitions = consumer.resume_partitions
        self.resume_flow = consumer.resume_flow
        self.getmany = consumer.getmany
        self.thread = consumer._thread  # the Kafka client lives on this thread's loop
        # Stream partition -> its read offset once sought, restored when it resumes:
        # a record handed out before the pause may set it later, past records to re-read.
        self.sought: dict[Any, int | None] = {}
        self.one_at_a_time = asyncio.Lock()  # the fetch loop's seek and the recovery's
        self.resumed = 0  # resumptions of the flow so far
        self.seeks: Counter[Any] = Counter()  # seeks of each stream partition so far
        self.targets: dict[Any, int] = {}  # where the last seek put each stream partition

    def install(self) -> None:
        consumer = self.consumer
        consumer.getmany = self.getmany_since_seek  # type: ignore[method-assign]
        consumer.perform_seek = self.seek_paused  # type: ignore[method-assign]
        consumer.pause_partitions = self.pause  # type: ignore[method-assign]
        consumer.resume_partitions = self.resume  # type: ignore[method-assign]
        consumer.resume_flow = self.resume_flow_and_sought  # type: ignore[method-assign]

    def stream_partitions(self) -> set[Any]:
        changelogs = self.app.tables.changelog_topics
        return {tp for tp in self.consumer.assignment() if tp.topic not in changelogs}

    def in_client(self, tps: set[Any], *, paused: bool) -> None:
        """Pause or resume the partitions in the Kafka client too, as Faust just
        did in its own books; on the client's own loop, where its futures live."""
        thread = self.thread
        if not thread.thread_loop.is_closed():
            thread.thread_loop.call_soon_threadsafe(_pause_in_client, thread, tps, paused)

    async def paused_in_client(self, tps: set[Any]) -> None:
        _pause_in_client(self.thread, tps, True)

    async def seek_paused(self) -> None:
        consumer = self.consumer
        async with self.one_at_a_time:
            resumed_before = self.resumed
            streams = self.stream_partitions()
            fetching = {tp for tp in streams if tp not in consumer._paused_partitions}
            self.pause_partitions(fetching)
            # Done in the client before the seek is queued there: a handover
            # of their records, if any, comes before the seek, which undoes it.
            await self.thread.call_thread(self.paused_in_client, fetching)
            await self.perform_seek()
            read_offset = consumer._read_offset
            unsought = [tp for tp in streams if not read_offset.get(tp)]
            if unsought:
                for tp, offset in (await consumer.earliest_offsets(*unsought)).items():
                    await consumer.seek(tp, offset)
            self.seeks.update(streams)
            self.targets.update({tp: read_offset.get(tp) or 0 for tp in streams})
            # An earlier seek's partitions, still held, take this seek's offsets.
            held = fetching | (self.sought.keys() & streams)
            self.sought.update({tp: read_offset.get(tp) for tp in held})
            if self.resumed != resumed_before:
                # The flow resumed (and the queues were cleared) during this seek:
                # no later resumption would release these partitions.
                self.resume_sought()

    def pause(self, tps: Any) -> None:
        tps = set(tps)
        # Faust pausing a partition outranks a resumption deferred here.
        for tp in tps:
            self.sought.pop(tp, None)
        self.pause_partitions(tps)
        self.in_client(tps, paused=True)

    def resume(self, tps: Any) -> None:
        tps = set(tps)
        self.resume_partitions(tps)
        self.in_client(tps, paused=False)

    def resume_sought(self) -> None:
        consumer = self.consumer
        due = {tp: offset for tp, offset in self.sought.items() if tp in consumer.assignment()}
        self.sought.clear()
        consumer._read_offset.update(due)
        consumer.resume_partitions(due)

    def resume_flow_and_sought(self) -> None:
        self.resume_flow()
        self.resumed += 1
        if self.sought:
            self.resume_sought()

    async def getmany_since_seek(self, timeout: float) -> AsyncIterator[tuple[Any, Any]]:
        """Faust's fetch, less the records of a partition sought since the
        fetch began: they come from before the seek, or moved the Kafka
        client's position on past it; the partition is read again from where
        the seek put it."""
        before = self.seeks.copy()
        stale: set[Any] = set()
        async for tp, message in self.getmany(timeout=timeout):
            if self.seeks[tp] == before[tp]:
                yield tp, message
                continue
            if tp in stale:
                continue  # the rest of the partition's records in this batch
            stale.add(tp)
            # A fetch under way in the consumer's thread during the seek hands its
            # records over after it. Queued, they would be cleared with the agents'
            # queues while the client's position stays past them.
            # Back to where the seek put it, not to this record: records of the
            # batch handed over before the seek are cleared with the queues too.
            await self.read_again(tp, min(self.targets.get(tp, message.offset), message.offset))

    async def read_again(self, tp: Any, target: int) -> None:
        """From `target`, if the client's position has moved past it."""
        try:
            position = await self.consumer.position(tp)
        except IllegalStateError:
            return  # no longer ours
        if position is None or target < position:
            log.info(
                "%s:%s: a fetch begun before its seek took it to %s; read again from %s",
                tp.topic,
                tp.partition,
                position,
                target,
            )
            await self.consumer.seek(tp, target)
            self.seeks[tp] += 1
            self.targets[tp] = target


def _pause_in_client(thread: Any, tps: set[Any], paused: bool) -> None:
    """On the consumer thread: aiokafka's pause or resume of those of `tps`
    still assigned (a rebalance may have taken some since)."""
    client = thread._consumer  # None until the consumer starts
    if client is None:
        return
    assigned = client.assignment()
    here = [TopicPartition(tp.topic, tp.partition) for tp in tps]
    here = [tp for tp in here if tp in assigned]
    if paused:
        client.pause(*here)
    else:
        client.resume(*here)
