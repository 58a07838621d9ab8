"""The benchmarks measure the same work on any day (issue 20): `python -m
bench` once derived its simulated 48 h from today's date, and on a Sunday
the period held a weekend, when the simulated bank is quiet; the latency
section got 20,510 of the 30,000 events it asked for and stopped."""

from __future__ import annotations

from datetime import timedelta
from zoneinfo import ZoneInfo

from bench.__main__ import FULL, live_events
from bench.stream import HOURS, PERIOD_START

SEOUL = ZoneInfo("Asia/Seoul")


def test_the_simulated_period_is_fixed_and_holds_working_days_only() -> None:
    first = PERIOD_START.astimezone(SEOUL)
    last = (PERIOD_START + timedelta(hours=HOURS)).astimezone(SEOUL)
    days = {(first + timedelta(days=d)).weekday() for d in range((last - first).days + 1)}
    assert days <= {0, 1, 2, 3, 4}, days


def test_the_latency_section_gets_the_events_it_asks_for() -> None:
    asked = int(FULL.rates[0] * FULL.window)  # 30,000: the run that stopped on a Sunday
    lines = live_events(asked, seed=22)
    assert len(lines) == asked
    assert lines == live_events(asked, seed=22)  # the same work, run after run
