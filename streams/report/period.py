"""Reporting periods: half-years, `2026H2`, in UTC like every date the rules count."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime

from detectors.calendar import add_months

_HALF = re.compile(r"^\s*(\d{4})\s*-?\s*[Hh]([12])\s*$")


class PeriodError(ValueError):
    """The period is not written as a half-year (2026H2)."""


@dataclass(frozen=True, order=True)
class Period:
    """A half-year: H1 is January to June, H2 July to December, both in UTC.
    A finding belongs to the period that holds its event time (`@timestamp`)."""

    year: int
    half: int

    @classmethod
    def parse(cls, text: str) -> Period:
        match = _HALF.match(text)
        if not match:
            raise PeriodError(
                f"period {text!r} is not a half-year: write YYYYH1 (January-June) "
                "or YYYYH2 (July-December), e.g. 2026H2"
            )
        year = int(match.group(1))
        if not 2000 <= year <= 2999:
            raise PeriodError(f"period {text!r}: year {year} is out of range")
        return cls(year, int(match.group(2)))

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
        return datetime.combine(self.first_day, datetime.min.time(), UTC)

    @property
    def end(self) -> datetime:
        """Exclusive."""
        return datetime.combine(self.end_day, datetime.min.time(), UTC)

    @property
    def last_day(self) -> date:
        return date.fromordinal(self.end_day.toordinal() - 1)

    @property
    def previous(self) -> Period:
        return Period(self.year, 1) if self.half == 2 else Period(self.year - 1, 2)

    def months(self) -> list[str]:
        """`YYYY-MM` of its six months."""
        return [add_months(self.first_day, k).strftime("%Y-%m") for k in range(6)]

    def __str__(self) -> str:
        return self.label
