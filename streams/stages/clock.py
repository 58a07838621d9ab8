"""The event clock of each stage partition held here: the slowest active
source's largest event time, and the lateness of an event against its own
source's clock (streams/partition_clock.py states the rule; this is the
stream's side of it). The sources' clocks are kept in the partition's meta
table, so a restored stage judges an event late, or not, as before."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from streams.stages.store import PartitionStore, TableChanges

# Wall-clock silence, without data or clock marks, after which a source no longer
# holds the clock: only a validator that is gone is that silent (a quiet input
# partition gets clock marks, streams/partition_clock.py).
IDLE_SECONDS = 300.0
# Key in a stage partition's meta table: the input partitions' clocks it has
# learned (streams/partition_clock.py), so a restored stage judges an event
# late, or not, as before.
SOURCE_CLOCKS = "source_clocks"


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


class StageClocks:
    """The clocks of one stage's partitions held here. `tables` and `changes`
    are the runner's: the meta table, when there is one, keeps the sources'
    clocks with the record that moved them."""

    def __init__(self, sources: int, tables: dict[str, Any], changes: TableChanges) -> None:
        self.tables = tables
        self.changes = changes
        # partition -> source -> (largest event time, monotonic time last heard)
        self.clocks: dict[int, dict[str, tuple[float, float]]] = {}
        self.last: dict[int, float] = {}  # the clock last given, per partition
        self.since: dict[int, float] = {}  # when the partition was (re)assigned here
        # What the sources other than the last one to send data hold, per partition.
        self.others: dict[int, _Others] = {}
        self.sources = sources
        self.moved: set[int] = set()  # partitions whose source clocks moved, to keep

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

    def keep(self) -> None:
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
        """After a rebalance: the partition's clock starts again from its sources."""
        for p in partitions:
            self.clocks.pop(p, None)
            self.last.pop(p, None)
            self.since.pop(p, None)
            self.moved.discard(p)
            self.others.pop(p, None)
