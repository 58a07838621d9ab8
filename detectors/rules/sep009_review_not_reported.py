"""SEP-009: a control review not reported to the committee in time."""

from __future__ import annotations

from detectors.calendar import DAY, Days, to_datetime
from detectors.rules.base import REGULATION, Hit, Rule
from detectors.views import ReviewView

RULE = Rule(
    id="SEP-009",
    title="Control review not reported to the Information Protection Committee in time",
    severity="medium",
    regulation=f"{REGULATION}: the result of each six-monthly review is reported to the "
    "institution's Information Protection Committee",
    reads=("control_review", "watermark"),
)


def deadline_of(completed_at: float, report_within_days: int, days: Days) -> float:
    """`report_within_days` days after completion, on the policy zone's clock."""
    return days.plus_days(completed_at, report_within_days)


def check(review: ReviewView, report_within_days: int, days: Days) -> Hit | None:
    """Called once the watermark has passed the deadline."""
    due = deadline_of(review.completed_at, report_within_days, days)
    if review.reported_at is not None and review.reported_at <= due:
        return None
    completed = to_datetime(review.completed_at).isoformat()
    if review.reported_at is None:
        summary = (
            f"The control review of {review.entity} completed {completed} was not reported "
            f"to the Information Protection Committee within {report_within_days} days."
        )
        late = None
    else:
        late = round((review.reported_at - due) / DAY, 2)
        summary = (
            f"The control review of {review.entity} completed {completed} was reported to the "
            f"Information Protection Committee {late} days after the {report_within_days}-day "
            "limit."
        )
    return Hit(
        summary=summary,
        details={
            "completed_at": completed,
            "reported_at": to_datetime(review.reported_at).isoformat()
            if review.reported_at is not None
            else None,
            "report_deadline": to_datetime(due).isoformat(),
            "days_late": late,
            "reviewer": review.reviewer,
        },
    )
