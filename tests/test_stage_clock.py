"""The stage clock of the streaming topology: slowest active source, idle marks."""

from __future__ import annotations

from streams.policy_file import load_policy
from streams.topology import StageRunner
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
