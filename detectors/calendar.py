"""Time as the rules count it: whole days in the policy's time zone (UTC when
it names none), both ends inclusive, calendar months."""

from __future__ import annotations

import calendar as _cal
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

DAY = 86400.0
# Offsets are remembered per quarter hour of epoch time, for the quarter hours
# in which the zone's offset does not change (the hot path: one look-up an access).
_SLOT = 900


class Days:
    """Days of one time zone, as date ordinals: `Days("Asia/Seoul")` puts
    2026-09-30T15:00:00Z on 2026-10-01."""

    def __init__(self, zone: str = "UTC") -> None:
        self.zone_name = zone
        self.zone = ZoneInfo(zone)
        self._offsets: dict[int, float] = {}
        # The last quarter hour looked up: events come roughly in time order.
        self._slot, self._slot_offset = -(2**62), 0.0

    def offset(self, ts: float) -> float:
        """Seconds the zone's clock is ahead of UTC at `ts`."""
        slot = int(ts // _SLOT)
        known = self._offsets.get(slot)
        if known is not None:
            return known
        found = self._offset_at(ts)
        start, end = slot * _SLOT, slot * _SLOT + _SLOT - 1
        if self._offset_at(start) == found == self._offset_at(end):  # no change inside
            if len(self._offsets) > 100_000:  # events across centuries must not grow it
                self._offsets.clear()
            self._offsets[slot] = found
        return found

    def _offset_at(self, ts: float) -> float:
        shift = datetime.fromtimestamp(ts, self.zone).utcoffset()
        return shift.total_seconds() if shift is not None else 0.0

    def day_of(self, ts: float) -> int:
        """The local day (a date ordinal) of an epoch timestamp."""
        slot = int(ts // _SLOT)
        if slot != self._slot:
            shift = self.offset(ts)
            if slot not in self._offsets:  # the offset changes inside it
                return int((ts + shift) // DAY) + _EPOCH
            self._slot, self._slot_offset = slot, shift
        return int((ts + self._slot_offset) // DAY) + _EPOCH

    def day_start(self, day: int) -> float:
        """Epoch seconds at local 00:00 of a date ordinal."""
        return datetime.combine(date.fromordinal(day), time(), self.zone).timestamp()

    def plus_days(self, ts: float, days: int) -> float:
        """The same local clock time `days` later (a zone with summer time
        may make that a day of 23 or 25 hours)."""
        return (datetime.fromtimestamp(ts, self.zone) + timedelta(days=days)).timestamp()

    def local(self, ts: float) -> datetime:
        return datetime.fromtimestamp(ts, self.zone)


_EPOCH = date(1970, 1, 1).toordinal()
UTC_DAYS = Days("UTC")


def add_months(day: date, months: int) -> date:
    """Calendar months; the 31st of August plus six months is the last of February."""
    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    return date(year, month, min(day.day, _cal.monthrange(year, month)[1]))


def to_datetime(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def days(n: int) -> timedelta:
    return timedelta(days=n)
