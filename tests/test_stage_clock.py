"""The stage clock of the streaming topology: slowest active source, idle marks."""

from __future__ import annotations

from streams.policy_file import load_policy
from streams.topology import AppendFrontier, StageRunner
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
