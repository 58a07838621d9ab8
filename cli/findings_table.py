"""`findings list` as a table that fits the terminal: the columns that fit,
chosen by what an analyst needs first, each on one line, long values cut
with an ellipsis (never folded into one-character columns)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich import box
from rich.table import Table

# A column's share of the line besides its text: a space either side and
# the separator; the table's edge takes one more.
_PADDING = 3


@dataclass(frozen=True)
class Column:
    header: str
    key: str  # the finding's field
    width: int  # the narrowest it is still readable at
    rank: int  # kept before every column of a higher rank
    whole: bool = False  # a time, an id to copy: never cut


def columns(time_header: str, id_width: int) -> list[Column]:
    """In the order shown. An id starts with its rule id, so the rule column
    is among the first to go when the terminal is narrow."""
    return [
        Column(time_header, "timestamp", max(16, len(time_header)), 0, whole=True),
        Column("id", "finding_id", id_width, 1, whole=True),
        Column("rule", "rule_id", 7, 6, whole=True),
        Column("sev", "severity", 4, 7),
        Column("status", "status", 8, 2),
        Column("by", "status_by", 6, 9),
        Column("entity", "entity", 6, 3),
        Column("user", "user_id", 6, 4),
        Column("device", "device_id", 6, 8),
        Column("app", "saas_app", 6, 5),
    ]


def fitting(all_columns: list[Column], width: int) -> list[Column]:
    """The columns that fit in `width` at their narrowest, by rank, in display order."""
    kept: set[str] = set()
    used = 1
    for col in sorted(all_columns, key=lambda c: c.rank):
        if used + col.width + _PADDING <= width:
            kept.add(col.key)
            used += col.width + _PADDING
    return [c for c in all_columns if c.key in kept]


def findings_table(
    found: list[dict[str, Any]],
    total: int,
    width: int,
    time_header: str = "time (UTC)",
    time_of: Callable[[str], str] = lambda ts: ts[:16].replace("T", " "),
) -> Table:
    id_width = max((len(str(f["finding_id"])) for f in found), default=2)
    shown = fitting(columns(time_header, id_width), width)
    table = Table(
        title=f"{len(found)} of {total:,} findings", title_justify="left", box=box.SIMPLE_HEAD
    )
    for col in shown:
        if col.whole:
            table.add_column(col.header, width=col.width, no_wrap=True)
        else:  # values have no spaces: a long one is cut, with an ellipsis
            table.add_column(col.header, min_width=col.width, overflow="ellipsis")
    for f in found:
        table.add_row(*(_cell(f, c.key, time_of) for c in shown))
    return table


def _cell(finding: dict[str, Any], key: str, time_of: Callable[[str], str]) -> str:
    return time_of(str(finding[key])) if key == "timestamp" else str(finding.get(key) or "")
