"""Reporting periods: half-years, `2026H2`, in the policy's time zone like
every date the rules count (UTC when it names none)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime
from zoneinfo import ZoneInfo

from detectors.calendar import add_months

_HALF = re.compile(r"^\s*(\d{4})\s*-?\s*[Hh]([12])\s*$")


class PeriodError(ValueError):
    """The period is not written as a half-year (2026H2)."""


@dataclass(frozen=True, order=True)
class Period:
    """A half-year: H1 is January to June, H2 July to December, days of the
    zone. A finding belongs to the period that holds its event time (`@timestamp`)."""

    year: int
    half: int
    zone: str = field(default="UTC", compare=False)

    @classmethod
    def parse(cls, text: str, zone: str = "UTC") -> Period:
        match = _HALF.match(text)
        if not match:
            raise PeriodError(
                f"period {text!r} is not a half-year: write YYYYH1 (January-June) "
                "or YYYYH2 (July-December), e.g. 2026H2"
            )
        year = int(match.group(1))
        if not 2000 <= year <= 2999:
            raise PeriodError(f"period {text!r}: year {year} is out of range")
        return cls(year, int(match.group(2)), zone)

    @property
    def label(self) -> str:
        return f"{self.year}H{self.half}"

    @property
    def first_day(self) -> date:
        return date(self.year, 1 if self.half == 1 else 7, 1)

    @property
    def end_day(self) -> date:
        """The first day after the period."""
        return add_months(self.first_day, 6)

    @property
    def start(self) -> datetime:
        """Local midnight of its first day (2026H2 in Seoul: 2026-06-30T15:00:00Z)."""
        return datetime.combine(self.first_day, datetime.min.time(), ZoneInfo(self.zone))

    @property
    def end(self) -> datetime:
        """Exclusive."""
        return datetime.combine(self.end_day, datetime.min.time(), ZoneInfo(self.zone))

    @property
    def last_day(self) -> date:
        return date.fromordinal(self.end_day.toordinal() - 1)

    @property
    def previous(self) -> Period:
        if self.half == 2:
            return Period(self.year, 1, self.zone)
        return Period(self.year - 1, 2, self.zone)

    def months(self) -> list[str]:
        """`YYYY-MM` of its six months."""
        return [add_months(self.first_day, k).strftime("%Y-%m") for k in range(6)]

    def __str__(self) -> str:
        return self.label
