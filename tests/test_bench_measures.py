"""The pure arithmetic behind `python -m bench`: percentiles with undecided
events, the scheduled search's runs and windows, the report table."""

from __future__ import annotations

import math

import pytest

from bench.measures import Schedule, Spread, fmt_ms, fmt_spread, markdown_table, percentile


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 99.9) == 100
    assert percentile(list(reversed(values)), 50) == 50


def test_undecided_events_push_the_tail_past_the_window() -> None:
    decided = [0.1] * 98
    # 2 of 100 still undecided: p50 is known, p99 is not.
    assert percentile(decided, 50, censored=2) == 0.1
    assert percentile(decided, 99, censored=2) == math.inf
    assert fmt_ms(percentile(decided, 99, censored=2)) == "> window"
    assert math.isnan(percentile([], 50))


def test_schedule_runs_each_interval_over_interval_plus_lookback() -> None:
    s = Schedule(start=1000.0, interval=60.0, lookback=60.0)
    assert s.run_at(1) == 1060.0
    assert s.window(3) == (1060.0, 1180.0)
    # A document searchable just after a run waits for the next one.
    assert s.first_run_after(1060.0) == 1
    assert s.first_run_after(1060.5) == 2
    assert s.first_run_after(990.0) == 1


def test_schedule_misses_events_ingested_later_than_the_lookback() -> None:
    s = Schedule(start=0.0, interval=60.0, lookback=60.0)
    assert s.catches(event_time=10.0, searchable_at=11.0) == 1
    assert s.catches(event_time=10.0, searchable_at=100.0) == 2  # run 2 looks back to 0
    assert s.catches(event_time=10.0, searchable_at=130.0) is None  # run 3 starts at 60


def test_spread_and_table() -> None:
    spread = Spread.of([3.0, 1.0, 2.0, float("nan")])
    assert (spread.median, spread.low, spread.high, spread.runs) == (2.0, 1.0, 3.0, 3)
    assert fmt_spread(Spread.of([1800.0, 1900.0, 2000.0]), "events/s") == (
        "1,900 events/s (1,800-2,000)"
    )
    table = markdown_table(["a", "b"], [["1", "x|y"]])
    assert table.splitlines() == ["| a | b |", "|---|---|", "| 1 | x\\|y |"]
    with pytest.raises(ValueError):
        markdown_table(["a", "b"], [["only one"]])
