"""The validator: the input topics, read in batches, routed to the stages.

    input topics --validate--> by-device / by-user / by-review (batches of events)
                 \\--bad--> dead-letters

Every event used to pass through a Faust agent once to be validated and once
more per stage that judges it; Faust's per-record machinery alone capped a
worker near 15,800 records/s here before any rule ran (README, Performance).
The validator reads the input topics with a plain aiokafka consumer group,
validates each record, and hands the stages one Kafka record per stage
partition per batch read, so the stages' Faust agents see a record per few
hundred events.

At least once: a batch's input offsets are committed only once everything it
became (stage batches, dead letters) is on the broker. A batch that cannot be
delivered (broker away) is read again from its first offsets after a backoff;
what was already delivered of it is read twice by the stages, which the
engines and the finding ids absorb.

Marks to the stages (see streams.stages.runner): SOURCE_BUSY for each input
partition assigned here, before any of its records is routed; END_OF_INPUT
passed on to every stage partition, after the data before it. Clock entries
(streams/partition_clock.py) in the stage batches: each clock mark read, and
each grid line an input partition's clock crosses, to every stage partition
that partition feeds; an input partition read to its end that stays quiet
while the others move on gets a clock mark written into it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.errors import (
    KafkaError,
    MessageSizeTooLargeError,
    RecordTooLargeError,
)
from aiokafka.structs import TopicPartition

from detectors import Stage, times_only
from detectors.dead_letters import dead_letter
from detectors.pseudonyms import Pseudonymiser
from streams import metrics
from streams.admission import Admitted, Refused, admit, capped_end
from streams.backoff import Backoff
from streams.end_of_input import MarkerCheck
from streams.lag import records_behind_by_topic
from streams.partition_clock import (
    CLOCK,
    CLOCK_MARK,
    FEEDS,
    QUIET_SECONDS,
    InputClocks,
    is_clock_mark,
)
from streams.settings import Settings
from streams.topics import STAGES, Topics, stage_keys, stage_partitions

log = logging.getLogger("sepwatch.validator")

END_OF_INPUT = b"__sepwatch_end_of_input__"
# An idle mark, sent by validators before clock marks (streams/partition_clock.py):
# no longer sent; one still in a stage topic after an upgrade is skipped there.
SOURCE_IDLE = b"__sepwatch_source_idle__"
# Sent for each input partition assigned here, before any of it is routed: a
# source whose predecessor died silent is heard again, and holds the stages'
# clocks while its backlog is routed.
SOURCE_BUSY = b"__sepwatch_source_busy__"
# The key of a stage record that carries a batch of events, in the order read
# (the value: see events_record).
EVENTS = b"__sepwatch_events__"
SOURCE = "sepwatch-source"
# How often input partitions read here to their end are looked at for clock marks.
QUIET_MARK_SECONDS = 1.0
COMMIT_SECONDS = 1.0
# A stage record stays well under the broker's default 1 MiB; an event larger
# than this goes in a record of its own.
BATCH_BYTES = 256 * 1024
MAX_RECORDS = 2000  # input records read at once


def feeds(topics: Topics) -> dict[str, set[str]]:
    """Stage -> the input topics whose validator routes to it."""
    return {stage: {topics.input(s) for s in FEEDS[stage]} for stage in STAGES}


class TimeOnly(NamedTuple):
    """An event a stage needs only the time of (detectors.times_only)."""

    stream: str
    ts: float


# (input partition, the event's JSON as read, or its time only)
Entry = tuple[str, bytes | TimeOnly]


def events_record(entries: Sequence[Entry]) -> bytes:
    """A stage record of a batch: one JSON line of [input partition, length]
    per event ([input partition, null, stream, time] for a time only), then
    the events' bytes one after the other, as read (not JSON strings inside
    JSON: no escaping going in, none undone)."""
    head = orjson.dumps(
        [
            # A time only: its stream and time (TimeOnly).
            (source, len(raw)) if type(raw) is bytes else (source, None, *raw)
            for source, raw in entries
        ]
    )
    return head + b"\n" + b"".join(raw for _, raw in entries if type(raw) is bytes)


def read_events(value: bytes) -> list[Entry]:
    """A stage record's batch, in the order routed."""
    head, _, body = value.partition(b"\n")
    out: list[Entry] = []
    at = 0
    for item in orjson.loads(head):
        if len(item) % 2:
            # Written by an older validator, with the input record's append
            # time second ([partition, appended, length], [partition,
            # appended, null, stream, time]), which no stage reads: such
            # records are still in the stage topics after an upgrade.
            del item[1]
        length = item[1]
        if length is None:
            out.append((item[0], TimeOnly(item[2], float(item[3]))))
            continue
        out.append((item[0], body[at : at + length]))
        at += length
    if at != len(body):
        raise ValueError(f"a batch of {len(out)} events is {len(body)} bytes, not {at}")
    return out


@dataclass
class StageBatch:
    """Events bound for one stage partition."""

    entries: list[Entry] = field(default_factory=list)
    size: int = 0
    first: dict[str, Any] | None = None  # where the first event was read


# Records handed to the producer: (queued send, where the event was read if the
# record holds that one event alone).
Sends = list[tuple[asyncio.Future[Any], dict[str, Any] | None]]


@dataclass
class Routing:
    """What one batch read became, on its way to the broker."""

    first: dict[TopicPartition, int]  # the batch's first offset by input partition
    next: dict[TopicPartition, int]  # and the offset after its last
    sends: Sends = field(default_factory=list)
    taken: Counter[str] = field(default_factory=Counter)  # valid events by stream
    ignored: Counter[str] = field(default_factory=Counter)  # end-of-input markers, by reason
    pseudonymised: Counter[str] = field(default_factory=Counter)  # identifiers, by field
    ticks: dict[str, int] = field(default_factory=dict)  # review ticks sent, by entity
    settled: bool = False  # delivered and counted routed
    failed: bool = False  # to be read again


class Undeliverable(Exception):
    """The broker did not take what a batch became; it is read again."""


class InputValidator:
    """Consumes the input topics with its own group (PREFIXvalidator)."""

    def __init__(
        self,
        settings: Settings,
        *,
        partitions: int,
        pseudonyms: Pseudonymiser,
        max_records: int = MAX_RECORDS,
    ):
        self.settings = settings
        self.pseudonyms = pseudonyms
        self.topics = Topics(settings.topic_prefix)
        self.partitions = partitions
        self.max_records = max_records
        self.feeds = feeds(self.topics)
        # Input partition -> next offset whose routing is on the broker.
        self.routed: dict[TopicPartition, int] = {}
        self.committed: dict[TopicPartition, int] = {}
        # The review stage needs every entity's clock, not every event: a tick a
        # minute per entity keeps its watermark moving.
        self.last_tick: dict[str, int] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        # The batch routed and not yet known delivered (see take).
        self.in_flight: Routing | None = None
        self._settling = asyncio.Lock()
        self.markers = MarkerCheck(settings.end_of_input_key)
        # The last record handed to the client for each stage partition (see _send_after).
        self._queued: dict[tuple[str, int], asyncio.Future[Any]] = {}
        # Each input partition's clock, as read here; when each last had a record.
        self.clocks = InputClocks()
        self.heard: dict[TopicPartition, float] = {}
        self.quiet_marked: dict[TopicPartition, float] = {}

    # -- the loop ---------------------------------------------------------

    async def run(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        options = self.settings.kafka.client_options()
        self._producer = AIOKafkaProducer(
            **options,
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            max_request_size=2 * 1024 * 1024,  # the broker, not the client, refuses a big one
        )
        self._consumer = AIOKafkaConsumer(
            **options,
            group_id=f"{self.settings.topic_prefix}validator",
            **self.settings.group_membership,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        self._consumer.subscribe(list(self.topics.inputs), listener=_Handover(self))
        await self._producer.start()
        await self._consumer.start()
        marked = committed = reported = 0.0
        backoff = Backoff(first=0.5, cap=10.0)
        try:
            while not stop.is_set():
                batch = await self._consumer.getmany(timeout_ms=100, max_records=self.max_records)
                try:
                    if await self.take(batch):
                        backoff.reset()
                    now = time.monotonic()
                    if now - marked >= QUIET_MARK_SECONDS:
                        marked = now
                        await self._mark_quiet()
                except Undeliverable as exc:
                    delay = backoff.next_delay()
                    log.warning("validator: %s; read again in %.1f s", exc, delay)
                    await asyncio.sleep(delay)
                    continue
                now = time.monotonic()
                if now - committed >= COMMIT_SECONDS:
                    committed = now
                    await self.commit()
                if now - reported >= metrics.REPORT_SECONDS:
                    reported = now
                    await self._report_lag()
            with contextlib.suppress(Undeliverable):
                await self.settle_in_flight()
            await self.commit()
        finally:
            await self._consumer.stop()
            await self._producer.stop()

    async def take(self, batch: dict[TopicPartition, list[Any]]) -> bool:
        """Validate and send a batch read while the batch before it settles
        (True if one did). The broker's acknowledgement takes a few
        milliseconds, which the worker otherwise spent waiting. Raises
        Undeliverable if the one before did not reach the broker: then neither
        counts routed, and both are read again."""
        previous = self.in_flight
        self.in_flight = self._route(batch) if batch else None
        if previous is None:
            return False
        async with self._settling:
            await self._settle_in_order(previous)
        return True

    async def settle_in_flight(self) -> None:
        """Wait for the batch in flight (raises Undeliverable if it failed).
        Also called when partitions are taken away, which can happen while
        the loop waits for the batch before it: batches settle one at a time,
        in the order read, never a later one first."""
        async with self._settling:
            routing = self.in_flight
            if routing is None:
                return
            await self._settle_in_order(routing)
            if self.in_flight is routing:
                self.in_flight = None

    async def _settle_in_order(self, routing: Routing) -> None:
        """Settle `routing`; if it fails, it and any batch read after it are
        abandoned and the consumer rewound to read them again."""
        try:
            await self._settle(routing)
        except Undeliverable:
            later = [routing]
            if self.in_flight is not None and self.in_flight is not routing:
                later.append(self.in_flight)
            self.in_flight = None
            await self._abandon(later)
            self._rewind(later)
            raise

    async def _abandon(self, routings: Sequence[Routing]) -> None:
        """Batches to read again: wait out what is still on its way (it may
        arrive, and is read twice then), and never count them routed."""
        for routing in routings:
            if not routing.failed:
                routing.failed = True
                with contextlib.suppress(Undeliverable):
                    await self._delivered(routing.sends)

    def _rewind(self, routings: Sequence[Routing]) -> None:
        """Read these batches again, from the first offset of each partition."""
        assert self._consumer is not None
        owned = self._consumer.assignment()
        first: dict[TopicPartition, int] = {}
        for routing in routings:
            for tp, offset in routing.first.items():
                first[tp] = min(offset, first.get(tp, offset))
        for tp, offset in first.items():
            if tp in owned:
                self._consumer.seek(tp, offset)

    async def commit(self, only: Collection[TopicPartition] | None = None) -> None:
        """Commit what is routed and not yet committed, on partitions still ours."""
        assert self._consumer is not None
        owned = self._consumer.assignment()
        offsets = {
            tp: offset
            for tp, offset in self.routed.items()
            if tp in owned and (only is None or tp in only) and self.committed.get(tp) != offset
        }
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except KafkaError as exc:  # CommitFailedError after a rebalance, above all
            # Read again by the partition's next owner: duplicates, not losses.
            log.warning("validator: commit refused (%s)", type(exc).__name__)
            return
        self.committed.update(offsets)

    # -- routing ----------------------------------------------------------

    async def route(self, records: Sequence[Any]) -> None:
        """Validate the records and hand them to the stages; raises Undeliverable
        if the broker did not take all of it."""
        batch: dict[TopicPartition, list[Any]] = {}
        for r in records:
            batch.setdefault(TopicPartition(r.topic, r.partition), []).append(r)
        await self._settle(self._route(batch))

    def _route(self, batch: dict[TopicPartition, list[Any]]) -> Routing:
        """Validate a batch read and send what it becomes; delivered once settled."""
        records = [r for rs in batch.values() for r in rs]
        now = time.monotonic()
        for tp in batch:
            self.heard[tp] = now
        out: dict[tuple[Stage, int], StageBatch] = {}
        routing = Routing(
            first={tp: rs[0].offset for tp, rs in batch.items() if rs},
            next={tp: rs[-1].offset + 1 for tp, rs in batch.items() if rs},
        )
        sends = routing.sends
        for r in records:
            where = {"topic": r.topic, "partition": r.partition, "offset": r.offset}
            source = f"{r.topic}:{r.partition}"
            appended = r.timestamp / 1000
            raw: bytes = r.value or b""
            if is_clock_mark(r):
                ts = self._clock_mark(raw, appended)
                self.clocks.mark(source, ts)
                self._clock_entries(out, sends, r.topic, source, ts, where)
                continue
            if r.key == END_OF_INPUT:
                refused = self.markers.judge(r.topic, r.partition, r.offset, raw, appended)
                if refused is not None:
                    # Not decided early on a marker anyone could have written.
                    routing.ignored[refused] += 1
                    log.warning("end-of-input marker at %s ignored: %s", where, refused)
                    continue
                self._send_batches(sends, out)  # the data before it goes first
                out = {}
                self._end_of_input(sends, raw, source, appended)
                continue
            decision = admit(
                raw,
                where=where,
                topic_of=self.topics.input,
                topic=r.topic,
                appended_at=appended,
                max_ahead_s=self.settings.max_event_ahead_s,
                pseudonyms=self.pseudonyms,
            )
            if isinstance(decision, Refused):
                self._dead(sends, decision.letter, decision.label)
                continue
            self._route_event(decision, r.topic, source, where, routing, out)
        self._send_batches(sends, out)
        return routing

    def _route_event(
        self,
        decision: Admitted,
        topic: str,
        source: str,
        where: dict[str, Any],
        routing: Routing,
        out: dict[tuple[Stage, int], StageBatch],
    ) -> None:
        """An admitted event into the batches of the stage partitions that judge it."""
        sends, ticks = routing.sends, routing.ticks
        parsed = decision.event
        routing.taken[parsed.stream] += 1
        if decision.pseudonymised:
            routing.pseudonymised.update(decision.pseudonymised)
        # The stages read the event as admitted: pseudonyms, never the raw value.
        record = decision.record
        entry: Entry = (source, record)
        size = len(record) + len(source) + 32
        keys = stage_keys(parsed, learned_identity=self.settings.learned_identity)
        ts = parsed.timestamp.timestamp()
        for stage, key in keys.items():
            if stage == "review" and parsed.stream != "control_review":
                # Per input partition: which event ticks is then its partition's
                # to say, as replay --partitions computes it.
                minute, tick = int(ts // 60), f"{source}|{key}"
                if max(self.last_tick.get(tick, -1), ticks.get(tick, -1)) >= minute:
                    continue
                ticks[tick] = minute
            for partition in stage_partitions(key, self.partitions):
                self._add(out, sends, stage, partition, entry, size, parsed, where)
        line = self.clocks.event(source, ts)
        if line is not None:
            self._clock_entries(out, sends, topic, source, line, where)

    def _clock_mark(self, raw: bytes, appended: float) -> float:
        """A clock mark's time, capped as an event's would be: a mark is as
        forgeable as an event, and moves no clock further."""
        try:
            claimed = json.loads(raw).get("ts")
        except (ValueError, AttributeError, RecursionError):
            claimed = None
        return capped_end(claimed, appended, self.settings.max_event_ahead_s)

    def _clock_entries(
        self,
        out: dict[tuple[Stage, int], StageBatch],
        sends: Sends,
        topic: str,
        source: str,
        ts: float,
        where: dict[str, Any],
    ) -> None:
        """An input partition's clock, to every stage partition it feeds."""
        entry = (source, TimeOnly(CLOCK, ts))
        for stage in STAGES:
            if topic in self.feeds[stage]:
                for p in range(self.partitions):
                    self._put(out, sends, (stage, p), entry, len(source) + 48, where)

    def _add(
        self,
        out: dict[tuple[Stage, int], StageBatch],
        sends: Sends,
        stage: Stage,
        partition: int,
        entry: Entry,
        size: int,
        parsed: Any,
        where: dict[str, Any],
    ) -> None:
        """Put one admitted event in the batch for a stage partition."""
        source, _ = entry
        at = (stage, partition)
        item, item_size = entry, size
        if times_only(stage, parsed):
            # Its time moves the stage's clock; its bytes would only be
            # validated again there and set aside.
            time_only = TimeOnly(parsed.stream, parsed.timestamp.timestamp())
            item, item_size = (source, time_only), len(source) + 48
        self._put(out, sends, at, item, item_size, where)

    def _put(
        self,
        out: dict[tuple[Stage, int], StageBatch],
        sends: Sends,
        at: tuple[Stage, int],
        item: Entry,
        item_size: int,
        where: dict[str, Any],
    ) -> None:
        held = out.get(at)
        if held is not None and held.size + item_size > BATCH_BYTES:
            self._send_batches(sends, {at: held})
            held = None
        if held is None:
            held = out[at] = StageBatch()
        held.entries.append(item)
        held.size += item_size
        held.first = held.first or where

    async def _settle(self, routing: Routing) -> None:
        """Wait until the broker has all a batch became; then it counts as routed."""
        if routing.settled:
            return
        if routing.failed:
            raise Undeliverable("a batch read before it was not delivered")
        try:
            await self._delivered(routing.sends)
        except Undeliverable:
            routing.failed = True
            raise
        routing.settled = True
        # Not before: a batch read again after a failed delivery sends its ticks again.
        self.last_tick.update(routing.ticks)
        for stream, n in routing.taken.items():  # counted once delivered: a retry reads them again
            metrics.EVENTS.labels(stream).inc(n)
        for reason, n in routing.ignored.items():
            metrics.END_OF_INPUT_IGNORED.labels(reason).inc(n)
        for name, n in routing.pseudonymised.items():
            metrics.IDENTIFIERS_PSEUDONYMISED.labels(name).inc(n)
        self.routed.update(routing.next)

    def _end_of_input(self, into: Sends, raw: bytes, source: str, appended: float) -> None:
        try:
            claimed = json.loads(raw).get("max_ts")
        except (ValueError, AttributeError, RecursionError):
            claimed = None  # not the marker `sepwatch produce` sends
        value = orjson.dumps(
            {"max_ts": capped_end(claimed, appended, self.settings.max_event_ahead_s)}
        )
        for stage in STAGES:
            for p in range(self.partitions):
                self._send(into, stage, p, END_OF_INPUT, value, {SOURCE: source.encode()})

    def _send_batches(self, into: Sends, out: dict[tuple[Stage, int], StageBatch]) -> None:
        for (stage, p), batch in out.items():
            # A record of one event the broker refuses (too large) is dead-lettered.
            where = batch.first if len(batch.entries) == 1 else None
            self._send(into, stage, p, EVENTS, events_record(batch.entries), {}, where)

    def _send(
        self,
        into: Sends,
        stage: Stage,
        partition: int,
        key: bytes,
        value: bytes,
        headers: dict[str, bytes],
        where: dict[str, Any] | None = None,
    ) -> None:
        topic = self.topics.stage(stage)
        before = self._queued.get((topic, partition))
        sending = asyncio.ensure_future(
            self._send_after(before, topic, key, value, partition, list(headers.items()))
        )
        self._queued[(topic, partition)] = sending
        into.append((sending, where))

    async def _send_after(
        self,
        before: asyncio.Future[Any] | None,
        topic: str,
        key: bytes,
        value: bytes,
        partition: int,
        headers: list[tuple[str, bytes]],
    ) -> Any:
        """Queue a stage record once the one before it to the same partition is
        queued. The Kafka client queues a record that does not fit its
        partition's batch only once that batch is sent, and a smaller record
        sent after it then went first: a stage partition read an input
        partition's events out of its order, and judged its earlier ones late."""
        assert self._producer is not None
        if before is not None and not before.done():
            await asyncio.wait([before])
        return await self._producer.send(
            topic, key=key, value=value, partition=partition, headers=headers
        )

    def _dead(self, into: Sends, letter: dict[str, Any], label: str) -> None:
        assert self._producer is not None
        metrics.DEAD_LETTERS.labels(label).inc()
        value = json.dumps(letter, ensure_ascii=False).encode()
        sending = self._producer.send(self.topics.dead_letters, value=value)
        into.append((asyncio.ensure_future(sending), None))

    async def _delivered(self, sends: Sends) -> None:
        """Wait until the broker has all of `sends`; raise Undeliverable if it
        did not take some of it."""
        while sends:
            sending = list(sends)
            sends.clear()
            # send() returns once the record is in the producer's batch, with the
            # delivery as its result; it raises at once for a record over the
            # client's limit.
            queued = await asyncio.gather(*(f for f, _ in sending), return_exceptions=True)
            errors: list[tuple[BaseException, dict[str, Any] | None]] = []
            deliveries: list[tuple[asyncio.Future[Any], dict[str, Any] | None]] = []
            for (_, where), outcome in zip(sending, queued, strict=True):
                if isinstance(outcome, BaseException):
                    errors.append((outcome, where))
                else:
                    deliveries.append((outcome, where))
            results = await asyncio.gather(*(d for d, _ in deliveries), return_exceptions=True)
            errors += [
                (result, where)
                for (_, where), result in zip(deliveries, results, strict=True)
                if isinstance(result, BaseException)
            ]
            failed = []
            lettered: set[tuple[Any, ...]] = set()
            for error, where in errors:
                if isinstance(error, _TOO_LARGE) and where is not None:
                    if tuple(where.values()) in lettered:
                        continue  # the same event refused on its way to another stage
                    lettered.add(tuple(where.values()))
                    # Retrying would never end: a dead letter without the record,
                    # which is what was refused.
                    reason = f"could not forward the record: {type(error).__name__}"
                    self._dead(sends, dead_letter(b"", reason, where=where), "unforwardable")
                else:
                    failed.append(error)
            if failed:
                sends.clear()
                raise Undeliverable(f"stage records not delivered ({type(failed[0]).__name__})")

    # -- marks ------------------------------------------------------------

    def _mark(self, into: Sends, topic: str, partition: int, mark: bytes) -> None:
        headers = {SOURCE: f"{topic}:{partition}".encode()}
        for stage in STAGES:
            if topic in self.feeds[stage]:
                for p in range(self.partitions):
                    self._send(into, stage, p, mark, b"", headers)

    async def busy(self, assigned: Collection[TopicPartition]) -> None:
        """Before routing any record of partitions just assigned here."""
        marks: Sends = []
        for tp in assigned:
            self.routed.pop(tp, None)  # another worker may have gone on
            self.committed.pop(tp, None)
            self._mark(marks, tp.topic, tp.partition, SOURCE_BUSY)
        with contextlib.suppress(Undeliverable):
            # A mark that did not go only leaves the source unheard a little
            # longer; the records are routed either way.
            await self._delivered(marks)

    async def _mark_quiet(self) -> None:
        """Write a clock mark into each input partition read here to its end
        that has had no record for QUIET_SECONDS while the stages know less
        than the largest clock of the partitions read here (never past the
        wall clock): a quiet partition then holds no stage's decisions, and
        the stages that got none of its events learn its own clock. Being in
        the topic, the mark is read again the same after a restart."""
        assert self._consumer is not None and self._producer is not None
        tps = list(self._consumer.assignment())
        sources = [f"{tp.topic}:{tp.partition}" for tp in tps]
        known = [self.clocks.clock.get(s, 0.0) for s in sources]
        clock = min(max(known, default=0.0), time.time())
        now = time.monotonic()
        due = [
            tp
            for tp, source in zip(tps, sources, strict=True)
            if self.clocks.told.get(source, 0.0) < clock
            and self.quiet_marked.get(tp, 0.0) < clock
            and now - self.heard.setdefault(tp, now) >= QUIET_SECONDS
        ]
        if not due:
            return
        try:
            ends = await self._consumer.end_offsets(due)
            positions = {tp: await self._consumer.position(tp) for tp in due}
        except (KafkaError, AssertionError) as exc:  # IllegalStateError: not ours any more
            log.debug("input ends unavailable, no clock marks this round: %r", exc)
            return
        value = orjson.dumps({"ts": clock})
        for tp in due:
            end = ends.get(tp)
            if end is None or positions[tp] < end:
                continue
            try:
                sent = await self._producer.send(
                    tp.topic, key=CLOCK_MARK, value=value, partition=tp.partition
                )
                await sent
            except KafkaError as exc:
                # The partition holds the stages' clocks until a mark goes.
                log.warning("clock mark to %s:%s not written: %r", tp.topic, tp.partition, exc)
                continue
            self.quiet_marked[tp] = clock

    async def _report_lag(self) -> None:
        assert self._consumer is not None
        behind = await records_behind_by_topic(self._consumer)
        if behind is None:
            return  # rebalancing: the last values stand until the next round
        for topic in self.topics.inputs:
            # Topics lost in a rebalance read 0 here, not their last value.
            metrics.CONSUMER_LAG.labels("rules", topic).set(behind.get(topic, 0))


_TOO_LARGE = (MessageSizeTooLargeError, RecordTooLargeError)


class _Handover(ConsumerRebalanceListener):  # type: ignore[misc]
    """Commits what was routed before partitions leave; marks new ones busy."""

    def __init__(self, validator: InputValidator) -> None:
        self.validator = validator

    async def on_partitions_revoked(self, revoked: Collection[TopicPartition]) -> None:
        with contextlib.suppress(Undeliverable):  # then read again by the next owner
            await self.validator.settle_in_flight()
        await self.validator.commit(only=set(revoked))

    async def on_partitions_assigned(self, assigned: Collection[TopicPartition]) -> None:
        await self.validator.busy(assigned)
