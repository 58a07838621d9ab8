"""The streaming topology on Kafka with faust-streaming.

    input topics --validate--> by-device / by-user / by-review --stages--> findings
                  \\--bad--> dead-letters

The validator (streams.validator, a plain aiokafka consumer group) validates
the four input streams (bad records go to the dead letters with their reason,
masked) and routes the events, raw and in batches, to the stage partitions
that judge them, partitioned so every join is local to one partition. Each
stage is a Faust agent and runs
one engine per partition, its state in changelogged Faust tables, so a
restarted worker recovers it. Findings go to the findings topic keyed by
finding id.

A producer that reaches the end of a bounded input (`sepwatch produce` of a
file) sends an end-of-input marker to every input partition; once a stage
partition has the marker from every input partition it flushes, as a replay
does at the end of its file.
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import json
import logging
import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import faust
from aiokafka.errors import IllegalStateError
from aiokafka.structs import TopicPartition
from faust.transport.drivers.aiokafka import Consumer as FaustKafkaConsumer
from faust.utils import json as faust_json
from pydantic import ValidationError

from adapters import ADAPTERS
from adapters.intake import OUTCOMES, SkipLabels, adapt_message
from adapters.mapping import configured_mapping
from detectors import Engine, EngineState, Stage
from detectors.dead_letters import dead_letter, reason_of
from detectors.masking import mask_text
from detectors.pseudonyms import Pseudonymiser
from schemas import EventAdapter, Finding, Policy
from schemas.policy_file import PolicyError, PolicyFile
from streams import metrics
from streams.exactly_once import ExactlyOnceStages, JudgeRecord, OwnTable
from streams.kafka_io import KafkaUnavailable
from streams.lag import Trailing, records_behind_by_topic
from streams.partition_clock import CLOCK
from streams.policy_history import PolicyVersion, in_force, read_versions, record_if_changed
from streams.replay import utc_now
from streams.settings import Settings
from streams.topics import STAGES, STORES, Topics, input_key, partition_of
from streams.validator import (
    END_OF_INPUT,
    EVENTS,
    SOURCE,
    SOURCE_BUSY,
    SOURCE_IDLE,
    InputValidator,
    TimeOnly,
    feeds,
    read_events,
)

log = logging.getLogger("sepwatch")

# A one-event stage record's header (workers before batches): when its input
# was appended to Kafka.
APPENDED = "sepwatch-appended"
POLICY_POLL_SECONDS = 2.0
HISTORY_EVERY_POLLS = 5
# Wall-clock silence, without data or idle marks, after which a source no longer
# holds the clock: only a validator that is gone is that silent. A source with a
# backlog sends no idle marks, so a catch-up after a crash never releases early.
IDLE_SECONDS = 300.0
# Key in a stage partition's meta table: end-of-input markers received, by source.
INPUT_ENDS = "input_ends"
# And the input partitions' clocks it has learned (streams/partition_clock.py),
# so a restored stage judges an event late, or not, as before.
SOURCE_CLOCKS = "source_clocks"
METRICS_SECONDS = 5.0
# Pauses before a record whose judging raised is judged again; then it is dead-lettered.
JUDGE_RETRY_SECONDS = (0.1, 0.5, 2.0)


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

    Every write's delivery is watched: one the broker does not take makes
    every later commit fail (`settled` raises) and no changelog record is
    written after it, since a restore would read it even though the input
    offset before it is never committed (a pending decision's tombstone
    without its finding would lose the finding for good). Findings are sent
    through Faust's topic machinery no more: it logs a failed delivery as a
    WARNING and commits past it (issue 19)."""

    def __init__(self, producer: Any) -> None:
        self.producer = producer  # Faust's; its Kafka client sends the batches
        # (changelog topic, partition) -> key -> value, None to delete.
        self.changed: dict[tuple[str, int], dict[str, Any]] = {}
        self.submitting: set[asyncio.Future[None]] = set()
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
        self._track(fut, topic)

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
        # Until every batch is handed to the client its future is unknown: a
        # commit meanwhile waits for the whole write (settled), or it could
        # cover the record before its changes are sent.
        task = asyncio.ensure_future(self._submit(changed))
        self.submitting.add(task)
        task.add_done_callback(self.submitting.discard)
        await task

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

    def _track(self, fut: asyncio.Future[Any], topic: str) -> None:
        self.unsent.add(fut)

        def done(f: asyncio.Future[Any]) -> None:
            self.unsent.discard(f)
            exc = f.exception() if not f.cancelled() else asyncio.CancelledError()
            if exc is not None:
                self._failure(exc, topic)

        fut.add_done_callback(done)

    async def _submit(self, changed: dict[tuple[str, int], dict[str, Any]]) -> None:
        client = self.producer._ensure_producer()
        try:
            for (topic, partition), keys in changed.items():
                batch = client.create_batch()
                for key, value in keys.items():
                    k = faust_json.dumps(key)
                    v = None if value is None else faust_json.dumps(value)
                    if batch.append(key=k, value=v, timestamp=None) is None:  # full
                        await self._send(client, batch, topic, partition)
                        batch = client.create_batch()
                        batch.append(key=k, value=v, timestamp=None)  # a first always fits
                await self._send(client, batch, topic, partition)
        except Exception as exc:  # the client refused a batch outright
            self._failure(exc, "a changelog")
            raise

    async def _send(self, client: Any, batch: Any, topic: str, partition: int) -> None:
        fut = await client.send_batch(batch, topic, partition=partition)
        self._track(fut, topic)


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


class AppendFrontier:
    """The largest event time among the records a stage partition has judged,
    by the time their input records were appended to Kafka (0.1 s buckets).

    An idle mark says its source had routed everything appended before its
    `as_of` time. The source's next records are appended after that, so in
    the order the inputs were appended (the order a replay reads its file)
    they come no earlier than what was appended before `as_of`: the source
    holds the clock there, not past it. A mark read after records appended
    later (a slow validator's mark, or one sent while another validator raced
    ahead) therefore cannot let those records carry the clock past the
    source's backlog."""

    BUCKETS_KEPT = 6000  # ten minutes of append time; an older mark holds the clock where it is

    def __init__(self) -> None:
        self.buckets: list[int] = []  # increasing append-time buckets
        self.largest: list[float] = []  # largest event time appended up to the bucket's end
        self.overall = float("-inf")

    def add(self, appended: float | None, ts: float) -> None:
        self.overall = max(self.overall, ts)
        if appended is None:
            return  # counts only for a mark with no time (everything routed)
        bucket = int(appended * 10)
        i = bisect.bisect_left(self.buckets, bucket)
        if i == len(self.buckets) or self.buckets[i] != bucket:
            self.buckets.insert(i, bucket)
            self.largest.insert(i, self.largest[i - 1] if i else float("-inf"))
        for j in range(i, len(self.largest)):
            if self.largest[j] >= ts:
                break  # the running maximum is already larger from here on
            self.largest[j] = ts
        if len(self.buckets) > self.BUCKETS_KEPT:
            del self.buckets[0], self.largest[0]

    def by(self, as_of: float | None) -> float:
        """The largest event time judged among records appended entirely
        before `as_of` (None: of every record judged)."""
        if as_of is None:
            return self.overall
        i = bisect.bisect_left(self.buckets, int(as_of * 10))  # buckets ending by as_of
        return self.largest[i - 1] if i else float("-inf")


@dataclass(frozen=True)
class _Others:
    """What a partition's sources other than `source` hold its clock at: the
    smallest largest-event-time of those with data (`busy`), and the idle
    marks' times of the idle ones (each holds at what the append frontier had
    by then). True until one of them is heard from or marked, or until the
    first of them heard falls silent (IDLE_SECONDS after `first_heard`)."""

    source: str
    busy: float
    idle_as_of: tuple[float | None, ...]
    first_heard: float

    @classmethod
    def of(
        cls,
        source: str,
        clocks: dict[str, tuple[float, float]],
        idle: dict[str, float | None],
        now: float,
    ) -> _Others:
        busy = float("inf")
        marks: set[float | None] = set()
        first_heard = float("inf")
        for s, (t, heard) in clocks.items():
            if s == source or now - heard >= IDLE_SECONDS:
                continue
            first_heard = min(first_heard, heard)
            if s in idle:
                marks.add(idle[s])
            else:
                busy = min(busy, t)
        return cls(source, busy, tuple(marks), first_heard)


class StageRunner:
    """The engines of one stage, one per partition this worker holds."""

    def __init__(
        self,
        stage: Stage,
        tables: dict[str, Any],
        policy: Policy,
        partitions: int,
        sources: list[str],
        changes: TableChanges | None = None,
    ):
        self.stage = stage
        self.tables = tables
        self.changes = changes or TableChanges(None)
        self.policy = policy
        # The entities the policies name: the only values of a metric's entity label.
        self.entities = metrics.policy_entities(policy)
        # Policies loaded while running, with the time each took effect.
        self.reloads: list[tuple[float, Policy]] = []
        self.partitions = partitions
        self.engines: dict[int, Engine] = {}
        # partition -> source -> (largest event time, monotonic time last heard)
        self.clocks: dict[int, dict[str, tuple[float, float]]] = {}
        # Sources whose last word was an idle mark, with the mark's `as_of`.
        self.idle: dict[int, dict[str, float | None]] = {}
        self.frontier: dict[int, AppendFrontier] = {}
        self.last: dict[int, float] = {}  # the clock last given, per partition
        self.since: dict[int, float] = {}  # when the partition was (re)assigned here
        # What the sources other than the last one to send data hold, per partition.
        self.others: dict[int, _Others] = {}
        self.sources = len(sources)
        self.moved: set[int] = set()  # partitions whose source clocks moved, to keep

    def engine(self, partition: int) -> Engine:
        engine = self.engines.get(partition)
        if engine is None:
            state = EngineState(
                **{
                    name: PartitionStore(self.tables[name], partition, self.changes)
                    for name in STORES
                }
            )
            engine = self.engines[partition] = Engine(
                self.policy,
                now=utc_now,
                state=state,
                stage=self.stage,
                owns_entity=lambda e: partition_of(e, self.partitions) == partition,
                external_clock=True,
            )
            for since, later in self.reloads:
                engine.set_policy(later, effective_from=since)
        return engine

    def reload(self, policy: Policy, since: float) -> None:
        self.reloads.append((since, policy))
        self.entities |= metrics.policy_entities(policy)
        for engine in self.engines.values():
            engine.set_policy(policy, effective_from=since)

    def clock(
        self,
        partition: int,
        source: str,
        ts: float | None,
        *,
        appended: float | None = None,
        as_of: float | None = None,
    ) -> float:
        """The partition's event clock: the slowest active source's largest event
        time; without this, one topic read ahead of another would push the
        watermark past events still to come. `ts` None is an idle mark: the
        source had routed everything appended before `as_of` (None: everything)
        and holds the clock only at what was appended before then (see
        AppendFrontier), until it sends data again (Flink's idleness, decided
        by the reader, which knows, rather than by a timer, which guesses).
        `appended` is when a data record's input was appended to Kafka."""
        now = time.monotonic()
        # Called for every event: no default built and thrown away per call.
        clocks = self.clocks.get(partition)
        if clocks is None:
            clocks = self.clocks[partition] = self._restored(partition)
        idle = self.idle.get(partition)
        if idle is None:
            idle = self.idle[partition] = {}
        frontier = self.frontier.get(partition)
        if frontier is None:
            frontier = self.frontier[partition] = AppendFrontier()
        seen, _ = clocks.get(source, (float("-inf"), now))
        if ts is None:
            idle[source] = as_of
            self.others.pop(partition, None)
        else:
            idle.pop(source, None)
            if ts > seen:
                seen = ts
                self.moved.add(partition)
            frontier.add(appended, ts)
        clocks[source] = (seen, now)
        # Just after a start or a rebalance no source is known yet: until every
        # source has been heard (data or mark), or IDLE_SECONDS have passed, it holds.
        since = self.since.setdefault(partition, now)
        if len(clocks) < self.sources and now - since < IDLE_SECONDS:
            return float("-inf")
        last = self.last.get(partition, float("-inf"))
        if ts is None:
            holds = [
                frontier.by(idle[s]) if s in idle else t
                for s, (t, heard) in clocks.items()
                if now - heard < IDLE_SECONDS
            ]
            if holds:
                last = max(last, min(holds))
        else:
            # What the other sources say is kept while this source's run of
            # events lasts, instead of asked of every source per event: until
            # one of them is heard from or marked, or falls silent. An idle
            # one's hold is still read from the append frontier each time.
            others = self.others.get(partition)
            if (
                others is None
                or others.source != source
                or now - others.first_heard >= IDLE_SECONDS
            ):
                others = self.others[partition] = _Others.of(source, clocks, idle, now)
            hold = min(seen, others.busy)
            for mark in others.idle_as_of:
                hold = min(hold, frontier.by(mark))
            last = max(last, hold)
        self.last[partition] = last
        return last

    def late(self, partition: int, source: str, ts: float, lateness: float) -> bool:
        """Later than the lateness against its own input partition's clock."""
        clocks = self.clocks.get(partition)
        if clocks is None:
            clocks = self.clocks[partition] = self._restored(partition)
        seen = clocks.get(source)
        return seen is not None and ts < seen[0] - lateness

    def _restored(self, partition: int) -> dict[str, tuple[float, float]]:
        """The source clocks this stage partition kept (none in a bare runner)."""
        if "meta" not in self.tables:
            return {}
        meta = PartitionStore(self.tables["meta"], partition, self.changes)
        now = time.monotonic()
        return {s: (float(t), now) for s, t in (meta.get(SOURCE_CLOCKS) or {}).items()}

    def keep_clocks(self) -> None:
        """Into the meta table, with the record that moved them."""
        for partition in self.moved:
            clocks = self.clocks.get(partition, {})
            meta = PartitionStore(self.tables["meta"], partition, self.changes)
            meta[SOURCE_CLOCKS] = {s: t for s, (t, _) in clocks.items() if t != float("-inf")}
        self.moved.clear()

    def busy(self, partition: int, source: str) -> None:
        """The source has records to route (a validator took it over): it holds
        the clock at its largest event time again, whatever idle mark came before."""
        clocks = self.clocks.get(partition)
        if clocks is None:
            clocks = self.clocks[partition] = self._restored(partition)
        seen, _ = clocks.get(source, (float("-inf"), 0.0))
        clocks[source] = (seen, time.monotonic())
        self.idle.setdefault(partition, {}).pop(source, None)
        self.others.pop(partition, None)

    def event_clocks(self) -> list[float]:
        """The event clock of each partition held here."""
        return list(self.last.values())

    def forget(self, partitions: set[int]) -> None:
        """After a rebalance: engines are rebuilt from the tables when needed,
        and the partition's clock starts again from its sources."""
        for p in partitions:
            self.clocks.pop(p, None)
            self.idle.pop(p, None)
            self.frontier.pop(p, None)
            self.last.pop(p, None)
            self.since.pop(p, None)
            self.moved.discard(p)
            engine = self.engines.pop(p, None)
            if engine is not None:
                export_counts(self.stage, engine)
            self.others.pop(p, None)

    def export_counts(self) -> None:
        for engine in self.engines.values():
            export_counts(self.stage, engine)


# The engine's counts that /metrics shows, by its stats key.
ENGINE_COUNTS = {
    "events.late": metrics.LATE_EVENTS,
    "decisions.posture_unknowable": metrics.DECISIONS_UNKNOWABLE,
    "identity.conflicts": metrics.IDENTITY_CONFLICTS,
    "auth.mfa_unknown": metrics.SIGNINS_MFA_UNSAID,
    "auth.mfa_from_session": metrics.SIGNINS_MFA_FROM_SESSION,
}


def export_counts(stage: Stage, engine: Engine) -> None:
    """Move what the engine counted since the last call to /metrics."""
    for key, counter in ENGINE_COUNTS.items():
        n = engine.stats.pop(key, 0)
        if n:
            counter.labels(stage).inc(n)


def build_app(
    settings: Settings,
    policy: Policy,
    *,
    pseudonyms: Pseudonymiser,
    partitions: int = 4,
    policy_file: Path | None = None,
    versions: list[PolicyVersion] | None = None,
) -> faust.App:
    topics = Topics(settings.topic_prefix)
    app = _faust_app(settings, partitions)
    # One per stage: a stage's write covers its own record's changes whole.
    changes = {stage: TableChanges(app.producer) for stage in STAGES}
    _changelog_before_commit(app, list(changes.values()))
    seek_before_fetch(app)
    dead = _raw_topic(app, topics.dead_letters, partitions)

    @app.task
    async def validate_inputs() -> None:
        """The input topics to the stages, in batches (streams.validator); the
        input partitions are shared among the workers' validators."""
        await InputValidator(settings, partitions=partitions, pseudonyms=pseudonyms).run()

    _adapters(app, settings, policy, topics, dead)
    runners = _stages(app, settings, policy, topics, partitions, changes)
    applied = PolicyVersions(runners)
    if versions:
        applied.apply(versions)
    if policy_file is not None:
        _policy_reload(app, settings, PolicyFile(policy_file, policy), applied)
    if settings.web_port > 0:
        _web_pages(app)
    _lag_report(app, topics, runners)
    _sinks(app, settings, policy, pseudonyms, applied)
    app.sepwatch_topics = topics  # type: ignore[attr-defined]
    return app


def _faust_app(settings: Settings, partitions: int) -> faust.App:
    exactly_once = settings.processing_guarantee == "exactly_once"
    return faust.App(
        # Exactly once, the stages' own consumer is the group PREFIXworker
        # (their offsets stay where they were); Faust, for the adapters, joins
        # a group of its own: one group cannot mix Faust's assignor and aiokafka's.
        f"{settings.topic_prefix}{'adapters' if exactly_once else 'worker'}",
        # Bootstrap servers are comma-separated for the Kafka clients; Faust
        # takes a list of URLs.
        broker=[f"kafka://{server.strip()}" for server in settings.broker.split(",")],
        broker_credentials=settings.kafka.faust_credentials(),
        store="memory://",
        datadir=str(settings.state_dir),
        topic_partitions=partitions,
        # Resolved against the cluster by `sepwatch worker` (ensure_topics):
        # for the topics Faust itself creates (its assignor's leader topic).
        topic_replication_factor=settings.replication_factor or 1,
        value_serializer="raw",
        key_serializer="raw",
        web_enabled=settings.web_port > 0,
        web_port=max(settings.web_port, 1),
        web_host=settings.web_host,
        # Faust listens on every interface unless told: a bank's worker exposes
        # /metrics only where the settings say.
        web_bind=settings.web_host,
        # /metrics and /healthz only: Faust's table views serve table contents
        # by key, and its router view the partition map, without authentication.
        web_tables_enabled=False,
        web_router_enabled=False,
        web_stats_enabled=False,
        web_graph_enabled=False,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.kafka_session_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_s,
        broker_commit_every=1000,
        broker_commit_interval=1.0,
        producer_linger_ms=5,
        stream_buffer_maxsize=8192,
        table_standby_replicas=settings.standby_replicas,
    )


def _raw_topic(app: faust.App, name: str, partitions: int) -> Any:
    return app.topic(
        name,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=partitions,
    )


def _adapters(
    app: faust.App, settings: Settings, policy: Policy, topics: Topics, dead: Any
) -> None:
    """Raw vendor topics (docs/adapters.md): the adapters turn each record into
    canonical events on the input topics, where `validate` takes them as it
    takes any producer's. Unmappable records go to the dead letters; vendor
    event types with no meaning are counted and logged."""
    mapping = configured_mapping(settings.mapping, policy)
    if mapping is None:
        return
    skipped: Counter[str] = Counter()
    for source in ADAPTERS:  # every series from 0, so the first records count in rate()
        for result in OUTCOMES:
            metrics.ADAPTER_RECORDS.labels(source, result)
    raw_inputs = app.topic(
        *(topics.raw(source) for source in ADAPTERS),
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )
    app.agent(raw_inputs)(_adapt_agent(app, topics, mapping, dead, skipped))

    @app.timer(interval=60.0)
    async def report_skipped() -> None:
        if skipped:
            log.info("adapters skipped (no access, posture or DLP meaning): %s", dict(skipped))


def _adapt_agent(
    app: faust.App, topics: Topics, mapping: Any, dead: Any, skipped: Counter[str]
) -> Callable[[Any], Awaitable[None]]:
    skip_labels = SkipLabels()

    async def adapt(stream: Any) -> None:
        async for event in stream.events():
            msg = event.message
            adapter = ADAPTERS[msg.topic.removeprefix(f"{topics.prefix}raw.")]
            where = {"topic": msg.topic, "partition": msg.partition, "offset": msg.offset}
            outcome = adapt_message(adapter, event.value or b"", mapping, where)
            for canonical in outcome.events:
                await app.send(
                    topics.input(canonical["stream"]),
                    key=input_key(canonical).encode(),
                    value=_json(canonical),
                )
            for letter in outcome.dead_letters:
                await dead.send(value=_json(letter))
                metrics.DEAD_LETTERS.labels("unmappable").inc()
            for result, n in outcome.records.items():
                metrics.ADAPTER_RECORDS.labels(adapter.source, result).inc(n)
            for kind in outcome.skipped:
                label = skip_labels.label(adapter.source, kind)
                metrics.ADAPTER_SKIPPED.labels(adapter.source, label).inc()
                key = f"{adapter.source}: {kind}"
                if key in skipped or len(skipped) < 1000:  # kinds are vendor text: bounded
                    skipped[key] += 1

    return adapt


def _stages(
    app: faust.App,
    settings: Settings,
    policy: Policy,
    topics: Topics,
    partitions: int,
    changes: dict[Stage, TableChanges],
) -> dict[Stage, StageRunner]:
    """A runner per stage, judging its stage topic: a Faust agent each (at
    least once) or one task for all, in Kafka transactions (exactly once)."""
    exactly_once = settings.processing_guarantee == "exactly_once"
    sources = len(topics.inputs) * partitions
    fed_by = feeds(topics)
    fault = settings.test_fault_event_id
    runners: dict[Stage, StageRunner] = {}
    for stage in STAGES:
        # The input partitions whose validator can route to this stage.
        feeding = [t for t in topics.inputs if t in fed_by[stage]]
        stage_sources = [f"{t}:{p}" for t in feeding for p in range(partitions)]
        if exactly_once:
            own = {name: OwnTable(topics.changelog(stage, name)) for name in STORES}
            runners[stage] = StageRunner(stage, own, policy, partitions, stage_sources)
            continue
        tables = {name: _table(app, topics, stage, name, partitions) for name in STORES}
        runner = StageRunner(stage, tables, policy, partitions, stage_sources, changes[stage])
        runners[stage] = runner
        stage_topic = _raw_topic(app, topics.stage(stage), partitions)
        app.agent(stage_topic, name=f"{settings.topic_prefix}stage-{stage}")(
            _stage_agent(app, runner, topics, sources, fault)
        )

    if exactly_once:

        @app.task
        async def stages_exactly_once() -> None:
            """The stages, each fetch's partitions in Kafka transactions."""

            def judge_for(runner: StageRunner, publish: Publish) -> JudgeRecord:
                return stage_judge(runner, topics, sources, fault, publish)

            await ExactlyOnceStages(settings, runners, topics, judge_for).run()

    # mode types its receivers with mypy_extensions' VarArg/NamedArg, which no
    # `async def` with a named `assigned` matches, though Faust calls it so.
    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def _assigned(sender: Any, assigned: Any, **kwargs: Any) -> None:
        for stage, runner in runners.items():
            runner.forget({tp.partition for tp in assigned if tp.topic == topics.stage(stage)})

    return runners


def _table(app: faust.App, topics: Topics, stage: Stage, name: str, partitions: int) -> Any:
    """One of a stage's stores, a Faust table with its changelog."""
    return app.Table(
        f"{stage}-{name}",
        default=None,
        partitions=partitions,
        changelog_topic=app.topic(
            topics.changelog(stage, name),
            partitions=partitions,
            compacting=True,
            key_serializer="json",
            value_serializer="json",
            # As Faust declares its own changelogs: read only to
            # restore, never acknowledged. Acked, its stall monitor
            # watched them and logged an ERROR every few seconds
            # once a worker had run 5 minutes.
            acks=False,
        ),
    )


class PolicyVersions:
    """The versions in force (streams/policy_history.py), applied to the
    stages and the alert router: the earliest judges what came before it, each
    later one events stamped from its time on."""

    def __init__(self, runners: dict[Stage, StageRunner]) -> None:
        self.runners = runners
        self.applied: dict[str, float] = {}
        self.routers: list[Any] = []  # the alert router, once built: the same versions

    def apply(self, found: list[PolicyVersion]) -> None:
        applied = self.applied
        for v in found:
            if v.version in applied or (
                applied and v.effective_from.timestamp() <= max(applied.values())
            ):
                continue
            since = v.effective_from.timestamp()
            first = not applied
            applied[v.version] = since
            for runner in self.runners.values():
                runner.reload(v.parsed(), float("-inf") if first else since)
            for router in self.routers:
                router.adopt(v.parsed())
            if not first:
                metrics.POLICY_RELOADS.labels("loaded").inc()
                log.warning(
                    "policy version %s (%s) loaded; it judges events stamped from %s on",
                    v.version,
                    v.source,
                    v.effective_from.isoformat(),
                )


def _policy_reload(
    app: faust.App, settings: Settings, policy_file: PolicyFile, versions: PolicyVersions
) -> None:
    topics = Topics(settings.topic_prefix)
    polls = [0]

    @app.timer(interval=POLICY_POLL_SECONDS)
    async def reload_policy() -> None:
        """A changed policy file is recorded as a new version (effective from
        now); one that does not validate is refused, and the running one stays.
        Every version recorded, by this worker or another, is applied here."""
        new = _changed_policy(policy_file)
        polls[0] += 1
        # Other workers' versions: read every few polls (a consumer each time).
        if new is None and polls[0] % HISTORY_EVERY_POLLS:
            return
        try:
            if new is not None:
                found = await asyncio.to_thread(
                    record_if_changed, settings, new, str(policy_file.path)
                )
            else:
                found = await asyncio.to_thread(
                    lambda: in_force(read_versions(settings.kafka, topics.policy))
                )
        except KafkaUnavailable as exc:
            log.warning("policy history unreadable (%s); tried again shortly", exc)
            return
        versions.apply(found)


def _changed_policy(policy_file: PolicyFile) -> Policy | None:
    """The file's policy if it changed and validates; logged, None, if not."""
    try:
        return policy_file.changed()
    except OSError as exc:
        log.warning(
            "policy file %s unreadable (%s); keeping the running policy",
            policy_file.path,
            exc.strerror,
        )
    except PolicyError as exc:
        metrics.POLICY_RELOADS.labels("refused").inc()
        log.warning(
            "policy %s refused, the running policy stays:\n%s",
            policy_file.path,
            "\n".join(f"  {p}" for p in exc.problems),
        )
    return None


def _web_pages(app: faust.App) -> None:
    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        body, content_type = metrics.exposition()
        return web.bytes(body, headers={"Content-Type": content_type})

    @app.page("/healthz")
    async def health_page(web: Any, request: Any) -> Any:
        """200 while the worker runs (a liveness probe), 503 once it is
        stopping after a fault; the pipeline's health is on /metrics."""
        if app.crashed:
            return web.text("stopping\n", status=503)
        return web.text("ok\n")


def _lag_report(app: faust.App, topics: Topics, runners: dict[Stage, StageRunner]) -> None:
    # The input topics' lag is the validator's to report.
    watched_topics = {topics.stage(s) for s in STAGES}

    @app.timer(interval=METRICS_SECONDS)
    async def report_lag() -> None:
        """Consumer lag of the rules' topics and how far each stage's event
        clock trails the wall clock, for /metrics."""
        # Just after a rebalance a partition has no highwater yet, or is gone
        # again (None): a timer that raised would stop the whole worker.
        behind = await records_behind_by_topic(cast(Trailing, app.consumer))
        if behind is None:
            return
        for topic in watched_topics:
            # Topics lost in a rebalance read 0 here, not their last value.
            metrics.CONSUMER_LAG.labels("rules", topic).set(behind.get(topic, 0))
        now = time.time()
        for stage, runner in runners.items():
            runner.export_counts()
            held = [c for c in runner.event_clocks() if c != float("-inf")]
            if held:
                metrics.EVENT_TIME_LAG.labels(stage).set(max(0.0, now - min(held)))


def _sinks(
    app: faust.App,
    settings: Settings,
    policy: Policy,
    pseudonyms: Pseudonymiser,
    versions: PolicyVersions,
) -> None:
    if settings.es_url:

        @app.task
        async def findings_to_elasticsearch() -> None:
            """The Elasticsearch sink, beside the rules in every worker; the
            findings topic's partitions are shared among the workers' sinks."""
            from streams.sink import FindingsSink

            await FindingsSink(settings).run()

        @app.task
        async def dlp_retractions() -> None:
            """Vendors' undos of DLP matches resolve their findings (streams/retractions.py)."""
            from streams.retractions import Retractions

            await Retractions(settings, pseudonyms).run()

    if settings.channels:
        # Built here, so that a route naming an unconfigured channel stops the
        # worker at its start, with every problem listed.
        from streams.alerts.router import AlertRouter

        # No watcher of its own: it takes the versions the rules take.
        alert_router = AlertRouter(settings, policy)
        versions.routers.append(alert_router)

        @app.task
        async def findings_to_channels() -> None:
            """The alert router, beside the rules in every worker; the findings
            topic's partitions are shared among the workers' routers."""
            await alert_router.run()


# Sends one output record (topic, key, value, run once it is delivered); the
# future settles with the delivery (None: nothing to wait for).
Publish = Callable[
    [str, bytes | None, bytes, Callable[[], None]], Awaitable[asyncio.Future[Any] | None]
]


def _stage_agent(
    app: faust.App, runner: StageRunner, topics: Topics, sources: int, fault_event_id: str
) -> Any:
    """At least once: the Faust agent of one stage."""
    changes = runner.changes
    judge_record = stage_judge(runner, topics, sources, fault_event_id, changes.publish)

    async def judge(stream: Any) -> None:
        try:
            async for event in stream.events():
                delivering: list[asyncio.Future[Any]] = []
                await judge_record(event, delivering)
                # The findings are on the broker before the state changes that made
                # them (a pending decision's tombstone): a crash between the two
                # leaves the decision to be made again from the changelog, not lost.
                if delivering:
                    await asyncio.gather(*delivering, return_exceptions=True)
                runner.keep_clocks()
                # Before the record is acknowledged, so before its offset is committed.
                await changes.write()
        except Undelivered as exc:
            await _stop_worker(app, exc)
            raise

    return judge


async def _stop_worker(app: faust.App, exc: Undelivered) -> None:
    """A worker that cannot deliver commits nothing from then on: restarted
    by Faust, its agent would fail again and again while the worker kept its
    partitions. It stops instead, exit status 1, so that its service manager
    restarts it and the group gives its partitions to another meanwhile."""
    if not app.crashed:
        log.critical("stopping the worker: %s", exc)
        await app.crash(exc)


def stage_judge(
    runner: StageRunner, topics: Topics, sources: int, fault_event_id: str, publish: Publish
) -> JudgeRecord:
    """How a stage judges one record, its outputs sent with `publish`."""

    def judge_event(
        engine: Engine, partition: int, source: str, appended: float, raw: bytes
    ) -> list[Finding]:
        """One event, then the clock it moves (its source's, appended then)."""
        parsed = EventAdapter.validator.validate_json(raw)
        if fault_event_id and parsed.event_id == fault_event_id:
            raise InjectedFault(
                f"told to fail on event {parsed.event_id} (SEPWATCH_TEST_FAULT_EVENT_ID)"
            )
        ts = parsed.timestamp.timestamp()
        found = engine.process(parsed, late=runner.late(partition, source, ts, engine.lateness))
        return found + engine.advance(runner.clock(partition, source, ts, appended=appended))

    async def judged(
        work: Callable[[], list[Finding]],
        raw: bytes,
        where: dict[str, Any],
        delivering: list[asyncio.Future[Any]],
    ) -> list[Finding]:
        """What `work` found. One that raises is tried again after a pause;
        one that still raises goes to the dead letters with the reason, and
        the rest of the record is judged (Faust would acknowledge the record
        and drop the rest of its events)."""
        for pause in (*JUDGE_RETRY_SECONDS, None):
            try:
                return work()
            except Exception as exc:
                reason = f"the {runner.stage} stage raised {_reason(exc)}"
                if pause is None:
                    log.error("%s; to the dead letters (%s)", reason, where)
                    letter = dead_letter(raw, reason, where={**where, "stage": runner.stage})
                    fut = await publish(
                        topics.dead_letters, None, _json(letter), _stage_error_delivered
                    )
                    if fut is not None:
                        delivering.append(fut)
                    return []
                log.warning("%s (%s); judged again in %s s", reason, where, pause)
                await asyncio.sleep(pause)
        return []

    async def emit(found: list[Finding], delivering: list[asyncio.Future[Any]]) -> None:
        for f in found:
            fut = await publish(
                topics.findings,
                f.finding_id.encode(),
                f.model_dump_json().encode(),
                functools.partial(_finding_delivered, f, runner.entities),
            )
            if fut is not None:
                delivering.append(fut)

    async def judge_record(event: Any, delivering: list[asyncio.Future[Any]]) -> None:
        msg = event.message
        partition = msg.partition
        engine = runner.engine(partition)
        where = {"topic": msg.topic, "partition": partition, "offset": msg.offset}
        if event.key == EVENTS:
            for n, (source, appended, raw) in enumerate(read_events(event.value)):
                if type(raw) is TimeOnly:
                    if raw.stream != CLOCK:  # else an input partition's clock alone
                        engine.pass_time(raw.stream, raw.ts)
                    clock = runner.clock(partition, source, raw.ts, appended=appended)
                    found = engine.advance(clock)
                else:
                    found = await judged(
                        functools.partial(judge_event, engine, partition, source, appended, raw),  # type: ignore[arg-type]
                        raw,  # type: ignore[arg-type]
                        {**where, "event": n},
                        delivering,
                    )
                await emit(found, delivering)
            return
        headers = dict(event.headers or {})
        # The input partition the mark came through.
        source = headers.get(SOURCE, b"").decode()
        if event.key == END_OF_INPUT:
            # The markers seen so far live in the partition's table: those read
            # before a crash are committed and not read again, and without them
            # the partition would never flush what still waits.
            meta = PartitionStore(runner.tables["meta"], partition, runner.changes)
            ends = dict(meta.get(INPUT_ENDS) or {})
            ends[source] = float(json.loads(event.value or b"{}").get("max_ts", 0.0))
            if len(ends) < sources:
                meta[INPUT_ENDS] = ends
                return
            until = max(ends.values())
            found = await judged(lambda: engine.flush(until=until), b"", where, delivering)
            if INPUT_ENDS in meta:
                del meta[INPUT_ENDS]
        elif event.key == SOURCE_IDLE:
            # An older validator's: a clock moved by the time a partition was
            # read, not by what it holds, is not what replay computes.
            return
        elif event.key == SOURCE_BUSY:
            # Holds the clock; never moves it.
            runner.busy(partition, source)
            return
        else:
            # One event with its append time in a header: what workers wrote
            # before batches, still in the stage topics after an upgrade.
            appended = _seconds(headers.get(APPENDED), msg.timestamp)
            found = await judged(
                functools.partial(judge_event, engine, partition, source, appended, event.value),
                event.value,
                where,
                delivering,
            )
        await emit(found, delivering)

    return judge_record


class InjectedFault(RuntimeError):
    """What a stage raises on the event SEPWATCH_TEST_FAULT_EVENT_ID names: for
    the tests and the fault benchmark, which check that a stage that raises
    skips nothing else and dead-letters the event."""


def _reason(exc: Exception) -> str:
    """Why judging raised, masked: a validation error's message quotes its input."""
    if isinstance(exc, ValidationError):
        return f"ValidationError: {reason_of(exc)[0]}"
    return mask_text(f"{type(exc).__name__}: {str(exc)[:300]}")


def _finding_delivered(finding: Finding, entities: frozenset[str]) -> None:
    """Counted once the broker has it, not when it is decided; by an entity the
    policy names (or `other`), never by raw event text."""
    entity = metrics.entity_label(finding.entity, entities)
    metrics.FINDINGS.labels(finding.rule_id, finding.severity, entity, finding.status).inc()
    metrics.DECISION_LATENCY.labels(finding.rule_id).observe(
        max(0.0, time.time() - finding.timestamp.timestamp())
    )


def _stage_error_delivered() -> None:
    metrics.DEAD_LETTERS.labels("stage_error").inc()


def _seconds(header: bytes | None, fallback: float) -> float:
    try:
        value = float(header) if header else fallback
    except ValueError:
        return fallback
    return value if math.isfinite(value) else fallback


def _changelog_before_commit(app: faust.App, changes: list[TableChanges]) -> None:
    """Make the producer's flush, which Faust awaits before it commits offsets,
    wait until every table change handed to it so far is on the broker.

    Table changes go to the changelog through Faust's producer buffer (or,
    batched, straight to the Kafka client: TableChanges). Its flush returns
    as soon as 0.1 s pass without a record leaving the buffer, or when the
    buffer is empty while its last record is still being handed to the Kafka
    client, and the client's own flush does not fail on a failed delivery;
    Faust then commits the offsets of events whose changes are not sent.
    Under CPU load that happens, and a worker killed right after restores
    tables without those changes while the events are not read again:
    pending decisions vanish and their findings are lost. Here flush awaits
    each record's delivery instead, and raises once any delivery failed (no
    offset is committed past it: the events are read again by the worker
    that takes over)."""
    buffer = app.producer.buffer
    # Faust's own sends (the adapters' agent) are watched as the stages' are.
    faust_sends = TableChanges(app.producer)
    put = buffer.put

    def tracked_put(fut: Any) -> None:
        faust_sends._track(fut, "a topic written through Faust")
        put(fut)

    async def flush() -> None:
        # Changes made after this point belong to events not yet acknowledged,
        # whose offsets this commit does not cover.
        try:
            for stage_changes in [*changes, faust_sends]:
                await stage_changes.settled()
        except Undelivered as exc:
            await _stop_worker(app, exc)
            raise

    buffer.put = tracked_put  # type: ignore[method-assign]
    buffer.flush = flush  # type: ignore[method-assign]


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
    # The aiokafka driver's consumer (kafka:// brokers): its private workings
    # (_thread, _paused_partitions, _read_offset) are what this wraps.
    consumer = cast(FaustKafkaConsumer, app.consumer)
    perform_seek = consumer.perform_seek
    pause_partitions = consumer.pause_partitions
    resume_partitions = consumer.resume_partitions
    resume_flow = consumer.resume_flow
    # Stream partition -> its read offset once sought, restored when it resumes:
    # a record handed out before the pause may set it later, past records to re-read.
    sought: dict[Any, int | None] = {}

    def stream_partitions() -> set[Any]:
        changelogs = app.tables.changelog_topics
        return {tp for tp in consumer.assignment() if tp.topic not in changelogs}

    thread = consumer._thread  # the Kafka client lives on this thread's loop

    def in_client(tps: set[Any], *, paused: bool) -> None:
        """Pause or resume the partitions in the Kafka client too, as Faust just
        did in its own books; on the client's own loop, where its futures live."""
        if not thread.thread_loop.is_closed():
            thread.thread_loop.call_soon_threadsafe(_pause_in_client, thread, tps, paused)

    async def paused_in_client(tps: set[Any]) -> None:
        _pause_in_client(thread, tps, True)

    one_at_a_time = asyncio.Lock()  # the fetch loop's seek and the recovery's (above)
    resumed = [0]  # resumptions of the flow so far
    seeks: Counter[Any] = Counter()  # seeks of each stream partition so far
    targets: dict[Any, int] = {}  # where the last seek put each stream partition

    async def seek_paused() -> None:
        async with one_at_a_time:
            resumed_before = resumed[0]
            streams = stream_partitions()
            fetching = {tp for tp in streams if tp not in consumer._paused_partitions}
            pause_partitions(fetching)
            # Done in the client before the seek is queued there: a handover
            # of their records, if any, comes before the seek, which undoes it.
            await thread.call_thread(paused_in_client, fetching)
            await perform_seek()
            read_offset = consumer._read_offset
            unsought = [tp for tp in streams if not read_offset.get(tp)]
            if unsought:
                for tp, offset in (await consumer.earliest_offsets(*unsought)).items():
                    await consumer.seek(tp, offset)
            seeks.update(streams)
            targets.update({tp: read_offset.get(tp) or 0 for tp in streams})
            # An earlier seek's partitions, still held, take this seek's offsets.
            held = fetching | (sought.keys() & streams)
            sought.update({tp: read_offset.get(tp) for tp in held})
            if resumed[0] != resumed_before:
                # The flow resumed (and the queues were cleared) during this seek:
                # no later resumption would release these partitions.
                resume_sought()

    def pause(tps: Any) -> None:
        tps = set(tps)
        # Faust pausing a partition outranks a resumption deferred here.
        for tp in tps:
            sought.pop(tp, None)
        pause_partitions(tps)
        in_client(tps, paused=True)

    def resume(tps: Any) -> None:
        tps = set(tps)
        resume_partitions(tps)
        in_client(tps, paused=False)

    def resume_sought() -> None:
        due = {tp: offset for tp, offset in sought.items() if tp in consumer.assignment()}
        sought.clear()
        consumer._read_offset.update(due)
        consumer.resume_partitions(due)

    def resume_flow_and_sought() -> None:
        resume_flow()
        resumed[0] += 1
        if sought:
            resume_sought()

    getmany = consumer.getmany

    async def getmany_since_seek(timeout: float) -> AsyncIterator[tuple[Any, Any]]:
        """Faust's fetch, less the records of a partition sought since the
        fetch began: they come from before the seek, or moved the Kafka
        client's position on past it; the partition is read again from where
        the seek put it."""
        before = seeks.copy()
        stale: set[Any] = set()
        async for tp, message in getmany(timeout=timeout):
            if seeks[tp] == before[tp]:
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
            target = min(targets.get(tp, message.offset), message.offset)
            try:
                position = await consumer.position(tp)
            except IllegalStateError:
                continue  # no longer ours
            if position is None or target < position:
                log.info(
                    "%s:%s: a fetch begun before its seek took it to %s; read again from %s",
                    tp.topic,
                    tp.partition,
                    position,
                    target,
                )
                await consumer.seek(tp, target)
                seeks[tp] += 1
                targets[tp] = target

    consumer.getmany = getmany_since_seek  # type: ignore[method-assign]
    consumer.perform_seek = seek_paused  # type: ignore[method-assign]
    consumer.pause_partitions = pause  # type: ignore[method-assign]
    consumer.resume_partitions = resume  # type: ignore[method-assign]
    consumer.resume_flow = resume_flow_and_sought  # type: ignore[method-assign]


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


def _json(record: dict[str, Any]) -> bytes:
    return json.dumps(record, ensure_ascii=False).encode()
