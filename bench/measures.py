"""Pure arithmetic of `python -m bench`: percentiles that count what was not
measured yet, the schedule of a SIEM-style scheduled search, and the
Markdown table. No I/O, so tests/test_bench_measures.py holds it."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], p: float, censored: int = 0) -> float:
    """The p-th percentile (nearest rank) of `values` plus `censored` samples
    known only to be larger than all of them (events still undecided when the
    window closed). Returns inf when the rank falls among the censored: the
    honest answer is then "more than the window", never the largest seen."""
    total = len(values) + censored
    if total == 0:
        return math.nan
    rank = max(1, math.ceil(p / 100 * total))
    if rank > len(values):
        return math.inf
    return sorted(values)[rank - 1]


@dataclass(frozen=True)
class Spread:
    """Median of several runs and their range."""

    median: float
    low: float
    high: float
    runs: int

    @classmethod
    def of(cls, values: Iterable[float]) -> Spread:
        xs = [v for v in values if not math.isnan(v)]
        if not xs:
            return cls(math.nan, math.nan, math.nan, 0)
        return cls(statistics.median(xs), min(xs), max(xs), len(xs))


def ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(b) else math.nan


# -- scheduled search (the baseline a SIEM's rule engine gives) ---------------


@dataclass(frozen=True)
class Schedule:
    """A rule run every `interval` seconds from `start` (the first run at
    start + interval), each over event times [run - interval - lookback, run],
    as Elastic Security's and most SIEMs' scheduled rules query."""

    start: float
    interval: float
    lookback: float

    def run_at(self, k: int) -> float:
        return self.start + k * self.interval

    def window(self, k: int) -> tuple[float, float]:
        run = self.run_at(k)
        return run - self.interval - self.lookback, run

    def first_run_after(self, searchable_at: float) -> int:
        """Index k >= 1 of the first run at or after `searchable_at`: the
        earliest run whose query can see a document searchable then."""
        return max(1, math.ceil((searchable_at - self.start) / self.interval))

    def catches(self, event_time: float, searchable_at: float) -> int | None:
        """The run that first returns an event, or None if it is searchable
        only after every window that covers its event time has run (missed:
        ingest slower than the lookback)."""
        k = self.first_run_after(searchable_at)
        low, high = self.window(k)
        return k if low <= event_time <= high else None


# -- rendering ------------------------------------------------------------------


def fmt_number(x: float, unit: str = "") -> str:
    if math.isnan(x):
        return "n/a"
    if math.isinf(x):
        return "> window"
    text = f"{x:,.0f}" if abs(x) >= 100 else f"{x:,.2f}" if abs(x) < 10 else f"{x:,.1f}"
    return f"{text} {unit}".rstrip()


def fmt_spread(s: Spread, unit: str = "") -> str:
    if s.runs == 0:
        return "n/a"
    if s.runs == 1:
        return fmt_number(s.median, unit)
    return f"{fmt_number(s.median, unit)} ({fmt_number(s.low)}-{fmt_number(s.high)})"


def fmt_ms(seconds: float) -> str:
    if math.isinf(seconds):
        return "> window"
    return fmt_number(seconds * 1000, "ms")


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A GitHub Markdown table; pipes inside cells are escaped."""

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    out = [line(header), "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"row has {len(row)} cells, header {len(header)}: {row}")
        out.append(line(row))
    return "\n".join(out)
