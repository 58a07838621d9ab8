"""Time as the rules count it: UTC days, both ends inclusive, calendar months."""

from __future__ import annotations

import calendar as _cal
from datetime import UTC, date, datetime, timedelta

_EPOCH = date(1970, 1, 1).toordinal()
DAY = 86400.0


def day_of(ts: float) -> int:
    """The UTC day (as a date ordinal) of an epoch timestamp."""
    return int(ts // DAY) + _EPOCH


def day_start(day: int) -> float:
    """Epoch seconds at 00:00 UTC of a date ordinal."""
    return (day - _EPOCH) * DAY


def add_months(day: date, months: int) -> date:
    """Calendar months; the 31st of August plus six months is the last of February."""
    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    return date(year, month, min(day.day, _cal.monthrange(year, month)[1]))


def to_datetime(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def days(n: int) -> timedelta:
    return timedelta(days=n)
