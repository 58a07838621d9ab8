"""The report's figures from Elasticsearch aggregations (never a scan of the
findings), the access tally, the policy and the control reviews.

Every count is a count of findings documents whose event time (`@timestamp`)
lies in the period, filtered to the entity where one is given; statuses are
derived from the lifecycle records when the report is made (streams/lifecycle.py):
the stored counts, shifted by the records' from/to aggregations. Aggregations
are exact here: counts and histograms are exact in Elasticsearch; top-N lists
carry Elasticsearch's own word on whether a shard could have missed a value
(`exact`); the median time to resolve is read from exact histograms of the seconds recorded on
resolving (no script, no percentile sketch), in whole minutes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

from elasticsearch import Elasticsearch

from detectors import CATALOGUE, mask_identifier, mask_text
from detectors.calendar import add_months
from detectors.policy_in_force import PolicyInForce, evaluation_in_force
from review.evidence import StoredDigest, stored_digest
from review.model import (
    AppFigures,
    Change,
    DeviceMeasure,
    EntityFigures,
    Evidence,
    ExpiryFigures,
    MonthCount,
    OpenItem,
    PeriodFigures,
    Report,
    ReviewDue,
    ReviewFigures,
    RuleFigures,
    Sources,
    Top,
    TopList,
    WaiverFigures,
)
from review.period import Period
from review.reviews import EntitySchedule, merge, schedule
from schemas import ControlReview, Policy
from streams.elastic import access_index
from streams.lifecycle import (
    actor_name,
    latest,
    lifecycle_index,
    shifted,
    shifted_under,
    status_shift,
)

STATUSES = ("open", "acknowledged", "resolved", "waived")
STILL_OPEN = ("open", "acknowledged")
SEVERITIES = ("critical", "high", "medium", "low")
TOP_N = 5
OLDEST_OPEN = 10

# Set on resolving (streams/elastic.py `transition`): detected_at to resolved_at.
RESOLVE_SECONDS = "sepwatch.lifecycle.resolve_seconds"
# The same, on resolving records; and the finding's event time on every record.
SECONDS = "sepwatch.resolve_seconds"
FINDING_TIME = "sepwatch.finding_time"
DAY_SECONDS = 86400
OPEN_ITEM_FIELDS = [
    "@timestamp",
    "rule.id",
    "organization.name",
    "user.id",
    "host.id",
    "sepwatch.finding_id",
    "sepwatch.severity",
    "sepwatch.status",
    "sepwatch.saas_app",
]
Step = Callable[[str], None]


class NoFindingsIndex(LookupError):
    """The findings alias does not exist: nothing was ever stored under that name."""


def _period_query(
    period: Period, entity: str | None, time_field: str = "@timestamp"
) -> dict[str, Any]:
    filters: list[dict[str, Any]] = [
        {
            "range": {
                time_field: {
                    "gte": period.start.isoformat(),
                    "lt": period.end.isoformat(),
                }
            }
        }
    ]
    if entity is not None:
        filters.append({"term": {"organization.name": entity}})
    return {"bool": {"filter": filters}}


def _terms(field: str, size: int, **sub: Any) -> dict[str, Any]:
    agg: dict[str, Any] = {"terms": {"field": field, "size": size}}
    if sub:
        agg["aggs"] = sub
    return agg


def _top(field: str) -> dict[str, Any]:
    return {"terms": {"field": field, "size": TOP_N, "shard_size": 200}}


def _month_histogram(period: Period) -> dict[str, Any]:
    return {
        "date_histogram": {
            "field": "@timestamp",
            "calendar_interval": "month",
            "time_zone": period.zone,  # months of the policy's zone
            "min_doc_count": 0,
            "format": "yyyy-MM",
            "extended_bounds": {"min": period.months()[0], "max": period.months()[-1]},
        }
    }


def _search(es: Elasticsearch, index: str, **body: Any) -> dict[str, Any]:
    resp = es.search(
        index=index,
        size=body.pop("size", 0),
        track_total_hits=True,
        ignore_unavailable=True,
        allow_no_indices=True,
        **body,
    )
    return dict(resp.body)


def _buckets(aggs: dict[str, Any], name: str) -> dict[str, int]:
    return {str(b["key"]): int(b["doc_count"]) for b in aggs[name]["buckets"]}


def _change(current: int, previous: int) -> Change:
    percent = round(100.0 * (current - previous) / previous, 1) if previous else None
    return Change(current=current, previous=previous, delta=current - previous, percent=percent)


def _period_figures(p: Period) -> PeriodFigures:
    return PeriodFigures(
        label=p.label, start=p.start, end=p.end, first_day=p.first_day, last_day=p.last_day
    )


def _masked(value: str | None) -> str | None:
    return mask_identifier(value) if value else None


def _open_item(
    source: dict[str, Any], as_of: date, zone: ZoneInfo, newest: dict[str, Any] | None
) -> OpenItem:
    """One still-open finding; `newest` is its newest lifecycle record, if any."""
    sw = source.get("sepwatch", {})
    ts = datetime.fromisoformat(source["@timestamp"]).astimezone(UTC)
    return OpenItem(
        finding_id=sw["finding_id"],
        timestamp=ts,
        rule_id=source["rule"]["id"],
        severity=sw["severity"],
        status=newest["sepwatch"]["to_status"] if newest else sw["status"],
        status_by=actor_name(newest) if newest else None,
        entity=source["organization"]["name"],
        user=_masked(source.get("user", {}).get("id")),
        device=_masked(source.get("host", {}).get("id")),
        saas_app=sw.get("saas_app"),
        age_days=(as_of - ts.astimezone(zone).date()).days,
    )


def _top_list(agg: dict[str, Any], count: int, mask: bool) -> TopList:
    items = [
        Top(label=mask_identifier(b["key"]) if mask else str(b["key"]), count=int(b["doc_count"]))
        for b in agg["buckets"]
    ]
    return TopList(
        items=items,
        others=count - sum(i.count for i in items),
        exact=int(agg.get("doc_count_error_upper_bound", 0)) == 0,
    )


def _median_ranks(n: int) -> tuple[int, int]:
    """1-based ranks whose mean is the median of n sorted values."""
    return ((n + 1) // 2, n // 2 + 1) if n % 2 == 0 else ((n + 1) // 2, (n + 1) // 2)


def _value_at(buckets: list[tuple[int, int]], rank: int, before: int = 0) -> int:
    seen = before
    for key, n in buckets:
        seen += n
        if seen >= rank:
            return key
    raise ValueError("rank beyond the histogram")


def _medians(
    es: Elasticsearch,
    index: str,
    period: Period,
    entity: str | None,
    days: dict[str, list[tuple[int, int]]],
) -> dict[str, float]:
    """Exact medians, in whole minutes, from two histograms: by day to find
    where the middle ranks lie, then by minute over just those days (stored
    seconds of older documents, plus resolving records, minus reopenings)."""
    windows: dict[str, tuple[int, int, int]] = {}
    for rule, buckets in days.items():
        n = sum(c for _, c in buckets)
        if not n:
            continue
        low_rank, high_rank = _median_ranks(n)
        lo = _value_at(buckets, low_rank)
        hi = _value_at(buckets, high_rank)
        before = sum(c for k, c in buckets if k < lo)
        windows[rule] = (lo, hi + DAY_SECONDS, before)
    if not windows:
        return {}
    stored = _minutes(es, index, period, entity, windows, RESOLVE_SECONDS, "sepwatch.status")
    to = _minutes(
        es, lifecycle_index(index), period, entity, windows, SECONDS, "sepwatch.to_status"
    )
    undone = _minutes(
        es, lifecycle_index(index), period, entity, windows, SECONDS, "sepwatch.from_status"
    )
    out: dict[str, float] = {}
    for rule, (_, _, before) in windows.items():
        counts: dict[int, int] = {}
        for source, sign in ((stored, 1), (to, 1), (undone, -1)):
            for key, n in source.get(rule, []):
                counts[key] = counts.get(key, 0) + sign * n
        minutes = sorted((k, n) for k, n in counts.items() if n > 0)
        low_rank, high_rank = _median_ranks(sum(c for _, c in days[rule]))
        out[rule] = (
            _value_at(minutes, low_rank, before) + _value_at(minutes, high_rank, before)
        ) / 2
    return out


def _minutes(
    es: Elasticsearch,
    index: str,
    period: Period,
    entity: str | None,
    windows: dict[str, tuple[int, int, int]],
    seconds: str,
    status_field: str,
) -> dict[str, list[tuple[int, int]]]:
    """Per rule, resolved findings (or records) by minute within its window."""
    time_field = "@timestamp" if seconds == RESOLVE_SECONDS else FINDING_TIME
    aggs = {
        rule: {
            "filter": {
                "bool": {
                    "filter": [
                        {"term": {"rule.id": rule}},
                        {"term": {status_field: "resolved"}},
                        {"range": {seconds: {"gte": lo, "lt": hi}}},
                    ]
                }
            },
            "aggs": {
                "minutes": {"histogram": {"field": seconds, "interval": 60, "min_doc_count": 1}}
            },
        }
        for rule, (lo, hi, _) in windows.items()
    }
    resp = _search(es, index, query=_period_query(period, entity, time_field), aggs=aggs)
    if "aggregations" not in resp:
        return {}
    return {
        rule: [
            (int(b["key"]) // 60, int(b["doc_count"]))
            for b in resp["aggregations"][rule]["minutes"]["buckets"]
        ]
        for rule in windows
    }


def _main_aggs(period: Period) -> dict[str, Any]:
    return {
        "by_status": _terms("sepwatch.status", 10),
        "by_severity": _terms("sepwatch.severity", 10),
        "by_month": _month_histogram(period),
        "by_app": _terms("sepwatch.saas_app", 1000),
        "by_waiver": _terms("sepwatch.waiver.id", 1000),
        "by_entity": _terms(
            "organization.name",
            1000,
            by_status=_terms("sepwatch.status", 10),
            by_severity=_terms("sepwatch.severity", 10),
            by_rule=_terms("rule.id", 50),
        ),
        "by_rule": _terms(
            "rule.id",
            50,
            by_status=_terms("sepwatch.status", 10),
            by_month=_month_histogram(period),
            top_users=_top("user.id"),
            top_devices=_top("host.id"),
            top_apps=_top("sepwatch.saas_app"),
            resolved={
                "filter": {"term": {"sepwatch.status": "resolved"}},
                "aggs": {
                    "days": {
                        "histogram": {
                            "field": RESOLVE_SECONDS,
                            "interval": DAY_SECONDS,
                            "min_doc_count": 1,
                        }
                    }
                },
            },
        ),
    }


def _shift_aggs() -> dict[str, Any]:
    """Per rule, the resolving records' and the reopenings' days to resolve."""

    def days(status_field: str) -> dict[str, Any]:
        return {
            "filter": {"term": {status_field: "resolved"}},
            "aggs": {
                "days": {
                    "histogram": {"field": SECONDS, "interval": DAY_SECONDS, "min_doc_count": 1}
                }
            },
        }

    return {"resolved": days("sepwatch.to_status"), "unresolved": days("sepwatch.from_status")}


@dataclass(frozen=True)
class _Scope:
    """What a report reads: the findings of `period` in `index` (of `entity`
    only, if one is given), seen on the report's day `as_of`."""

    es: Elasticsearch
    index: str
    period: Period
    entity: str | None
    as_of: date


def _still_open_query(scope: _Scope, reopened: list[str], rule: str | None) -> dict[str, Any]:
    """The period's findings stored open or acknowledged, or `reopened` since."""
    query = _period_query(scope.period, scope.entity)
    if rule is not None:
        query["bool"]["filter"].append({"term": {"rule.id": rule}})
    query["bool"]["filter"].append(
        {
            "bool": {
                "should": [
                    {"terms": {"sepwatch.status": list(STILL_OPEN)}},
                    {"ids": {"values": reopened}},
                ],
                "minimum_should_match": 1,
            }
        }
    )
    return query


def _still_open(
    scope: _Scope, reopened: list[str], limit: int, rule: str | None = None
) -> list[OpenItem]:
    """Open or acknowledged findings now, oldest first, up to `limit`: those
    stored so or `reopened` since, each checked against its newest record."""
    query = _still_open_query(scope, reopened, rule)
    zone = ZoneInfo(scope.period.zone)
    items: list[OpenItem] = []
    after: list[Any] | None = None
    while len(items) < limit:
        page = min(5000, max(4 * (limit - len(items)), 100))
        extra: dict[str, Any] = {"search_after": after} if after else {}
        resp = _search(
            scope.es,
            scope.index,
            query=query,
            size=page,
            sort=[{"@timestamp": "asc"}, {"sepwatch.finding_id": "asc"}],
            source_includes=OPEN_ITEM_FIELDS,
            **extra,
        )
        hits = resp["hits"]["hits"]
        newest = latest(scope.es, scope.index, [h["_id"] for h in hits])
        for h in hits:
            item = _open_item(h["_source"], scope.as_of, zone, newest.get(h["_id"]))
            if item.status in STILL_OPEN and len(items) < limit:
                items.append(item)
        if len(hits) < page:
            break
        after = hits[-1]["sort"]
    return items


def _reopened(es: Elasticsearch, index: str, period: Period, entity: str | None) -> list[str]:
    """Findings of the period a record moved back to open from resolved or waived."""
    query = _period_query(period, entity, FINDING_TIME)
    query["bool"]["filter"].append({"terms": {"sepwatch.from_status": ["resolved", "waived"]}})
    query["bool"]["filter"].append({"terms": {"sepwatch.to_status": list(STILL_OPEN)}})
    resp = _search(
        es,
        lifecycle_index(index),
        query=query,
        aggs={"ids": {"terms": {"field": "sepwatch.finding_id", "size": 65536}}},
    )
    return [str(b["key"]) for b in resp.get("aggregations", {}).get("ids", {}).get("buckets", [])]


def _tally(
    es: Elasticsearch, index: str, period: Period, entity: str | None
) -> tuple[dict[str, int], dict[str, int]] | None:
    """Internal accesses in the period per entity and per app; None without a tally."""
    name = access_index(index)
    if not es.indices.exists(index=name):
        return None
    filters: list[dict[str, Any]] = [
        {
            "range": {
                "@timestamp": {
                    "gte": period.first_day.isoformat(),
                    "lt": period.end_day.isoformat(),
                }
            }
        }
    ]
    if entity is not None:
        filters.append({"term": {"organization.name": entity}})
    total = {"n": {"sum": {"field": "sepwatch.internal_accesses"}}}
    resp = _search(
        es,
        name,
        query={"bool": {"filter": filters}},
        aggs={
            "by_entity": {"terms": {"field": "organization.name", "size": 1000}, "aggs": total},
            "by_app": {"terms": {"field": "sepwatch.saas_app", "size": 1000}, "aggs": total},
        },
    )
    aggs = resp["aggregations"]

    def sums(name: str) -> dict[str, int]:
        return {str(b["key"]): int(b["n"]["value"]) for b in aggs[name]["buckets"]}

    return sums("by_entity"), sums("by_app")


def _device_measure(entity: str, accesses: int | None, failing: int, unknown: int) -> DeviceMeasure:
    bad = failing + unknown
    note = None
    compliant = share = None
    if accesses is None:
        note = "no_tally"
    elif accesses < bad:
        note = "tally_short"
    else:
        compliant = accesses - bad
        share = compliant / accesses if accesses else None
    return DeviceMeasure(
        entity=entity,
        internal_accesses=accesses,
        failing_posture=failing,
        unknown_posture=unknown,
        noncompliant=bad,
        compliant=compliant,
        compliant_share=share,
        note=note,
    )


def _apps(
    policy: Policy, as_of: date, seen: dict[str, int], accesses: dict[str, int] | None
) -> tuple[list[AppFigures], list[ExpiryFigures]]:
    pif = PolicyInForce(policy)
    day = as_of.toordinal()
    horizon = add_months(as_of, 6)
    permitted = pif.permitted_categories(day)
    names = {a.app_id: a.name for a in policy.registry}
    apps: list[AppFigures] = []
    for app_id in sorted(set(seen) | set(accesses or {})):
        entry = pif.app(app_id, day)
        until = entry.evaluation_valid_until if entry else None
        if entry is None:
            status = "not_in_registry"
        elif not entry.evaluated:
            status = "not_evaluated"
        elif evaluation_in_force(entry, day):
            status = "expiring" if until is not None and until <= horizon else "in_force"
        elif entry.evaluation_valid_from and entry.evaluation_valid_from > as_of:
            status = "not_yet_valid"
        else:
            status = "expired"
        apps.append(
            AppFigures(
                app_id=app_id,
                name=names.get(app_id, "") or app_id,
                category=entry.category if entry else None,
                status=status,
                category_permitted=(entry.category in permitted) if entry else None,
                evaluation_valid_until=until,
                internal_accesses=None if accesses is None else accesses.get(app_id, 0),
                findings=seen.get(app_id, 0),
            )
        )
    apps.sort(key=lambda a: (-(a.internal_accesses or 0), -a.findings, a.app_id))
    expiring: list[ExpiryFigures] = []
    for app_id in sorted({a.app_id for a in policy.registry}):
        entry = pif.app(app_id, day)
        until = entry.evaluation_valid_until if entry else None
        if entry and entry.evaluated and until is not None and as_of <= until <= horizon:
            expiring.append(
                ExpiryFigures(
                    app_id=app_id,
                    name=entry.name or app_id,
                    evaluation_valid_until=until,
                    days_left=(until - as_of).days,
                )
            )
    expiring.sort(key=lambda e: (e.evaluation_valid_until, e.app_id))
    return apps, expiring


def _waivers(
    policy: Policy,
    period: Period,
    entity: str | None,
    waived: dict[str, int],
    versions: dict[str, str] | None,
) -> list[WaiverFigures]:
    out: list[WaiverFigures] = []
    for w in policy.waivers:
        if w.valid_until < period.first_day or w.valid_from > period.last_day:
            continue
        if entity is not None and w.entity not in (None, entity):
            continue
        scope = [
            f"entity {w.entity}" if w.entity else "",
            # The policy names them for the committee to read; only an
            # identifier-shaped value (an RRN used as a user id) is masked.
            f"user {mask_text(w.user_id)}" if w.user_id else "",
            f"device {mask_text(w.device_id)}" if w.device_id else "",
            f"app {w.saas_app}" if w.saas_app else "",
        ]
        out.append(
            WaiverFigures(
                waiver_id=w.name,
                rule_id=w.rule_id,
                scope=", ".join(s for s in scope if s) or "all",
                approved_by=mask_text(w.approved_by),
                reason=mask_text(w.reason),
                valid_from=w.valid_from,
                valid_until=w.valid_until,
                findings_waived=waived.get(w.name, 0),
                # None: the history was not read; "": not in any recorded version.
                policy_version=None if versions is None else versions.get(w.name, ""),
            )
        )
    return out


def _rule_figures(
    rule_id: str,
    b: dict[str, Any] | None,
    shift: dict[str, Any],
    previous: int,
    days: list[tuple[int, int]],
    median: float | None,
    oldest_open: Callable[[], list[OpenItem]],
    period: Period,
) -> RuleFigures:
    """One rule's figures from its bucket of the main request (None: no
    finding in the period) and its lifecycle records' shift."""
    rule = CATALOGUE[rule_id]
    count = int(b["doc_count"]) if b else 0
    by_status = shifted(_buckets(b, "by_status") if b else {}, shift)
    open_count = sum(by_status.get(s, 0) for s in STILL_OPEN)
    none = TopList(items=[], others=0, exact=True)
    return RuleFigures(
        rule_id=rule.id,
        severity=rule.severity,
        name=rule.title,
        regulation=rule.regulation,
        count=_change(count, previous),
        by_status={s: by_status.get(s, 0) for s in STATUSES},
        by_month=[
            MonthCount(month=m, count=int(x["doc_count"]))
            for m, x in zip(period.months(), b["by_month"]["buckets"], strict=True)
        ]
        if b
        else [MonthCount(month=m, count=0) for m in period.months()],
        resolved=by_status.get("resolved", 0),
        resolved_timed=sum(c for _, c in days),
        median_minutes_to_resolve=median,
        top_users=_top_list(b["top_users"], count, True) if b else none,
        top_devices=_top_list(b["top_devices"], count, True) if b else none,
        top_apps=_top_list(b["top_apps"], count, False) if b else none,
        open_count=open_count,
        oldest_open=oldest_open() if open_count else [],
    )


def _entity_figures(
    buckets: list[dict[str, Any]], shift: dict[str, dict[str, Any]]
) -> list[EntityFigures]:
    """Per entity, by name: its findings by status (with its lifecycle
    records' shift), severity and rule."""
    return [
        EntityFigures(
            entity=str(b["key"]),
            total=int(b["doc_count"]),
            by_status={
                s: shifted(_buckets(b, "by_status"), shift.get(str(b["key"]), {})).get(s, 0)
                for s in STATUSES
            },
            by_severity={s: _buckets(b, "by_severity").get(s, 0) for s in SEVERITIES},
            by_rule=_buckets(b, "by_rule"),
        )
        for b in sorted(buckets, key=lambda b: str(b["key"]))
    ]


def _device_measures(
    names: list[str],
    entities: list[EntityFigures],
    accesses: dict[str, int] | None,
    entity: str | None,
) -> tuple[list[DeviceMeasure], DeviceMeasure]:
    """The device measure per entity and for all of them (accesses None: no
    tally loaded)."""
    rule_of = {e.entity: e.by_rule for e in entities}
    devices = [
        _device_measure(
            name,
            None if accesses is None else accesses.get(name, 0),
            rule_of.get(name, {}).get("SEP-006", 0),
            rule_of.get(name, {}).get("SEP-007", 0),
        )
        for name in names
    ]
    devices_all = _device_measure(
        entity or "*",
        None if accesses is None else sum(accesses.values()),
        sum(d.failing_posture for d in devices),
        sum(d.unknown_posture for d in devices),
    )
    return devices, devices_all


def _review_figures(
    plan: dict[str, EntitySchedule], period: Period, entity: str | None, as_of: date, zone: ZoneInfo
) -> tuple[list[ReviewFigures], list[ReviewDue]]:
    """The reviews completed in the period, and when each entity's next is due."""
    if entity is not None:
        plan = {k: v for k, v in plan.items() if k == entity}
    done = [
        ReviewFigures(
            entity=name,
            completed_at=j.review.completed_at,
            due=j.due,
            done_on_time=j.done_on_time,
            reported_at=j.review.reported_at,
            report_deadline=j.report_deadline,
            report=j.report,
            reviewer=mask_text(j.review.reviewer),
            controls=list(j.review.controls),
        )
        for name, s in plan.items()
        for j in s.reviews
        if period.start <= j.review.completed_at < period.end
    ]
    due = [
        ReviewDue(
            entity=name,
            last_completed=s.reviews[-1].review.completed_at.astimezone(zone).date()
            if s.reviews
            else None,
            next_due=s.next_due,
            overdue=s.overdue(as_of),
        )
        for name, s in plan.items()
    ]
    return done, due


def _previous(
    es: Elasticsearch, index: str, previous: Period, entity: str | None
) -> tuple[int, dict[str, Any], dict[str, Any]]:
    """The previous period's total, its aggregations (by status, severity,
    rule) and its lifecycle records' shift, for the changes the report shows."""
    prev = _search(
        es,
        index,
        query=_period_query(previous, entity),
        aggs={
            "by_status": _terms("sepwatch.status", 10),
            "by_severity": _terms("sepwatch.severity", 10),
            "by_rule": _terms("rule.id", 50),
        },
    )
    shift = status_shift(
        es, index, _period_query(previous, entity, FINDING_TIME)["bool"]["filter"], {}
    )
    return int(prev["hits"]["total"]["value"]), prev["aggregations"], shift


def gather(
    es: Elasticsearch,
    index: str,
    period: Period,
    *,
    policy: Policy,
    reviews: Iterable[ControlReview],
    entity: str | None = None,
    lang: str = "ko",
    now: datetime | None = None,
    as_of: date | None = None,
    appendix_limit: int = 5000,
    reviews_topic: str | None = None,
    policy_name: str = "",
    waiver_versions: dict[str, str] | None = None,
    step: Step = lambda _: None,
) -> Report:
    """Everything the report shows, from a handful of aggregation requests."""
    generated = now or datetime.now(UTC)
    period = Period(period.year, period.half, policy.timezone)  # the policy's days
    zone = ZoneInfo(policy.timezone)
    as_of = as_of or generated.astimezone(zone).date()
    if not es.indices.exists_alias(name=index) and not es.indices.exists(index=index):
        raise NoFindingsIndex(index)
    digest = _digest_beside(es, index, period) if entity is None else None
    scope = _Scope(es, index, period, entity, as_of)
    read = _read(scope, step)
    step("median time to resolve")
    # Findings reopened since: read once for every rule's oldest and the appendix.
    rules, reopened = _rules(scope, read)
    entities = _entity_figures(read.aggs["by_entity"]["buckets"], read.shift_under("by_entity"))
    step("accesses and device measures")
    names, access = _access_figures(scope, policy, read, entities)
    step("control reviews")
    plan = schedule(merge(reviews), policy, names, now=generated)
    done, due = _review_figures(plan, period, entity, as_of, zone)
    step("open findings (appendix)")
    open_total = sum(read.status_now.get(s, 0) for s in STILL_OPEN)
    appendix = _still_open(scope, reopened, appendix_limit) if open_total else []
    step("evidence digest")
    return Report(
        generated_at=generated,
        as_of=as_of,
        timezone=policy.timezone,
        lang=lang,
        entity=entity,
        **_periods(period),
        sources=_sources(index, reviews_topic, policy_name),
        **_counts(period, read, rules),
        rules=rules,
        entities=entities,
        **access,
        waivers=_waivers(policy, period, entity, read.buckets("by_waiver"), waiver_versions),
        reviews=done,
        reviews_due=due,
        open_total=open_total,
        appendix=appendix,
        appendix_truncated=max(0, open_total - len(appendix)),
        evidence=_evidence(digest.result()) if digest else None,
    )


@dataclass(frozen=True)
class _Read:
    """The period's findings and lifecycle shifts, and the previous period's."""

    total: int
    aggs: dict[str, Any]
    shift: dict[str, Any]
    prev_total: int
    previous: dict[str, Any]
    prev_shift: dict[str, Any]

    def buckets(self, name: str) -> dict[str, int]:
        return _buckets(self.aggs, name)

    def shift_under(self, name: str) -> dict[str, Any]:
        return shifted_under(self.shift, name)

    @property
    def status_now(self) -> dict[str, int]:
        """As the lifecycle records left them."""
        return shifted(self.buckets("by_status"), self.shift)


def _read(scope: _Scope, step: Step) -> _Read:
    es, index, period, entity = scope.es, scope.index, scope.period, scope.entity
    step("findings by rule, severity, status and month")
    resp = _search(es, index, query=_period_query(period, entity), aggs=_main_aggs(period))
    step("lifecycle records")
    shift = status_shift(
        es,
        index,
        _period_query(period, entity, FINDING_TIME)["bool"]["filter"],
        {"by_entity": "organization.name", "by_rule": "rule.id"},
        sub=_shift_aggs(),
    )
    step(f"the previous period ({period.previous.label})")
    prev_total, previous, prev_shift = _previous(es, index, period.previous, entity)
    total = int(resp["hits"]["total"]["value"])
    return _Read(total, resp["aggregations"], shift, prev_total, previous, prev_shift)


def _digest_beside(es: Elasticsearch, index: str, period: Period) -> Future[StoredDigest]:
    """The evidence digest reads every finding's digest, the longest work by far
    (bench/report.py): Elasticsearch does it beside the figures' requests."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="evidence-digest")
    digest = pool.submit(stored_digest, es, index, period)
    pool.shutdown(wait=False)
    return digest


def _rules(scope: _Scope, read: _Read) -> tuple[list[RuleFigures], list[str]]:
    """Each rule of the catalogue: its counts, time to resolve and oldest open
    findings; and the findings reopened since, read once for the appendix too."""
    shift_rule = read.shift_under("by_rule")
    rule_buckets = {b["key"]: b for b in read.aggs["by_rule"]["buckets"]}
    days = {rule: _resolved_days(b, shift_rule.get(rule, {})) for rule, b in rule_buckets.items()}
    medians = _medians(scope.es, scope.index, scope.period, scope.entity, days)
    reopened = _reopened(scope.es, scope.index, scope.period, scope.entity)
    prev_rule = _buckets(read.previous, "by_rule")
    rules = [
        _rule_figures(
            rule.id,
            rule_buckets.get(rule.id),
            shift_rule.get(rule.id, {}),
            prev_rule.get(rule.id, 0),
            days.get(rule.id, []),
            medians.get(rule.id),
            partial(_still_open, scope, reopened, OLDEST_OPEN, rule.id),
            scope.period,
        )
        for rule in CATALOGUE.values()
    ]
    return rules, reopened


def _access_figures(
    scope: _Scope, policy: Policy, read: _Read, entities: list[EntityFigures]
) -> tuple[list[str], dict[str, Any]]:
    """The entities named anywhere; the report's device measures, apps with
    their accesses, and registrations expiring soon."""
    tally = _tally(scope.es, scope.index, scope.period, scope.entity)
    by_entity_access = tally[0] if tally else None
    names = sorted({e.entity for e in entities} | set(by_entity_access or {}))
    devices, devices_all = _device_measures(names, entities, by_entity_access, scope.entity)
    apps, expiring = _apps(policy, scope.as_of, read.buckets("by_app"), tally[1] if tally else None)
    return names, {
        "devices": devices,
        "devices_all": devices_all,
        "apps": apps,
        "expiring": expiring,
    }


def _counts(period: Period, read: _Read, rules: list[RuleFigures]) -> dict[str, Any]:
    """The report's counts, each beside the previous period's."""
    status_now = read.status_now
    status_prev = shifted(_buckets(read.previous, "by_status"), read.prev_shift)
    sev_now, sev_prev = read.buckets("by_severity"), _buckets(read.previous, "by_severity")
    return {
        "empty": read.total == 0,
        "total": _change(read.total, read.prev_total),
        "by_status": {s: _change(status_now.get(s, 0), status_prev.get(s, 0)) for s in STATUSES},
        "by_severity": {s: _change(sev_now.get(s, 0), sev_prev.get(s, 0)) for s in SEVERITIES},
        "by_rule": {r.rule_id: r.count for r in rules},
        "by_month": [
            MonthCount(month=m, count=int(x["doc_count"]))
            for m, x in zip(period.months(), read.aggs["by_month"]["buckets"], strict=True)
        ],
    }


def _periods(period: Period) -> dict[str, PeriodFigures]:
    return {
        "period": _period_figures(period),
        "previous_period": _period_figures(period.previous),
    }


def _sources(index: str, reviews_topic: str | None, policy_name: str) -> Sources:
    return Sources(
        findings_index=index,
        access_index=access_index(index),
        reviews_topic=reviews_topic,
        policy=policy_name,
    )


def _evidence(stored: StoredDigest) -> Evidence:
    return Evidence(
        findings=stored.findings, digest=stored.digest, before_digests=stored.before_digests
    )


def _resolved_days(rule_bucket: dict[str, Any], shift: dict[str, Any]) -> list[tuple[int, int]]:
    """Resolved findings by whole days to resolve: stored, plus resolving
    records, minus the resolutions a reopening undid."""
    counts: dict[int, int] = {}
    sources = (
        (rule_bucket.get("resolved", {}), 1),
        (shift.get("resolved", {}), 1),
        (shift.get("unresolved", {}), -1),
    )
    for agg, sign in sources:
        for x in agg.get("days", {}).get("buckets", []):
            counts[int(x["key"])] = counts.get(int(x["key"]), 0) + sign * int(x["doc_count"])
    return sorted((k, n) for k, n in counts.items() if n > 0)
