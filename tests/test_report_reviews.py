"""Periods and control reviews (pure): merging records, due dates, on time or late."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from review.period import Period, PeriodError
from review.reviews import merge, new_review, schedule
from schemas import Policy


def _t(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_a_half_year_is_six_utc_months_and_knows_the_one_before() -> None:
    p = Period.parse("2026H2")
    assert (p.start, p.end) == (datetime(2026, 7, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
    assert p.last_day == date(2026, 12, 31)
    assert p.months() == ["2026-07", "2026-08", "2026-09", "2026-10", "2026-11", "2026-12"]
    assert p.previous == Period(2026, 1) and Period.parse("2026h1").previous.label == "2025H2"
    assert Period.parse("2026-H1").end == datetime(2026, 7, 1, tzinfo=UTC)


@pytest.mark.parametrize("text", ["2026", "2026H3", "H2", "2026Q3", "26H1", "2026H2x", ""])
def test_a_malformed_period_is_refused_with_the_form_to_use(text: str) -> None:
    with pytest.raises(PeriodError, match="YYYYH1"):
        Period.parse(text)


def test_records_of_one_review_merge_and_the_earliest_report_date_counts() -> None:
    first = new_review("HQ", _t("2026-10-15T08:00:00Z"), "kim", ["SEP-001"])
    second = new_review(
        "HQ",
        _t("2026-10-15T17:00:00+09:00"),  # the same instant, another offset
        "kim",
        ["SEP-006"],
        reported_at=_t("2026-11-30T00:00:00Z"),
    )
    third = new_review(
        "HQ", _t("2026-10-15T08:00:00Z"), "kim", [], reported_at=_t("2026-11-01T00:00:00Z")
    )
    [one] = merge([first, second, third, first])
    assert one.reported_at == _t("2026-11-01T00:00:00Z")
    assert one.controls == ("SEP-001", "SEP-006")
    assert len(one.event_ids) == 3


def test_due_dates_count_calendar_months_from_the_last_review_or_the_baseline() -> None:
    policy = Policy.model_validate(
        {"review": {"baseline": "2026-02-28", "entity_baselines": {"SUB-VN": "2026-07-01"}}}
    )
    now = _t("2026-12-20T00:00:00Z")
    reviews = merge(
        [
            # due 2026-08-28: done on time, reported on day 30 exactly
            new_review(
                "HQ",
                _t("2026-08-20T09:00:00Z"),
                "kim",
                ["SEP-001"],
                reported_at=_t("2026-09-19T09:00:00Z"),
            ),
            # due 2026-08-28: late, and reported a second after the 30 days
            new_review(
                "BR-1",
                _t("2026-09-01T00:00:00Z"),
                "lee",
                [],
                reported_at=_t("2026-10-01T00:00:01Z"),
            ),
            # completed recently: the report is still pending
            new_review("BR-2", _t("2026-12-01T00:00:00Z"), "park", []),
            # completed long ago, never reported
            new_review("BR-3", _t("2026-05-01T00:00:00Z"), "choi", []),
        ]
    )
    plan = schedule(reviews, policy, ["BR-4"], now=now)
    hq = plan["HQ"].reviews[0]
    assert (hq.due, hq.done_on_time, hq.report) == (date(2026, 8, 28), True, "on_time")
    assert plan["HQ"].next_due == date(2027, 2, 20)
    br1 = plan["BR-1"].reviews[0]
    assert (br1.done_on_time, br1.report) == (False, "late")
    assert plan["BR-2"].reviews[0].report == "pending"
    assert plan["BR-3"].reviews[0].report == "not_reported"
    # No review yet: due six months after the baseline (its own where the policy names one).
    assert plan["BR-4"].next_due == date(2026, 8, 28) and plan["BR-4"].overdue(now.date())
    assert plan["SUB-VN"].next_due == date(2027, 1, 1) and not plan["SUB-VN"].overdue(now.date())


def test_a_half_year_in_seoul_starts_and_ends_at_midnight_kst() -> None:
    p = Period.parse("2026H2", "Asia/Seoul")
    assert p.start == datetime(2026, 6, 30, 15, tzinfo=UTC)
    assert p.end == datetime(2026, 12, 31, 15, tzinfo=UTC)
    assert p.previous.end == p.start and p.previous.zone == "Asia/Seoul"
    assert Period.parse("2026H2") == p  # the same half-year, whatever the zone
