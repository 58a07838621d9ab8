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
import functools
import json
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import faust
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
from streams.stages.faust_compat import seek_before_fetch
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
_T = TypeVar("_T")

POLICY_POLL_SECONDS = 2.0
HISTORY_EVERY_POLLS = 5
# Wall-clock silence, without data or clock marks, after which a source no longer
# holds the clock: only a validator that is gone is that silent (a quiet input
# partition gets clock marks, streams/partition_clock.py).
IDLE_SECONDS = 300.0
# Key in a stage partition's meta table: end-of-input markers received, by source.
INPUT_ENDS = "input_ends"
# And the input partitions' clocks it has learned (streams/partition_clock.py),
# so a restored stage judges an event late, or not, as before.
SOURCE_CLOCKS = "source_clocks"
METRICS_SECONDS = 5.0
# How long a worker stopping after a refused write may take before it exits anyway.
STOP_GRACE_SECONDS = 60.0
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

    def _track(self, fut: asyncio.Future[Any], topic: str) -> None:
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
        self._track(fut, topic)
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


@dataclass(frozen=True)
class _Others:
    """What a partition's sources other than `source` hold its clock at: the
    smallest largest-event-time of those heard (`busy`). True until one of
    them is heard from, or until the first of them heard falls silent
    (IDLE_SECONDS after `first_heard`)."""

    source: str
    busy: float
    first_heard: float

    @classmethod
    def of(cls, source: str, clocks: dict[str, tuple[float, float]], now: float) -> _Others:
        busy = float("inf")
        first_heard = float("inf")
        for s, (t, heard) in clocks.items():
            if s == source or now - heard >= IDLE_SECONDS:
                continue
            first_heard = min(first_heard, heard)
            busy = min(busy, t)
        return cls(source, busy, first_heard)


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

    def clock(self, partition: int, source: str, ts: float) -> float:
        """The partition's event clock: the slowest active source's largest event
        time; without this, one topic read ahead of another would push the
        watermark past events still to come. A quiet source moves its own
        clock with clock marks (streams/partition_clock.py); one silent for
        IDLE_SECONDS (its validator gone) no longer holds it."""
        now = time.monotonic()
        # Called for every event: no default built and thrown away per call.
        clocks = self.clocks.get(partition)
        if clocks is None:
            clocks = self.clocks[partition] = self._restored(partition)
        seen, _ = clocks.get(source, (float("-inf"), now))
        if ts > seen:
            seen = ts
            self.moved.add(partition)
        clocks[source] = (seen, now)
        # Just after a start or a rebalance no source is known yet: until every
        # source has been heard, or IDLE_SECONDS have passed, it holds.
        since = self.since.setdefault(partition, now)
        if len(clocks) < self.sources and now - since < IDLE_SECONDS:
            return float("-inf")
        # What the other sources say is kept while this source's run of events
        # lasts, instead of asked of every source per event: until one of them
        # is heard from, or falls silent.
        others = self.others.get(partition)
        if others is None or others.source != source or now - others.first_heard >= IDLE_SECONDS:
            others = self.others[partition] = _Others.of(source, clocks, now)
        last = max(self.last.get(partition, float("-inf")), min(seen, others.busy))
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
        """The source has records to route (a validator took it over): heard
        now, it holds the clock at its largest event time again."""
        clocks = self.clocks.get(partition)
        if clocks is None:
            clocks = self.clocks[partition] = self._restored(partition)
        seen, _ = clocks.get(source, (float("-inf"), 0.0))
        clocks[source] = (seen, time.monotonic())
        self.others.pop(partition, None)

    def event_clocks(self) -> list[float]:
        """The event clock of each partition held here."""
        return list(self.last.values())

    def forget(self, partitions: set[int]) -> None:
        """After a rebalance: engines are rebuilt from the tables when needed,
        and the partition's clock starts again from its sources."""
        for p in partitions:
            self.clocks.pop(p, None)
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
    changes = {
        stage: TableChanges(app.producer, frozenset({topics.changelog(stage, "meta")}))
        for stage in STAGES
    }
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
        # Should the orderly stop hang (a thread that does not end, an agent's
        # queue never emptied), the process exits all the same: nothing is
        # committed past the refused write, so nothing is lost by ending it.
        guard = threading.Timer(STOP_GRACE_SECONDS, _exit_now)
        guard.daemon = True
        guard.start()
        await app.crash(exc)


def _exit_now() -> None:
    log.critical("the worker did not stop within %.0f s; exiting", STOP_GRACE_SECONDS)
    os._exit(1)


def stage_judge(
    runner: StageRunner, topics: Topics, sources: int, fault_event_id: str, publish: Publish
) -> JudgeRecord:
    """How a stage judges one record, its outputs sent with `publish`."""
    return _StageJudge(runner, topics, sources, fault_event_id, publish).judge_record


class _StageJudge:
    """One stage's judging of its records (stage_judge)."""

    def __init__(
        self,
        runner: StageRunner,
        topics: Topics,
        sources: int,
        fault_event_id: str,
        publish: Publish,
    ) -> None:
        self.runner = runner
        self.topics = topics
        self.sources = sources
        self.fault_event_id = fault_event_id
        self.publish = publish

    def judge_event(self, engine: Engine, partition: int, source: str, raw: bytes) -> list[Finding]:
        """One event, then the clock it moves (its source's)."""
        parsed = EventAdapter.validator.validate_json(raw)
        if self.fault_event_id and parsed.event_id == self.fault_event_id:
            raise InjectedFault(
                f"told to fail on event {parsed.event_id} (SEPWATCH_TEST_FAULT_EVENT_ID)"
            )
        ts = parsed.timestamp.timestamp()
        runner = self.runner
        found = engine.process(parsed, late=runner.late(partition, source, ts, engine.lateness))
        return found + engine.advance(runner.clock(partition, source, ts))

    async def judged(
        self,
        work: Callable[[], list[Finding]],
        raw: bytes,
        where: dict[str, Any],
        delivering: list[asyncio.Future[Any]],
    ) -> list[Finding]:
        """What `work` found. One that raises is tried again after a pause;
        one that still raises goes to the dead letters with the reason, and
        the rest of the record is judged (Faust would acknowledge the record
        and drop the rest of its events)."""
        stage = self.runner.stage
        for pause in (*JUDGE_RETRY_SECONDS, None):
            try:
                return work()
            except Exception as exc:
                reason = f"the {stage} stage raised {_reason(exc)}"
                if pause is None:
                    log.error("%s; to the dead letters (%s)", reason, where)
                    letter = dead_letter(raw, reason, where={**where, "stage": stage})
                    fut = await self.publish(
                        self.topics.dead_letters, None, _json(letter), _stage_error_delivered
                    )
                    if fut is not None:
                        delivering.append(fut)
                    return []
                log.warning("%s (%s); judged again in %s s", reason, where, pause)
                await asyncio.sleep(pause)
        return []

    async def emit(self, found: list[Finding], delivering: list[asyncio.Future[Any]]) -> None:
        for f in found:
            fut = await self.publish(
                self.topics.findings,
                f.finding_id.encode(),
                f.model_dump_json().encode(),
                functools.partial(_finding_delivered, f, self.runner.entities),
            )
            if fut is not None:
                delivering.append(fut)

    async def judge_record(self, event: Any, delivering: list[asyncio.Future[Any]]) -> None:
        msg = event.message
        partition = msg.partition
        engine = self.runner.engine(partition)
        where = {"topic": msg.topic, "partition": partition, "offset": msg.offset}
        if event.key == EVENTS:
            await self.judge_batch(event.value, engine, partition, where, delivering)
            return
        headers = dict(event.headers or {})
        # The input partition the mark came through.
        source = headers.get(SOURCE, b"").decode()
        if event.key == END_OF_INPUT:
            found = await self.end_of_input(
                event.value, engine, partition, source, where, delivering
            )
        elif event.key == SOURCE_IDLE:
            # An older validator's: a clock moved by the time a partition was
            # read, not by what it holds, is not what replay computes.
            return
        elif event.key == SOURCE_BUSY:
            # Holds the clock; never moves it.
            self.runner.busy(partition, source)
            return
        else:
            # One event alone: what workers wrote before batches, still in the
            # stage topics after an upgrade.
            found = await self.judged(
                functools.partial(self.judge_event, engine, partition, source, event.value),
                event.value,
                where,
                delivering,
            )
        await self.emit(found, delivering)

    async def judge_batch(
        self,
        value: bytes,
        engine: Engine,
        partition: int,
        where: dict[str, Any],
        delivering: list[asyncio.Future[Any]],
    ) -> None:
        # The entries' append times are no stage's concern any more.
        for n, (source, _, raw) in enumerate(read_events(value)):
            if type(raw) is TimeOnly:
                if raw.stream != CLOCK:  # else an input partition's clock alone
                    engine.pass_time(raw.stream, raw.ts)
                found = engine.advance(self.runner.clock(partition, source, raw.ts))
            else:
                found = await self.judged(
                    functools.partial(self.judge_event, engine, partition, source, raw),  # type: ignore[arg-type]
                    raw,  # type: ignore[arg-type]
                    {**where, "event": n},
                    delivering,
                )
            await self.emit(found, delivering)

    async def end_of_input(
        self,
        value: bytes | None,
        engine: Engine,
        partition: int,
        source: str,
        where: dict[str, Any],
        delivering: list[asyncio.Future[Any]],
    ) -> list[Finding]:
        """What the partition flushes once every input partition has sent its
        end-of-input marker (none before)."""
        # The markers seen so far live in the partition's table: those read
        # before a crash are committed and not read again, and without them
        # the partition would never flush what still waits.
        runner = self.runner
        meta = PartitionStore(runner.tables["meta"], partition, runner.changes)
        ends = dict(meta.get(INPUT_ENDS) or {})
        ends[source] = float(json.loads(value or b"{}").get("max_ts", 0.0))
        if len(ends) < self.sources:
            meta[INPUT_ENDS] = ends
            return []
        until = max(ends.values())
        found = await self.judged(lambda: engine.flush(until=until), b"", where, delivering)
        if INPUT_ENDS in meta:
            del meta[INPUT_ENDS]
        return found


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


def _json(record: dict[str, Any]) -> bytes:
    return json.dumps(record, ensure_ascii=False).encode()
