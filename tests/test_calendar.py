"""Days of the policy's time zone (detectors/calendar.py): the engine's cached
offsets against zoneinfo itself, summer-time changes included."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.calendar import Days

ZONES = ("UTC", "Asia/Seoul", "Asia/Ho_Chi_Minh", "America/New_York", "Australia/Lord_Howe")
DAYS = {z: Days(z) for z in ZONES}


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(ZONES), st.floats(min_value=0, max_value=4_102_444_799))
def test_the_day_of_a_time_is_zoneinfos(zone: str, ts: float) -> None:
    assert DAYS[zone].day_of(ts) == datetime.fromtimestamp(ts, ZoneInfo(zone)).date().toordinal()


def test_every_second_around_a_summer_time_change() -> None:
    days, zone = Days("America/New_York"), ZoneInfo("America/New_York")
    change = int(datetime(2026, 11, 1, 6, tzinfo=UTC).timestamp())  # 02:00 EDT -> 01:00 EST
    for ts in range(change - 6 * 3600, change + 6 * 3600, 7):
        assert days.day_of(ts) == datetime.fromtimestamp(ts, zone).date().toordinal(), ts


def test_a_seoul_day_starts_at_1500_utc_the_day_before() -> None:
    seoul = Days("Asia/Seoul")
    last = date(2026, 9, 30).toordinal()
    assert seoul.day_start(last + 1) == datetime(2026, 9, 30, 15, tzinfo=UTC).timestamp()
    assert seoul.day_of(datetime(2026, 9, 30, 14, 59, 59, tzinfo=UTC).timestamp()) == last
    assert seoul.day_of(datetime(2026, 9, 30, 15, tzinfo=UTC).timestamp()) == last + 1


def test_thirty_days_on_the_zone_clock_across_the_end_of_summer_time() -> None:
    ny = Days("America/New_York")
    completed = datetime(2026, 10, 20, 16, tzinfo=UTC).timestamp()  # 12:00 EDT
    assert ny.plus_days(completed, 30) == datetime(2026, 11, 19, 17, tzinfo=UTC).timestamp()
    assert Days("Asia/Seoul").plus_days(completed, 30) == completed + 30 * 86400
