"""Lateness a partitioned stream can honour, and replay computing it exactly.

The rule (docs/lateness.md):

- Each input partition has its own clock: the largest event time, or clock
  mark, written to it so far. An event is late when it is stamped more than
  the allowed lateness before its own partition's clock; a late event is
  judged by the rules that need nothing else and joins nothing
  (detectors.engine, `process(late=...)`).
- A stage partition learns each input partition's clock from the events
  routed to it and from clock entries: the validator passes on every clock
  mark it reads, and the grid line (GRID_SECONDS) an input partition's clock
  crosses, to every stage partition that partition feeds.
- A stage partition's watermark is the slowest of the clocks it has learned,
  less the lateness; a decision waits until it passes the time it needs.

Every one of these is a function of what each input partition holds, in its
order, never of how the partitions' reads interleave: so a replay that places
a file's lines as `sepwatch produce` does (`partition_of(input_key)`) and
routes them as the validator does computes what the stream computes.

Clock marks: `sepwatch produce` writes one into every input partition each
time the file's largest event time crosses a grid line, so a partition that
gets few lines keeps the file's time; a validator writes one into an input
partition it has read to its end and that stayed quiet (QUIET_SECONDS) while
its other partitions moved on, so a quiet partition never holds decisions
forever. Written into the topic, a mark is read again the same after a
restart.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Union

from detectors import Engine, Stage, times_only
from detectors.engine import AnyEvent
from schemas import Finding
from streams.topics import INPUT_STREAMS, STAGES, partition_of, stage_keys, stage_partitions

# The key of a clock mark in an input topic; its value: {"ts": epoch seconds}.
CLOCK_MARK = b"__sepwatch_clock__"
# The stream name of a clock entry in a stage batch (validator.TimeOnly).
CLOCK = "clock"
GRID_SECONDS = 30.0
# Wall-clock quiet after which a validator writes a clock mark into a partition.
QUIET_SECONDS = 2.0
NEG = float("-inf")


def is_clock_mark(record: Any) -> bool:
    """A clock mark rather than an event: anything with a Kafka record's `key`
    (a consumed record, a record about to be sent)."""
    return bool(record.key == CLOCK_MARK)


# Which input streams each stage judges (validator.FEEDS is the same table).
FEEDS: dict[str, tuple[str, ...]] = {
    "device": ("saas_access", "device_posture"),
    "user": ("saas_access", "dlp_alert"),
    "review": ("saas_access", "device_posture", "dlp_alert", "control_review"),
}


def grid_of(ts: float) -> float:
    """The grid line at or before `ts`."""
    return math.floor(ts / GRID_SECONDS) * GRID_SECONDS


def line_time(line: bytes) -> float | None:
    """A line's event time as `sepwatch produce` reads it to keep the file's
    clock (None: no `stream` it routes, or no readable `timestamp`)."""
    try:
        event = json.loads(line)
        if not isinstance(event, dict) or event.get("stream") not in INPUT_STREAMS:
            return None
        return datetime.fromisoformat(event["timestamp"]).timestamp()
    except (KeyError, TypeError, ValueError, RecursionError, OverflowError):
        return None


def event_key(event: AnyEvent) -> str:
    """topics.input_key, of a parsed event: where `produce` places it."""
    if event.stream == "device_posture":
        return str(event.device_id)
    if event.stream == "control_review":
        return str(event.entity)
    return str(event.user_id)


@dataclass
class ProducerClock:
    """The clock marks `sepwatch produce` writes: the grid line the file's
    largest event time reaches, each time it reaches a new one."""

    max_ts: float = NEG
    marked: float = NEG

    def see(self, ts: float) -> float | None:
        """The mark to write to every input partition after this line, if any."""
        self.max_ts = max(self.max_ts, ts)
        line = grid_of(self.max_ts)
        if line > self.marked:
            self.marked = line
            return line
        return None


@dataclass
class InputClocks:
    """The validator's clock of each input partition it reads, and what of it
    every stage partition the partition feeds has been told (`told`: the
    others learn only the grid lines and marks, not each event's time)."""

    clock: dict[str, float] = field(default_factory=dict)
    told: dict[str, float] = field(default_factory=dict)

    def event(self, source: str, ts: float) -> float | None:
        """An event read: the grid line its partition's clock crossed, to pass on."""
        before = self.clock.get(source, NEG)
        if ts <= before:
            return None
        self.clock[source] = ts
        line = grid_of(ts)
        if before == NEG or line > grid_of(before):
            self.told[source] = max(self.told.get(source, NEG), line)
            return line
        return None

    def mark(self, source: str, ts: float) -> None:
        self.clock[source] = max(self.clock.get(source, NEG), ts)
        self.told[source] = max(self.told.get(source, NEG), ts)


@dataclass
class LearnedClocks:
    """What one stage partition has learned of its input partitions' clocks."""

    sources: frozenset[str]
    seen: dict[str, float] = field(default_factory=dict)
    last: float = NEG

    def late(self, source: str, ts: float, lateness: float) -> bool:
        return ts < self.seen.get(source, NEG) - lateness

    def see(self, source: str, ts: float) -> float:
        """Learn a clock; the stage clock: the slowest source, once all are known."""
        if ts > self.seen.get(source, NEG):
            self.seen[source] = ts
            if len(self.seen) == len(self.sources):
                self.last = max(self.last, min(self.seen.values()))
        return self.last


# An input partition's record: an event, or a clock mark's time.
Record = Union[AnyEvent, float]  # noqa: UP007 (a runtime alias)


def sources_of(stream: str, partitions: int) -> list[str]:
    return [f"{INPUT_STREAMS[stream]}:{p}" for p in range(partitions)]


def every_source(partitions: int) -> list[str]:
    return [s for stream in INPUT_STREAMS for s in sources_of(stream, partitions)]


def source_of(event: AnyEvent, key: str, partitions: int) -> str:
    return f"{INPUT_STREAMS[event.stream]}:{partition_of(key, partitions)}"


class StreamEmulation:
    """The validator and every stage partition of a stream with `partitions`
    partitions, over input partition records in some order of reading."""

    def __init__(
        self,
        engine_for: Callable[[Stage, int], Engine],
        partitions: int,
        *,
        learned_identity: bool = False,
    ) -> None:
        self.partitions = partitions
        self.learned_identity = learned_identity
        self.engines = {(s, p): engine_for(s, p) for s in STAGES for p in range(partitions)}
        self.learned = {
            (s, p): LearnedClocks(
                frozenset(src for stream in FEEDS[s] for src in sources_of(stream, partitions))
            )
            for s in STAGES
            for p in range(partitions)
        }
        self.inputs = InputClocks()
        self.last_tick: dict[tuple[str, str], int] = {}
        self.fed = {
            src: [s for s in STAGES if src.rsplit(":", 1)[0] in _topics_of(s)]
            for src in every_source(partitions)
        }

    @property
    def stats(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for engine in self.engines.values():
            total.update(engine.stats)
        return total

    def route(self, source: str, record: Record) -> list[Finding]:
        """One record read from an input partition, as the validator routes it."""
        if isinstance(record, float):
            self.inputs.mark(source, record)
            return self._clock_entries(source, record)
        out: list[Finding] = []
        ts = record.timestamp.timestamp()
        for stage, key in stage_keys(record, learned_identity=self.learned_identity).items():
            if stage == "review" and record.stream != "control_review":
                minute = int(ts // 60)
                if self.last_tick.get((source, key), -1) >= minute:
                    continue
                self.last_tick[(source, key)] = minute
            for p in stage_partitions(key, self.partitions):
                out += self._judge(stage, p, source, record, ts)
        line = self.inputs.event(source, ts)
        if line is not None:
            out += self._clock_entries(source, line)
        return out

    def flush(self, until: float) -> list[Finding]:
        """Every input partition's end-of-input marker read."""
        out: list[Finding] = []
        for engine in self.engines.values():
            out += engine.flush(until=until)
        return out

    def _judge(
        self, stage: Stage, p: int, source: str, event: AnyEvent, ts: float
    ) -> list[Finding]:
        engine, learned = self.engines[(stage, p)], self.learned[(stage, p)]
        if times_only(stage, event):
            engine.pass_time(event.stream, ts)
            return engine.advance(learned.see(source, ts))
        found = engine.process(event, late=learned.late(source, ts, engine.lateness))
        return found + engine.advance(learned.see(source, ts))

    def _clock_entries(self, source: str, ts: float) -> list[Finding]:
        out: list[Finding] = []
        for stage in self.fed[source]:
            for p in range(self.partitions):
                out += self.engines[(stage, p)].advance(self.learned[(stage, p)].see(source, ts))
        return out


def _topics_of(stage: Stage) -> set[str]:
    return {INPUT_STREAMS[s] for s in FEEDS[stage]}


class PartitionedReplay:
    """Replay as the stream computes it: each line placed in its input
    partition as `sepwatch produce` places it, with produce's clock marks,
    and read in file order (one order of reading the stream could have)."""

    def __init__(self, emulation: StreamEmulation) -> None:
        self.emulation = emulation
        self.producer = ProducerClock()
        self.everywhere = every_source(emulation.partitions)

    @property
    def stats(self) -> Counter[str]:
        return self.emulation.stats

    def take(self, event: AnyEvent, key: str) -> list[Finding]:
        """One line, its input key the raw one (as produce reads it)."""
        out = self.emulation.route(source_of(event, key, self.emulation.partitions), event)
        return out + self.time_of_line(event.timestamp.timestamp())

    def time_of_line(self, ts: float) -> list[Finding]:
        """A line's time, whatever became of the line: produce marks by it."""
        out: list[Finding] = []
        mark = self.producer.see(ts)
        if mark is not None:
            for source in self.everywhere:
                out += self.emulation.route(source, mark)
        return out

    def flush(self) -> list[Finding]:
        if self.producer.max_ts == NEG:
            return []
        return self.emulation.flush(self.producer.max_ts)


def placed(events: Iterable[tuple[AnyEvent, str]], partitions: int) -> dict[str, list[Record]]:
    """What `sepwatch produce` writes into each input partition, in order."""
    out: dict[str, list[Record]] = {s: [] for s in every_source(partitions)}
    clock = ProducerClock()
    for event, key in events:
        out[source_of(event, key, partitions)].append(event)
        mark = clock.see(event.timestamp.timestamp())
        if mark is not None:
            for records in out.values():
                records.append(mark)
    return out
