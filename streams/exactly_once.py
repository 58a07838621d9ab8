"""Exactly once on the stage path (SEPWATCH_PROCESSING_GUARANTEE=exactly_once).

The stage topics are read by an aiokafka consumer of the group `PREFIXworker`
(Faust's agents are not used for them: docs/exactly-once.md says why). Each
assigned stage partition has its own transactional producer, transactional id
`PREFIXstage-<stage>-<partition>`; starting it (`init_transactions`) when the
partition is assigned fences any earlier holder: a worker frozen past its
session and resumed fails its next write or commit and writes nothing more.

Per stage partition, one transaction holds the findings and dead letters of
the partition's records judged over 0.1 s (once it is caught up) to 1 s (a
backlog), the changes they made to its tables (each key's last value, in the
changelog format Faust restores) and the partition's next offset; the
partitions commit concurrently, each while the others are judged. A
transaction that fails is aborted, the partition's tables are read again from
the changelogs (read committed) and the partition is read again from its
committed offset: nothing half-judged survives.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.errors import IllegalStateError, ProducerFenced
from aiokafka.structs import ConsumerRecord, TopicPartition
from faust.utils import json as faust_json

from detectors import Stage
from streams import metrics
from streams.lag import records_behind_by_topic
from streams.settings import Settings
from streams.topics import STORES, Topics

log = logging.getLogger("sepwatch")

# How long a stage partition's transaction takes in fetches before it
# commits while its records keep coming: each commit costs round trips and a
# marker in every partition written, whatever the transaction holds. As often
# as the at-least-once path commits (Faust's commit interval, build_app).
COMMIT_SECONDS = 1.0
# ... and once it has judged everything its partition held at the last fetch:
# read-committed readers (the sinks, the alerts) see a finding no later than
# this after it is decided, unless a backlog is being worked off. Kafka
# Streams' commit interval under exactly once.
CAUGHT_UP_SECONDS = 0.1
# Finding ids each stage partition keeps (Written), the newest. A finding is
# decided again only for a stage record the validator routed twice: it routes
# again what it routed after its last commit (a second's worth), once it or
# the validator taking its partitions over starts, a session timeout later at
# most. The copy's findings follow the first's within the findings the
# partition wrote meanwhile: a count, whatever the event clock says (a time
# bound, window plus lateness, would depend on the events' clock, which the
# copies do not move). Findings are rare among events; a few thousand ids in
# that gap would already be a heavy day. About 60 bytes an id.
WRITTEN_KEPT = 20_000
# Pauses before a stage partition whose transaction failed is judged again.
RETRY_SECONDS = (0.5, 1.0, 2.0, 5.0, 10.0)

# Judges one stage record (an event with .message, .key, .value, .headers),
# adding the futures of what it sent to the list.
JudgeRecord = Callable[[Any, list[asyncio.Future[Any]]], Awaitable[None]]


@dataclass
class OwnTable:
    """A stage table kept here rather than by Faust: its store and its
    changelog's name, as a Faust table's `data` and topic."""

    changelog: str
    data: dict[str, Any] = field(default_factory=dict)


class Runner(Protocol):
    """What is used here of a stage's runner (streams.stages.runner.StageRunner)."""

    tables: dict[str, Any]
    changes: Any  # streams.stages.store.TableChanges: `changed`, by (changelog, partition)

    def keep_clocks(self) -> None: ...

    def forget(self, partitions: set[int]) -> None: ...


# A runner's judging of one record, its outputs sent with the publish given.
JudgeFor = Callable[[Any, Callable[..., Awaitable[Any]]], JudgeRecord]


@dataclass(frozen=True, slots=True)
class _Message:
    """What the judging reads of a stage record's position (Faust's names)."""

    topic: str
    partition: int
    offset: int
    timestamp: float  # seconds, as Faust gives it


@dataclass(frozen=True, slots=True)
class _Event:
    message: _Message
    key: bytes | None
    value: bytes | None
    headers: Any

    @classmethod
    def of(cls, record: ConsumerRecord[bytes, bytes]) -> _Event:
        message = _Message(record.topic, record.partition, record.offset, record.timestamp / 1000)
        return cls(message, record.key, record.value, record.headers)


@dataclass
class Written:
    """Finding ids a stage partition has written, kept in its meta table: the
    newest `kept`, the oldest dropped (a tombstone in the same transaction)."""

    meta: OwnTable
    changes: Any  # the runner's TableChanges
    partition: int
    kept: int = WRITTEN_KEPT
    order: deque[str] = field(default_factory=deque)  # the ids' keys, oldest first

    def __post_init__(self) -> None:
        self.reload()

    def reload(self) -> None:
        """The ids the meta table holds now (restored in the order written)."""
        prefix = f"{self.partition}|written|"
        self.order = deque(k for k in self.meta.data if k.startswith(prefix))

    def add(self, finding_id: bytes) -> bool:
        """False if it was written already."""
        key = f"{self.partition}|written|{finding_id.decode()}"
        if key in self.meta.data:
            return False
        self.meta.data[key] = True
        self.changes.note(self.meta.changelog, self.partition, key, True)
        self.order.append(key)
        while len(self.order) > self.kept:
            oldest = self.order.popleft()
            del self.meta.data[oldest]
            self.changes.note(self.meta.changelog, self.partition, oldest, None)
        return True


@dataclass
class PartitionTxn:
    """One stage partition's transactional producer and its open transaction."""

    stage: Stage
    producer: AIOKafkaProducer
    findings: str  # the findings topic
    # The findings this partition has written (committed, or in this
    # transaction), in its meta table: a stage record the validator routed
    # twice (it is at least once) judges its events again, and the engines
    # decide their findings again; the second is not written.
    written: Written
    judge: JudgeRecord | None = None
    sent: list[asyncio.Future[Any]] = field(default_factory=list)
    delivered: list[Callable[[], None]] = field(default_factory=list)
    failures: int = 0  # transactions failed in a row
    open: bool = False  # a transaction begun and not yet ended
    began: float = 0.0  # monotonic time it began
    offset: int = 0  # the partition's next offset, once this transaction commits

    async def begin(self) -> None:
        if not self.open:
            await self.producer.begin_transaction()
            self.open = True
            self.began = time.monotonic()

    async def publish(
        self, topic: str, key: bytes | None, value: bytes, delivered: Callable[[], None]
    ) -> None:
        """Into the open transaction; `delivered` runs once it commits."""
        if topic == self.findings and key is not None and not self.written.add(key):
            return
        self.sent.append(await self.producer.send(topic, value, key=key))
        self.delivered.append(delivered)

    async def send_changes(self, changed: dict[str, Any], topic: str, partition: int) -> None:
        """A changelog partition's changes (key -> last value, None deletes), batched."""
        batch = self.producer.create_batch()
        for key, value in changed.items():
            k = faust_json.dumps(key)
            v = None if value is None else faust_json.dumps(value)
            if batch.append(key=k, value=v, timestamp=None) is None:  # full
                self.sent.append(await self.producer.send_batch(batch, topic, partition=partition))
                batch = self.producer.create_batch()
                batch.append(key=k, value=v, timestamp=None)  # a first always fits
        self.sent.append(await self.producer.send_batch(batch, topic, partition=partition))

    async def commit(self, tp: TopicPartition, group: str) -> None:
        """Every write delivered, then the offset and the commit; raises if not."""
        sent, self.sent = self.sent, []
        for fut in sent:  # gather raises the first failure; the others are its echoes
            fut.add_done_callback(_retrieved)
        await asyncio.gather(*sent)
        await self.producer.send_offsets_to_transaction({tp: self.offset}, group)
        await self.producer.commit_transaction()
        self.open = False
        delivered, self.delivered = self.delivered, []
        for done in delivered:
            done()
        self.failures = 0

    async def abort(self) -> None:
        for fut in self.sent:  # their failures are this abort's cause, logged once
            fut.add_done_callback(_retrieved)
        self.sent.clear()
        self.delivered.clear()
        if self.open and not self.unusable():
            self.open = False
            await self.producer.abort_transaction()
        self.open = False

    def unusable(self, exc: BaseException | None = None) -> bool:
        """Fenced (a newer producer took the transactional id, or the broker
        timed the transaction out), or another error aiokafka makes fatal:
        the producer can neither commit nor abort. aiokafka 0.14 then answers
        sends with IllegalOperation and an abort with an AssertionError, so
        its transaction manager's state is asked (no public accessor)."""
        return isinstance(exc, ProducerFenced) or self.producer._txn_manager.is_fatal_error()


def _retrieved(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


async def stop_producer(producer: AIOKafkaProducer) -> None:
    """Stopped, and a fatal error (fenced) retrieved where aiokafka 0.14 set
    it on futures no one awaits once the producer is dropped: its
    transaction's waiter, and each undelivered batch's drain waiter
    (MessageBatch.failure consumes its batch future's exception, not that
    one's). Else asyncio logs each, when it is collected, as "Future
    exception was never retrieved"."""
    await producer.stop()
    if not producer._txn_manager.is_fatal_error():
        return
    producer._txn_manager.wait_for_transaction_end().add_done_callback(_retrieved)
    accumulator = producer._message_accumulator
    for batches in [*accumulator._batches.values(), accumulator._pending_batches]:
        for batch in batches:
            batch._drain_waiter.add_done_callback(_retrieved)


async def restore(
    settings: Settings, tables: dict[str, OwnTable], tps: list[TopicPartition]
) -> None:
    """The tables' entries of these changelog partitions, read committed."""
    if not tps:
        return
    consumer = AIOKafkaConsumer(
        **settings.kafka.client_options(),
        enable_auto_commit=False,
        isolation_level="read_committed",
        # From the start: a seek_to_beginning just after the assignment can
        # lose the race with the default reset to the end, and read nothing.
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        todo = {tp for tp in tps if ends[tp] > 0}
        while todo:
            batch = await consumer.getmany(timeout_ms=1000)
            for tp, records in batch.items():
                data = tables[tp.topic].data
                for r in records:
                    key = json.loads(r.key or b"null")
                    if r.value is None:
                        data.pop(key, None)
                    else:
                        data[key] = json.loads(r.value)
            # Past the end, not at it: a transaction's commit marker takes an offset.
            todo = {tp for tp in todo if await consumer.position(tp) < ends[tp]}
    finally:
        await consumer.stop()


def forget_partition(tables: Iterable[OwnTable], partition: int) -> None:
    prefix = f"{partition}|"
    for table in tables:
        for key in [k for k in table.data if k.startswith(prefix)]:
            del table.data[key]


class ExactlyOnceStages(ConsumerRebalanceListener):  # type: ignore[misc]
    """The stages' consumer, their transactions, and their tables."""

    def __init__(
        self,
        settings: Settings,
        runners: Mapping[Stage, Runner],
        topics: Topics,
        judge_for: JudgeFor,
    ) -> None:
        self.settings = settings
        self.runners = runners
        self.topics = topics
        self.judge_for = judge_for
        self.group = f"{topics.prefix}worker"
        self.stage_of = {topics.stage(s): s for s in runners}
        self.txns: dict[TopicPartition, PartitionTxn] = {}
        # A partition's transaction being committed; the next begins after it.
        self.committing: dict[TopicPartition, asyncio.Future[None]] = {}
        # Partitions to read again from their committed offsets, sought before
        # the next fetch (never during one: its records could come from either
        # side of the seek); until then their records are not judged.
        self.reread: set[TopicPartition] = set()
        # Partitions whose transaction failed, until their state is rebuilt.
        self.failing: set[TopicPartition] = set()
        self.lock = asyncio.Lock()  # a fetch's judging, or a rebalance
        self.consumer: AIOKafkaConsumer | None = None
        self.rebalances = 0  # revocations and assignments so far
        self.reclaiming: set[asyncio.Future[None]] = set()

    async def run(self) -> None:
        self.consumer = AIOKafkaConsumer(
            **self.settings.kafka.client_options(),
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            **self.settings.group_membership,
        )
        self.consumer.subscribe(list(self.stage_of), listener=self)
        await self.consumer.start()
        reported = time.monotonic()
        try:
            while True:
                for tp in list(self.reread):
                    self.reread.discard(tp)
                    await self.seek_committed(tp)
                # Woken in time for an open transaction's commit.
                wait = CAUGHT_UP_SECONDS if self.any_open() else COMMIT_SECONDS
                batch = await self.consumer.getmany(timeout_ms=int(wait * 1000))
                async with self.lock:
                    if batch:
                        await self.judge_fetch(batch)
                    self.commit_due()
                if time.monotonic() - reported >= metrics.REPORT_SECONDS:
                    reported = time.monotonic()
                    await self.report_lag()
        finally:
            await self.close()

    async def report_lag(self) -> None:
        """The stage topics' backlog on /metrics: this consumer reads them
        (Faust's, whose lag the at-least-once path reports, holds none)."""
        assert self.consumer is not None
        behind = await records_behind_by_topic(self.consumer)
        if behind is None:
            return  # rebalancing: the last values stand until the next round
        for topic in self.stage_of:
            # Topics lost in a rebalance read 0 here, not their last value.
            metrics.CONSUMER_LAG.labels("rules", topic).set(behind.get(topic, 0))

    async def close(self) -> None:
        for reclaim in list(self.reclaiming):
            reclaim.cancel()
        async with self.lock:
            self.commit_due(everything=True)
            await self.drop(set(self.txns))
        if self.consumer is not None:
            await self.consumer.stop()

    async def judge_fetch(self, batch: dict[TopicPartition, list[Any]]) -> None:
        """Each partition's records judged into its transaction, which then
        commits while the next partition is judged."""
        for tp, records in batch.items():
            txn = self.txns.get(tp)
            if txn is None or tp in self.failing:
                continue  # not ours any more, or read again once rebuilt
            task = self.committing.pop(tp, None)
            if task is not None:  # the partition's previous transaction first
                await task
            if tp in self.reread or tp not in self.txns:
                continue  # read again from its committed offset, or lost
            try:
                await self.judge_records(tp, txn, records)
            except Exception as exc:  # a write refused outright, or fenced
                await self.failed(tp, txn, exc)

    async def judge_records(
        self, tp: TopicPartition, txn: PartitionTxn, records: list[Any]
    ) -> None:
        assert txn.judge is not None
        await txn.begin()
        for record in records:
            await txn.judge(_Event.of(record), [])
        self.runners[txn.stage].keep_clocks()
        txn.offset = records[-1].offset + 1

    def any_open(self) -> bool:
        return any(txn.open for txn in self.txns.values())

    def commit_due(self, everything: bool = False) -> None:
        """Start the commit of each transaction open for COMMIT_SECONDS, or for
        CAUGHT_UP_SECONDS once its partition is judged up to the end the last
        fetch saw (or of every open one): the partition's next transaction
        begins after it."""
        now = time.monotonic()
        for tp, txn in self.txns.items():
            if not txn.open or tp in self.committing:
                continue
            age = now - txn.began
            due = age >= COMMIT_SECONDS or (age >= CAUGHT_UP_SECONDS and self.caught_up(tp, txn))
            if everything or due:
                self.committing[tp] = asyncio.ensure_future(self.commit(tp, txn))

    def caught_up(self, tp: TopicPartition, txn: PartitionTxn) -> bool:
        """Judged up to the partition's end as of the last fetch (its high
        watermark then): nothing more of it is waiting in the consumer."""
        assert self.consumer is not None
        if tp not in self.consumer.assignment():
            return False  # a rebalance under way: its revocation commits it
        end = self.consumer.highwater(tp)
        return end is not None and txn.offset >= end

    async def commit(self, tp: TopicPartition, txn: PartitionTxn) -> None:
        try:
            # The table changes of the whole transaction: each key's last value.
            changed = self.runners[txn.stage].changes.changed
            for name in STORES:
                topic = self.topics.changelog(txn.stage, name)
                keys = changed.pop((topic, tp.partition), None)
                if keys:
                    await txn.send_changes(keys, topic, tp.partition)
            await txn.commit(tp, self.group)
        except Exception as exc:  # any failure: the transaction is not committed
            await self.failed(tp, txn, exc)

    async def failed(self, tp: TopicPartition, txn: PartitionTxn, exc: Exception) -> None:
        if txn.unusable(exc):
            await self.fenced(tp, exc)
        else:
            await self.again(tp, txn, exc)

    async def fenced(self, tp: TopicPartition, exc: BaseException) -> None:
        """Another producer took the partition's transactional id: this worker
        was frozen past its session (or its transaction outlived the broker's
        timeout). Nothing of the open transaction is committed; the partition
        is taken back only if no rebalance gave it away meanwhile."""
        log.error(
            "%s:%s: fenced by a newer holder of the partition (%s); this worker writes "
            "nothing more for it unless it is still its own after a session",
            tp.topic,
            tp.partition,
            exc,
        )
        await self.lose(tp)
        self.reclaim_later(tp)

    def reclaim_later(self, tp: TopicPartition) -> None:
        """Paused until `reclaim` decides, a session from now."""
        assert self.consumer is not None
        with contextlib.suppress(IllegalStateError):  # no longer assigned: nothing to pause
            self.consumer.pause(tp)
        reclaim = asyncio.ensure_future(self.reclaim(tp, self.rebalances))
        self.reclaiming.add(reclaim)
        reclaim.add_done_callback(self.reclaiming.discard)

    async def reclaim(self, tp: TopicPartition, rebalances: int) -> None:
        """After a session, by which a zombie has learnt of the rebalance. A
        rebalance begun since (revoked, not yet assigned: the consumer's
        assignment is then still the old one) decides instead."""
        await asyncio.sleep(self.settings.kafka_session_timeout_s)
        async with self.lock:
            assert self.consumer is not None
            if tp in self.txns:
                return
            if rebalances != self.rebalances or tp not in self.consumer.assignment():
                log.info(
                    "%s:%s: not taken back: the group rebalanced since", tp.topic, tp.partition
                )
                return
            log.warning("%s:%s: still this worker's; taken back", tp.topic, tp.partition)
            if not await self.take([tp]):
                return
            try:
                self.consumer.resume(tp)
            except IllegalStateError:
                # Assigned elsewhere while it was taken: its next holder fences
                # the producer just started; nothing was judged with it.
                log.warning(
                    "%s:%s: assigned elsewhere while taken back; left to its holder",
                    tp.topic,
                    tp.partition,
                )
                await self.lose(tp)

    async def again(self, tp: TopicPartition, txn: PartitionTxn, exc: BaseException) -> None:
        """Abort, wait, rebuild the partition's state from the changelogs and
        read it again from its committed offset."""
        pause = RETRY_SECONDS[min(txn.failures, len(RETRY_SECONDS) - 1)]
        txn.failures += 1
        self.failing.add(tp)
        log.error(
            "%s:%s: transaction aborted (%s: %s); judged again from the committed offset in %s s",
            tp.topic,
            tp.partition,
            type(exc).__name__,
            exc,
            pause,
        )
        try:
            await txn.abort()
        except Exception as failure:  # else the new producer's start aborts it
            if txn.unusable(failure):
                self.failing.discard(tp)
                await self.fenced(tp, failure)
                return
        try:
            # Never the same producer again: aiokafka keeps the sequence numbers
            # of batches the broker refused (a finding too large), and every
            # later transaction of that producer fails with
            # OutOfOrderSequenceNumber. A new one starts from a new epoch.
            await stop_producer(txn.producer)
            txn.producer = await self.producer(txn.stage, tp.partition)
            await asyncio.sleep(pause)
            await self.rebuild(tp)
            self.reread.add(tp)
        finally:
            self.failing.discard(tp)

    async def seek_committed(self, tp: TopicPartition) -> None:
        assert self.consumer is not None
        committed = await self.consumer.committed(tp)
        try:
            if committed is None:
                await self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek(tp, committed)
        except IllegalStateError:
            pass  # no longer assigned here

    async def rebuild(self, *tps: TopicPartition) -> None:
        """The partitions' tables read again from the changelogs, their engines anew."""
        for stage in {self.stage_of[tp.topic] for tp in tps}:
            runner = self.runners[stage]
            parts = {tp.partition for tp in tps if self.stage_of[tp.topic] == stage}
            tables: dict[str, OwnTable] = {t.changelog: t for t in runner.tables.values()}
            for p in parts:
                forget_partition(tables.values(), p)
                for key in [k for k in runner.changes.changed if k[1] == p]:
                    del runner.changes.changed[key]
            runner.forget(parts)
            await restore(
                self.settings, tables, [TopicPartition(t, p) for t in tables for p in parts]
            )
        for tp in tps:
            if tp in self.txns:
                self.txns[tp].written.reload()

    async def producer(self, stage: Stage, partition: int) -> AIOKafkaProducer:
        """Started: the partition's earlier holder is fenced, its open transaction aborted."""
        producer = AIOKafkaProducer(
            **self.settings.kafka.client_options(),
            transactional_id=f"{self.topics.prefix}stage-{stage}-{partition}",
            enable_idempotence=True,
            acks="all",
            linger_ms=5,
        )
        await producer.start()
        return producer

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        """Every commit under way finished; the partitions kept are known only
        at the assignment (then those not kept are dropped)."""
        async with self.lock:
            # A rebalance has begun: a reclaim waiting for the lock must not
            # read the assignment, which stays the old one until the next.
            self.rebalances += 1
            self.commit_due(everything=True)
            await self.settle(set(revoked))

    async def settle(self, tps: set[TopicPartition]) -> None:
        for tp in tps:
            task = self.committing.pop(tp, None)
            if task is not None:
                await asyncio.gather(task, return_exceptions=True)

    async def drop(self, tps: set[TopicPartition]) -> None:
        """Finish the partitions' commits, close their producers, forget their state."""
        await self.settle(tps)
        for tp in tps:
            await self.lose(tp)

    async def lose(self, tp: TopicPartition) -> None:
        txn = self.txns.pop(tp, None)
        if txn is None:
            return
        # Fenced or gone, its transaction is the broker's to abort.
        with contextlib.suppress(Exception):
            await txn.abort()
        await stop_producer(txn.producer)
        runner = self.runners[txn.stage]
        forget_partition(runner.tables.values(), tp.partition)
        runner.forget({tp.partition})

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        async with self.lock:
            self.rebalances += 1
            await self.drop(set(self.txns) - set(assigned))
            await self.take([tp for tp in assigned if tp not in self.txns])
            log.info(
                "stages, exactly once: holding %s",
                ", ".join(sorted(f"{tp.topic}:{tp.partition}" for tp in self.txns)) or "nothing",
            )

    async def take(self, new: list[TopicPartition]) -> bool:
        """Producers started, tables restored, positions at the committed
        offsets. If that fails (a broker lost meanwhile), the partitions are
        not judged with half their state: dropped, paused and taken again a
        session later, unless a rebalance decides first."""
        try:
            await self.start_partitions(new)
        except Exception as exc:
            log.error(
                "%s: not taken (%s: %s); tried again in a session",
                ", ".join(f"{tp.topic}:{tp.partition}" for tp in new),
                type(exc).__name__,
                exc,
            )
            for tp in new:
                await self.lose(tp)
                self.reclaim_later(tp)
            return False
        return True

    async def start_partitions(self, new: list[TopicPartition]) -> None:
        # Fence first: the earlier holder's open transaction is aborted
        # before its changelog and offsets are read.
        producers = await asyncio.gather(
            *(self.producer(self.stage_of[tp.topic], tp.partition) for tp in new),
            return_exceptions=True,
        )
        started = [p for p in producers if isinstance(p, AIOKafkaProducer)]
        if len(started) < len(new):
            for producer in started:
                await stop_producer(producer)
            raise next(p for p in producers if isinstance(p, BaseException))
        for tp, producer in zip(new, started, strict=True):
            stage = self.stage_of[tp.topic]
            runner = self.runners[stage]
            written = Written(runner.tables["meta"], runner.changes, tp.partition)
            txn = self.txns[tp] = PartitionTxn(stage, producer, self.topics.findings, written)
            txn.judge = self.judge_for(runner, txn.publish)
        await self.rebuild(*new)
        # Sought again: what aiokafka read before the fencing may be stale.
        self.reread.update(new)
