"""The stage clock of the streaming topology: slowest active source, idle marks."""

from __future__ import annotations

import random
from unittest.mock import patch

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.policy_file import load_policy
from streams.topology import IDLE_SECONDS, AppendFrontier, StageRunner
from tests.integration.conftest import POLICY

NEG = float("-inf")


def _runner() -> StageRunner:
    return StageRunner("user", {}, load_policy(POLICY), 4, ["access:0", "dlp:0"])


def test_the_clock_holds_until_every_source_is_heard() -> None:
    r = _runner()
    assert r.clock(0, "access:0", 100.0) == NEG
    assert r.clock(0, "access:0", 200.0) == NEG
    assert r.clock(0, "dlp:0", 150.0) == 150.0  # the slowest source


def test_an_idle_mark_counts_as_heard_and_stops_holding_the_clock() -> None:
    r = _runner()
    r.clock(0, "access:0", 100.0)
    assert r.clock(0, "dlp:0", None) == 100.0
    assert r.clock(0, "access:0", 300.0) == 300.0


def test_a_source_with_data_again_holds_the_clock_again_and_it_never_goes_back() -> None:
    r = _runner()
    r.clock(0, "access:0", 100.0)
    r.clock(0, "dlp:0", 90.0)
    r.clock(0, "dlp:0", None)  # read to its end
    assert r.clock(0, "access:0", 500.0) == 500.0
    # dlp speaks again, behind the clock: it holds from now on, the clock stays
    assert r.clock(0, "dlp:0", 400.0) == 500.0
    assert r.clock(0, "access:0", 900.0) == 500.0  # held by dlp at its largest, 400
    assert r.clock(0, "dlp:0", 700.0) == 700.0


def test_with_every_source_idle_the_clock_stays_where_it_was() -> None:
    r = _runner()
    r.clock(0, "access:0", 100.0)
    r.clock(0, "dlp:0", 120.0)
    r.clock(0, "access:0", None)
    assert r.clock(0, "dlp:0", None) == 120.0


def test_partitions_keep_their_own_clocks_and_a_rebalance_forgets_them() -> None:
    r = _runner()
    r.clock(0, "access:0", 100.0)
    r.clock(0, "dlp:0", 100.0)
    assert r.clock(1, "access:0", 50.0) == NEG
    r.forget({0})
    assert r.clock(0, "access:0", 200.0) == NEG


def test_an_idle_source_holds_the_clock_at_what_was_appended_before_its_mark() -> None:
    """Two workers, one slow: its idle mark for dlp is true as of 6 s, but the
    other validator routes an access appended at 20 s. dlp may still bring
    records appended between 6 and 20 s, so the access cannot carry the clock
    past what was appended before 6 s (CI: a SEP-003 lost this way)."""
    r = _runner()
    r.clock(0, "access:0", 100.0, appended=5.0)
    r.clock(0, "dlp:0", None, as_of=6.0)
    assert r.clock(0, "access:0", 500.0, appended=20.0) == 100.0
    # dlp's next mark covers the access: it no longer holds anything back
    assert r.clock(0, "dlp:0", None, as_of=21.0) == 500.0


def test_a_mark_older_than_anything_judged_holds_the_clock_where_it_is() -> None:
    r = _runner()
    r.clock(0, "dlp:0", None, as_of=1.0)  # idle before any input was appended
    assert r.clock(0, "access:0", 100.0, appended=5.0) == NEG
    assert r.clock(0, "dlp:0", None, as_of=5.5) == 100.0


def test_the_append_frontier_counts_records_routed_out_of_append_order() -> None:
    frontier = AppendFrontier()
    frontier.add(5.0, 100.0)
    frontier.add(3.0, 200.0)  # appended earlier, routed later by another validator
    frontier.add(10.0, 50.0)
    assert frontier.by(3.0) == NEG  # its bucket is not over by 3.0
    assert frontier.by(4.0) == 200.0
    assert frontier.by(11.0) == 200.0
    assert frontier.by(None) == 200.0
    frontier.add(None, 300.0)  # no append time: counts only for "everything routed"
    assert frontier.by(11.0) == 200.0
    assert frontier.by(None) == 300.0


class _Reference:
    """The clock as first written: every source asked at every call. The
    runner keeps what the other sources say between one source's events;
    this is what it must still give."""

    def __init__(self, sources: int) -> None:
        self.sources = sources
        self.clocks: dict[int, dict[str, tuple[float, float]]] = {}
        self.idle: dict[int, dict[str, float | None]] = {}
        self.frontier: dict[int, AppendFrontier] = {}
        self.last: dict[int, float] = {}
        self.since: dict[int, float] = {}

    def clock(
        self,
        now: float,
        p: int,
        source: str,
        ts: float | None,
        appended: float | None,
        as_of: float | None,
    ) -> float:
        clocks = self.clocks.setdefault(p, {})
        idle = self.idle.setdefault(p, {})
        frontier = self.frontier.setdefault(p, AppendFrontier())
        seen, _ = clocks.get(source, (NEG, now))
        if ts is None:
            idle[source] = as_of
        else:
            idle.pop(source, None)
            seen = max(seen, ts)
            frontier.add(appended, ts)
        clocks[source] = (seen, now)
        since = self.since.setdefault(p, now)
        if len(clocks) < self.sources and now - since < IDLE_SECONDS:
            return NEG
        holds = [
            frontier.by(idle[s]) if s in idle else t
            for s, (t, heard) in clocks.items()
            if now - heard < IDLE_SECONDS
        ]
        if holds:
            self.last[p] = max(self.last.get(p, NEG), min(holds))
        elif ts is not None:
            self.last[p] = max(self.last.get(p, NEG), ts)
        return self.last.get(p, NEG)

    def busy(self, now: float, p: int, source: str) -> None:
        clocks = self.clocks.setdefault(p, {})
        seen, _ = clocks.get(source, (NEG, 0.0))
        clocks[source] = (seen, now)
        self.idle.setdefault(p, {}).pop(source, None)

    def forget(self, p: int) -> None:
        for d in (self.clocks, self.idle, self.frontier, self.last, self.since):
            d.pop(p, None)  # type: ignore[attr-defined]


_SOURCES = ["access:0", "access:1", "dlp:0"]


@settings(max_examples=200, deadline=None)
@given(st.randoms(use_true_random=False))
def test_the_clock_keeps_what_other_sources_hold_and_gives_what_asking_them_all_gives(
    rnd: random.Random,
) -> None:
    """Random runs of data, idle marks, busy marks, rebalances and silences on
    two partitions; small times, so that sources overtake each other."""
    now = [1000.0]
    runner = StageRunner("user", {}, load_policy(POLICY), 4, _SOURCES)
    reference = _Reference(len(_SOURCES))
    with patch("streams.topology.time.monotonic", lambda: now[0]):
        for _ in range(100):
            now[0] += rnd.choice([0.0, 0.0, 0.0, 0.5, IDLE_SECONDS / 2, IDLE_SECONDS + 1])
            kind = rnd.choice(["data", "data", "idle", "busy", "forget"])
            p, source = rnd.choice([0, 0, 0, 1]), rnd.choice(_SOURCES)
            if kind == "data":
                ts, appended = float(rnd.randint(0, 60)), rnd.randint(0, 60) / 10
                got = runner.clock(p, source, ts, appended=appended)
                assert got == reference.clock(now[0], p, source, ts, appended, None)
            elif kind == "idle":
                as_of = rnd.choice([None, rnd.randint(0, 60) / 10])
                got = runner.clock(p, source, None, as_of=as_of)
                assert got == reference.clock(now[0], p, source, None, None, as_of)
            elif kind == "busy":
                runner.busy(p, source)
                reference.busy(now[0], p, source)
            else:
                runner.forget({p})
                reference.forget(p)


def test_a_source_marked_busy_holds_the_clock_at_once_amid_another_sources_events() -> None:
    r = StageRunner("user", {}, load_policy(POLICY), 4, _SOURCES)
    for source, ts, appended in [
        ("access:0", 10.0, 0.1),
        ("access:1", 5.0, 0.1),
        ("dlp:0", 50.0, 0.2),
    ]:
        r.clock(0, source, ts, appended=appended)
    r.clock(0, "access:1", None, as_of=5.0)  # read to its end: holds at the frontier
    assert r.clock(0, "access:0", 20.0, appended=0.3) == 20.0
    r.busy(0, "access:1")  # taken over with a backlog: holds at its own 5.0 again
    assert r.clock(0, "access:0", 30.0, appended=0.4) == 20.0


def test_a_source_silent_too_long_stops_holding_amid_another_sources_events() -> None:
    now = [1000.0]
    with patch("streams.topology.time.monotonic", lambda: now[0]):
        r = StageRunner("user", {}, load_policy(POLICY), 4, _SOURCES)
        r.clock(0, "dlp:0", 5.0, appended=0.1)
        now[0] += IDLE_SECONDS / 2
        r.clock(0, "access:1", 50.0, appended=0.1)
        assert r.clock(0, "access:0", 60.0, appended=0.2) == 5.0
        now[0] += IDLE_SECONDS / 2 + 1  # dlp:0 silent for longer than IDLE_SECONDS
        assert r.clock(0, "access:0", 70.0, appended=0.3) == 50.0
