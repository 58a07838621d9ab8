"""A stage's judging of its records: the engines of its partitions held here
(StageRunner, their stores in streams/stages/store.py, their clocks in
streams/stages/clock.py), and how one stage record is judged, its findings
and dead letters sent (stage_judge). The same for either guarantee: Faust's
agents (streams/topology.py) or Kafka transactions (streams/exactly_once.py)
feed it records and commit what it wrote."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError

from detectors import Engine, EngineState, Stage
from detectors.dead_letters import dead_letter, reason_of
from detectors.masking import mask_text
from schemas import EventAdapter, Finding, Policy
from streams import metrics
from streams.exactly_once import JudgeRecord
from streams.partition_clock import CLOCK
from streams.replay import utc_now
from streams.stages.clock import StageClocks
from streams.stages.store import PartitionStore, TableChanges
from streams.topics import STORES, Topics, partition_of
from streams.validator import (
    END_OF_INPUT,
    EVENTS,
    SOURCE,
    SOURCE_BUSY,
    SOURCE_IDLE,
    TimeOnly,
    read_events,
)

log = logging.getLogger("sepwatch")

# Key in a stage partition's meta table: end-of-input markers received, by source.
INPUT_ENDS = "input_ends"
# Pauses before a record whose judging raised is judged again; then it is dead-lettered.
JUDGE_RETRY_SECONDS = (0.1, 0.5, 2.0)


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
        self.clocks = StageClocks(len(sources), tables, self.changes)

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

    def keep_clocks(self) -> None:
        """Into the meta table, with the record that moved them."""
        self.clocks.keep()

    def event_clocks(self) -> list[float]:
        """The event clock of each partition held here."""
        return self.clocks.event_clocks()

    def forget(self, partitions: set[int]) -> None:
        """After a rebalance: engines are rebuilt from the tables when needed,
        and the partition's clock starts again from its sources."""
        self.clocks.forget(partitions)
        for p in partitions:
            engine = self.engines.pop(p, None)
            if engine is not None:
                export_counts(self.stage, engine)

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


# Sends one output record (topic, key, value, run once it is delivered); the
# future settles with the delivery (None: nothing to wait for).
Publish = Callable[
    [str, bytes | None, bytes, Callable[[], None]], Awaitable[asyncio.Future[Any] | None]
]


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
        clocks = self.runner.clocks
        found = engine.process(parsed, late=clocks.late(partition, source, ts, engine.lateness))
        return found + engine.advance(clocks.clock(partition, source, ts))

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
            self.runner.clocks.busy(partition, source)
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
        for n, (source, raw) in enumerate(read_events(value)):
            if type(raw) is TimeOnly:
                if raw.stream != CLOCK:  # else an input partition's clock alone
                    engine.pass_time(raw.stream, raw.ts)
                found = engine.advance(self.runner.clocks.clock(partition, source, raw.ts))
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


def _json(record: dict[str, Any]) -> bytes:
    return json.dumps(record, ensure_ascii=False).encode()
