"""SEP-008: an entity's six-monthly control review is overdue."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

from detectors.calendar import Days, add_months
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


def first_breach(
    reviews: Sequence[Sequence[Any]],
    baseline: date,
    interval_months: int,
    fired: date | None,
    days: Days,
) -> tuple[date, date, str | None]:
    """The earliest due date that can still be missed: (due, anchor, review id).

    A review counts from the time it was *recorded* (`reviews` holds
    `(completed_ts, recorded_ts, event_id)`): whether due date D is missed is
    decided by the reviews recorded by the end of D, whatever order they
    arrive in, so reviews are walked in the order they were recorded.
    """
    anchor, anchor_id = baseline, None
    for completed, recorded, review_id in sorted(reviews, key=lambda r: (r[1], r[2])):
        due = next_due(anchor, interval_months, fired)
        if recorded >= overdue_from(due, days):
            break  # this due date had passed before the review was recorded
        day = date.fromordinal(days.day_of(completed))
        if day > anchor or (day == anchor and anchor_id is not None):
            anchor, anchor_id = day, review_id
    return next_due(anchor, interval_months, fired), anchor, anchor_id


def overdue_from(due: date, days: Days) -> float:
    """Due dates are whole days of the policy's zone: overdue once that day has ended."""
    return days.day_start(due.toordinal() + 1)


def check(entity: str, anchor: date, due: date, last_review_id: str | None) -> Hit:
    """Called once the watermark has passed the end of the due day."""
    since = "its last review" if last_review_id else "the baseline"
    return Hit(
        summary=f"{entity} has no control review since {since} of {anchor}; one was due by {due}.",
        details={"due_date": due.isoformat(), "anchor": anchor.isoformat(), "since": since},
        evidence=(last_review_id,) if last_review_id else (),
    )
