"""SEP-008: an entity's six-monthly control review is overdue."""

from __future__ import annotations

from datetime import date

from detectors.calendar import add_months, day_start
from detectors.rules.base import REGULATION, Hit, Rule

RULE = Rule(
    id="SEP-008",
    title="Six-monthly review of the information-security controls overdue",
    severity="high",
    regulation=f"{REGULATION}: the information-security controls are reviewed every six months",
    reads=("control_review", "watermark"),
)


def next_due(anchor: date, interval_months: int, fired_due: date | None) -> date:
    """The first due date after the last one already reported; dates count
    from the anchor (not from each other) so month ends do not drift."""
    k = 1
    while True:
        due = add_months(anchor, k * interval_months)
        if fired_due is None or due > fired_due:
            return due
        k += 1


def overdue_from(due: date) -> float:
    """Due dates are whole UTC days: overdue once that day has ended."""
    return day_start(due.toordinal() + 1)


def check(
    entity: str, anchor: date, due: date, watermark: float, last_review_id: str | None
) -> Hit | None:
    if watermark < overdue_from(due):
        return None
    since = "its last review" if last_review_id else "the baseline"
    return Hit(
        summary=f"{entity} has no control review since {since} of {anchor}; one was due by {due}.",
        details={"due_date": due.isoformat(), "anchor": anchor.isoformat(), "since": since},
        evidence=(last_review_id,) if last_review_id else (),
    )
