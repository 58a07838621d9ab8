"""A stage partition's event clock (streams.stages.clock): slowest active
source, silence."""

from __future__ import annotations

import random
from unittest.mock import patch

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.policy_file import load_policy
from streams.stages.clock import IDLE_SECONDS, StageClocks
from streams.stages.runner import StageRunner
from streams.stages.store import TableChanges
from tests.integration.conftest import POLICY

NEG = float("-inf")
MONOTONIC = "streams.stages.clock.time.monotonic"


def _clocks(sources: int) -> StageClocks:
    return StageClocks(sources, {}, TableChanges(None))


def test_the_clock_holds_until_every_source_is_heard() -> None:
    c = _clocks(2)
    assert c.clock(0, "access:0", 100.0) == NEG
    assert c.clock(0, "access:0", 200.0) == NEG
    assert c.clock(0, "dlp:0", 150.0) == 150.0  # the slowest source


def test_partitions_keep_their_own_clocks_and_a_rebalance_forgets_them() -> None:
    r = StageRunner("user", {}, load_policy(POLICY), 4, ["access:0", "dlp:0"])
    r.clocks.clock(0, "access:0", 100.0)
    assert r.clocks.clock(0, "dlp:0", 100.0) == 100.0
    assert r.clocks.clock(1, "access:0", 50.0) == NEG
    r.forget({0})  # the runner's rebalance reaches its clocks
    assert r.clocks.clock(0, "access:0", 200.0) == NEG


class _Reference:
    """The clock as first written: every source asked at every call. The
    clocks keep what the other sources say between one source's events;
    this is what it must still give."""

    def __init__(self, sources: int) -> None:
        self.sources = sources
        self.clocks: dict[int, dict[str, tuple[float, float]]] = {}
        self.last: dict[int, float] = {}
        self.since: dict[int, float] = {}

    def clock(self, now: float, p: int, source: str, ts: float) -> float:
        clocks = self.clocks.setdefault(p, {})
        seen, _ = clocks.get(source, (NEG, now))
        clocks[source] = (max(seen, ts), now)
        since = self.since.setdefault(p, now)
        if len(clocks) < self.sources and now - since < IDLE_SECONDS:
            return NEG
        holds = [t for t, heard in clocks.values() if now - heard < IDLE_SECONDS]
        self.last[p] = max(self.last.get(p, NEG), min(holds))
        return self.last[p]

    def busy(self, now: float, p: int, source: str) -> None:
        clocks = self.clocks.setdefault(p, {})
        seen, _ = clocks.get(source, (NEG, 0.0))
        clocks[source] = (seen, now)

    def forget(self, p: int) -> None:
        for d in (self.clocks, self.last, self.since):
            d.pop(p, None)  # type: ignore[attr-defined]


_SOURCES = ["access:0", "access:1", "dlp:0"]


@settings(max_examples=200, deadline=None)
@given(st.randoms(use_true_random=False))
def test_the_clock_keeps_what_other_sources_hold_and_gives_what_asking_them_all_gives(
    rnd: random.Random,
) -> None:
    """Random runs of data, busy marks, rebalances and silences on
    two partitions; small times, so that sources overtake each other."""
    now = [1000.0]
    clocks = _clocks(len(_SOURCES))
    reference = _Reference(len(_SOURCES))
    with patch(MONOTONIC, lambda: now[0]):
        for _ in range(100):
            now[0] += rnd.choice([0.0, 0.0, 0.0, 0.5, IDLE_SECONDS / 2, IDLE_SECONDS + 1])
            kind = rnd.choice(["data", "data", "busy", "forget"])
            p, source = rnd.choice([0, 0, 0, 1]), rnd.choice(_SOURCES)
            if kind == "data":
                ts = float(rnd.randint(0, 60))
                assert clocks.clock(p, source, ts) == reference.clock(now[0], p, source, ts)
            elif kind == "busy":
                clocks.busy(p, source)
                reference.busy(now[0], p, source)
            else:
                clocks.forget({p})
                reference.forget(p)


def test_a_source_marked_busy_holds_the_clock_again_amid_another_sources_events() -> None:
    now = [1000.0]
    with patch(MONOTONIC, lambda: now[0]):
        r = _clocks(len(_SOURCES))
        r.clock(0, "access:1", 5.0)
        now[0] += IDLE_SECONDS / 2
        r.clock(0, "access:0", 10.0)
        r.clock(0, "dlp:0", 50.0)
        now[0] += IDLE_SECONDS / 2 + 1  # access:1 silent (its validator gone)
        assert r.clock(0, "access:0", 20.0) == 20.0
        r.busy(0, "access:1")  # taken over with a backlog: holds at its own 5.0 again
        assert r.clock(0, "access:0", 30.0) == 20.0


def test_a_source_silent_too_long_stops_holding_amid_another_sources_events() -> None:
    now = [1000.0]
    with patch(MONOTONIC, lambda: now[0]):
        r = _clocks(len(_SOURCES))
        r.clock(0, "dlp:0", 5.0)
        now[0] += IDLE_SECONDS / 2
        r.clock(0, "access:1", 50.0)
        assert r.clock(0, "access:0", 60.0) == 5.0
        now[0] += IDLE_SECONDS / 2 + 1  # dlp:0 silent for longer than IDLE_SECONDS
        assert r.clock(0, "access:0", 70.0) == 50.0
