"""`sepwatch replay`: the engine over a file. File order is arrival order."""

from __future__ import annotations

import functools
import json
import secrets
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO

from pydantic import ValidationError

from detectors import Engine, Stage
from detectors.dead_letters import dead_letter, reason_of
from detectors.engine import AnyEvent
from detectors.pseudonyms import Pseudonymiser
from schemas import EventAdapter, Finding, Policy
from streams.admission import MAX_LINE_BYTES, out_of_range, too_long
from streams.collector import long_lived_state
from streams.partition_clock import PartitionedReplay, StreamEmulation, event_key, line_time
from streams.topics import partition_of


@dataclass
class ReplaySummary:
    lines: int = 0
    events: int = 0
    dead_letters: int = 0
    blank_lines: int = 0
    findings: int = 0
    by_rule_entity: Counter[tuple[str, str]] = field(default_factory=Counter)
    by_status: Counter[str] = field(default_factory=Counter)
    engine_stats: Counter[str] = field(default_factory=Counter)
    pseudonymised: Counter[str] = field(default_factory=Counter)  # identifiers, by field


def utc_now() -> datetime:
    return datetime.now(UTC)


def replay(
    policy: Policy,
    lines: Iterable[bytes],
    findings_out: IO[str],
    dead_out: IO[str],
    *,
    on_progress: Callable[[int], None] | None = None,
    now: Callable[[], datetime] = utc_now,
    source_name: str = "-",
    engine: Engine | None = None,
    pseudonyms: Pseudonymiser | None = None,
    partitions: int = 0,
    history: Sequence[tuple[Policy, float]] = (),
    learned_identity: bool = False,
) -> ReplaySummary:
    """Run every line through the engine; write findings and dead letters as
    JSON lines. `on_progress` is told the bytes read, every few thousand lines.
    Pass `engine` to keep hold of it (and its state) afterwards. Identifiers in
    the events' fields are pseudonymised under `pseudonyms`' key; without one,
    under a key of this run alone (nothing raw comes out, but the pseudonyms
    match no other run's).

    With `partitions`, the run computes what a stream of that many
    partitions computes from `sepwatch produce` of the file
    (streams/partition_clock.py): each input partition's own clock, stage
    engines per partition; `history` then holds the later policy versions,
    each with the time it took effect. Without, one engine on one clock."""
    pseudonyms = pseudonyms or Pseudonymiser(secrets.token_bytes(32))
    judge: Engine | PartitionedReplay
    if partitions > 0:
        judge = PartitionedReplay(
            StreamEmulation(
                functools.partial(_stage_engine, policy, now, partitions, history),
                partitions,
                learned_identity=learned_identity,
            )
        )
    elif engine is not None:
        judge = engine
    else:
        judge = Engine(policy, now=now)
        for later, since in history:
            judge.set_policy(later, effective_from=since)
    with long_lived_state():
        summary = _replay(
            judge, lines, findings_out, dead_out, on_progress, source_name, pseudonyms
        )
    summary.engine_stats = judge.stats
    return summary


def _stage_engine(
    policy: Policy,
    now: Callable[[], datetime],
    partitions: int,
    history: Sequence[tuple[Policy, float]],
    stage: Stage,
    partition: int,
) -> Engine:
    """One stage partition's engine, as the worker builds it."""
    engine = Engine(
        policy,
        now=now,
        stage=stage,
        owns_entity=lambda e: partition_of(e, partitions) == partition,
        external_clock=True,
    )
    for later, since in history:
        engine.set_policy(later, effective_from=since)
    return engine


def _replay(
    engine: Engine | PartitionedReplay,
    lines: Iterable[bytes],
    findings_out: IO[str],
    dead_out: IO[str],
    on_progress: Callable[[int], None] | None,
    source_name: str,
    pseudonyms: Pseudonymiser,
) -> ReplaySummary:
    summary = ReplaySummary()
    out = _Written(summary, findings_out, dead_out, source_name)
    # pydantic-core directly: no wrapper per line. The first checks the strings
    # for identifiers as it parses; what it refuses is parsed again and looked at.
    parse_clean, validate = pseudonyms.parse_clean, EventAdapter.validator.validate_json
    pseudonymised = pseudonyms.event
    read = 0
    partitioned = engine if isinstance(engine, PartitionedReplay) else None
    take: Callable[[AnyEvent, str], list[Finding]] = (
        engine.take if isinstance(engine, PartitionedReplay) else _by_event(engine.process)
    )
    for number, line in enumerate(lines, start=1):
        summary.lines = number
        read += len(line)
        if on_progress is not None and number % 4096 == 0:
            on_progress(read)
        if len(line) > MAX_LINE_BYTES:
            reason = f"line of {len(line)} bytes is over the {MAX_LINE_BYTES}-byte limit"
            out.dead_letter(line, number, reason, None)
            continue
        try:
            event, clean = _parse(line, parse_clean, validate)
        except ValidationError as exc:
            out.not_an_event(line, number, exc, partitioned)
            continue
        # No broker append time here to cap events ahead of: a file is a
        # bounded record, judged on its own clock; only times the rules cannot
        # compute with are refused (they would stop the run).
        bad_time = out_of_range(event)
        if bad_time is not None:
            out.dead_letter(line, number, bad_time, None)
            continue
        key = event_key(event)  # placed by its raw key, as `produce` places it
        if not clean:
            try:
                event, fields = pseudonymised(event)
            except ValidationError as exc:
                out.too_long(line, number, exc)
                continue
            if fields:
                summary.pseudonymised.update(fields)
        summary.events += 1
        found = take(event, key)
        if found:
            out.emit(found)
    out.emit(engine.flush())
    if on_progress is not None:
        on_progress(read)
    return summary


@dataclass
class _Written:
    """Where a replay writes findings and dead letters, each counted in the summary."""

    summary: ReplaySummary
    findings_out: IO[str]
    dead_out: IO[str]
    source_name: str

    def emit(self, findings: list[Finding]) -> None:
        for f in findings:
            self.findings_out.write(f.model_dump_json())
            self.findings_out.write("\n")
            self.summary.findings += 1
            self.summary.by_rule_entity[(f.rule_id, f.entity)] += 1
            self.summary.by_status[f.status] += 1

    def dead_letter(
        self, line: bytes, number: int, reason: str, errors: list[dict[str, object]] | None
    ) -> None:
        _dead(self.dead_out, line, number, self.source_name, reason, errors)
        self.summary.dead_letters += 1

    def not_an_event(
        self,
        line: bytes,
        number: int,
        exc: ValidationError,
        partitioned: PartitionedReplay | None,
    ) -> None:
        """A blank line is counted; any other a dead letter, whose time still
        moves the partitions' clocks, as `produce` keeps time by it."""
        if not line.strip():  # checked only here: stripping every line costs
            self.summary.blank_lines += 1
            return
        reason, errors = reason_of(exc)
        self.dead_letter(line, number, reason, errors)
        if partitioned is not None:
            at = line_time(line)
            if at is not None:
                self.emit(partitioned.time_of_line(at))

    def too_long(self, line: bytes, number: int, exc: ValidationError) -> None:
        """A field the pseudonyms would make longer than the contract allows."""
        where = {"file": self.source_name, "line": number}
        self.dead_out.write(json.dumps(too_long(line, exc, where), ensure_ascii=False))
        self.dead_out.write("\n")
        self.summary.dead_letters += 1


def _parse(
    line: bytes, parse_clean: Callable[[bytes], AnyEvent], validate: Callable[[bytes], AnyEvent]
) -> tuple[AnyEvent, bool]:
    """The event, and whether the parse found its strings clean of identifiers
    (else the pseudonymiser looks at them); ValidationError if it is none."""
    try:
        return parse_clean(line), True
    except ValidationError:
        return validate(line), False


def _by_event(
    process: Callable[[AnyEvent], list[Finding]],
) -> Callable[[AnyEvent, str], list[Finding]]:
    """One engine on one clock: where `produce` would place the event is moot."""
    return lambda event, _key: process(event)


def _dead(
    out: IO[str],
    line: bytes,
    number: int,
    source: str,
    reason: str,
    errors: list[dict[str, object]] | None,
) -> None:
    record = dead_letter(
        line.rstrip(b"\r\n"), reason, where={"file": source, "line": number}, errors=errors
    )
    out.write(json.dumps(record, ensure_ascii=False))
    out.write("\n")
