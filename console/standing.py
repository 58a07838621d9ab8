"""The overview's half-year figures, computed as the semiannual report
computes them (review/gather.py's own helpers), but only those the
overview shows: the share of accesses from compliant devices, the control
reviews due, overdue or unreported, the SaaS evaluations and the waivers that
expire. The report's other figures (the previous half, medians, top lists)
are left to the report, so the overview costs two small requests."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from elasticsearch import Elasticsearch

from review.gather import (
    _apps,
    _device_measure,
    _period_query,
    _tally,
    _waivers,
)
from review.model import DeviceMeasure, ExpiryFigures, ReviewDue, WaiverFigures
from review.period import Period
from review.reviews import merge, schedule
from schemas import ControlReview, Policy

HORIZON_DAYS = 90
POSTURE_RULES = ("SEP-006", "SEP-007")  # failing / unknown posture: the device measure


@dataclass
class Standing:
    half: str
    device: DeviceMeasure
    reviews_due: list[ReviewDue]
    unreported: list[tuple[str, date]]  # entity, review completed on
    expiring: list[ExpiryFigures]
    waivers_expiring: list[WaiverFigures]


def half_of(day: date) -> Period:
    return Period.parse(f"{day.year}H{1 if day.month <= 6 else 2}")


def standing(
    es: Elasticsearch,
    index: str,
    *,
    policy: Policy,
    reviews: Iterable[ControlReview],
    entity: str | None,
    entities: list[str],
    now: datetime,
) -> Standing:
    today = now.date()
    half = half_of(today)
    query: dict[str, Any] = _period_query(half, entity)
    query["bool"]["filter"].append({"terms": {"rule.id": list(POSTURE_RULES)}})
    resp = es.search(
        index=index,
        size=0,
        query=query,
        aggs={"rule": {"terms": {"field": "rule.id", "size": len(POSTURE_RULES)}}},
        ignore_unavailable=True,
        allow_no_indices=True,
    )
    counts = {b["key"]: int(b["doc_count"]) for b in resp["aggregations"]["rule"]["buckets"]}
    tally = _tally(es, index, half, entity)
    accesses = None
    if tally is not None:
        accesses = tally[0].get(entity, 0) if entity else sum(tally[0].values())
    device = _device_measure(
        entity or "*", accesses, counts.get("SEP-006", 0), counts.get("SEP-007", 0)
    )
    horizon = today + timedelta(days=HORIZON_DAYS)
    _, expiring = _apps(policy, today, {}, None)
    waivers = _waivers(policy, half, entity, {}, None)
    plan = schedule(merge(reviews), policy, [entity] if entity else entities, now=now)
    if entity is not None:
        plan = {k: v for k, v in plan.items() if k == entity}
    return Standing(
        half=half.label,
        device=device,
        reviews_due=[
            ReviewDue(
                entity=name,
                last_completed=s.reviews[-1].review.completed_at.date() if s.reviews else None,
                next_due=s.next_due,
                overdue=s.overdue(today),
            )
            for name, s in sorted(plan.items())
        ],
        unreported=[
            (name, j.review.completed_at.date())
            for name, s in sorted(plan.items())
            for j in s.reviews
            if j.report == "not_reported"
        ],
        expiring=[e for e in expiring if e.evaluation_valid_until <= horizon],
        waivers_expiring=[w for w in waivers if today <= w.valid_until <= horizon],
    )
