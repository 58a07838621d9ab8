"""The console's questions to Elasticsearch: a page of findings (search_after,
never an offset), the counts per filter (aggregations), the filtered set
streamed for export (a point in time), and the overview's figures.

Every query is a filter on keyword fields the findings template declares, so
a page of one million findings costs the same as a page of one thousand.

A finding's status is its newest lifecycle record's (`<index>.lifecycle`,
streams.lifecycle), or the one it was stored with when it has none; a bank
triages most findings, so most have records. Counts by status are main's
telescoping sums (streams.lifecycle.status_shift: stored with the status,
plus records to it, minus records from it) under the same filters; records
carry the rule, severity, entity and time of their finding, and for a user,
device or app filter the matching findings' ids (up to ID_LIMIT; beyond, the
counts by status are not shown rather than shown wrong). A page filtered by
status reads the findings newest first in batches and keeps those whose
current status matches, at most SCAN_LIMIT findings a page (the next link
goes on from there)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from elasticsearch import Elasticsearch

from streams.elastic import STATUSES, finding_of
from streams.lifecycle import latest, shifted, shifted_under, status_shift, with_status

PAGE = 50
SORT: list[dict[str, Any]] = [{"@timestamp": "desc"}, {"sepwatch.finding_id": "asc"}]

# The filter a URL parameter sets, and the keyword field it sets it on.
FIELDS = {
    "rule": "rule.id",
    "severity": "sepwatch.severity",
    "status": "sepwatch.status",
    "entity": "organization.name",
    "app": "sepwatch.saas_app",
    "user": "user.id",
    "device": "host.id",
}
# Counted per value (a few dozen values each). Users and devices number in the
# tens of thousands: a list of the top twenty helps nobody and costs the most,
# so they are typed, not counted.
FACETS = ("rule", "severity", "entity", "app")
FACET_SIZE = 50
# The filters a lifecycle record carries too (copied from its finding), by field.
ON_RECORDS = {"rule": "rule.id", "severity": "sepwatch.severity", "entity": "organization.name"}
# Findings read per round when a page is filtered by status, and at most per page.
SCAN_BATCH = 500
SCAN_LIMIT = 10_000
# At most this many findings' ids narrow the records for a user, device or app filter.
ID_LIMIT = 10_000


@dataclass(frozen=True)
class Filters:
    """What the findings page shows, as kept in its URL."""

    terms: dict[str, str] = field(default_factory=dict)
    since: datetime | None = None
    until: datetime | None = None

    @classmethod
    def of(cls, params: dict[str, str]) -> Filters:
        terms = {k: params[k] for k in FIELDS if params.get(k)}
        return cls(terms, _time(params.get("from")), _time(params.get("to")))

    def query(self, *, skip: str | None = None) -> dict[str, Any]:
        """The bool filter on the findings' own fields, without the status (a
        record's, see `page`); `skip` leaves one more term out (its facet's counts)."""
        clauses: list[dict[str, Any]] = [
            {"term": {FIELDS[k]: v}} for k, v in self.terms.items() if k not in (skip, "status")
        ]
        if span := self._span():
            clauses.append({"range": {"@timestamp": span}})
        return {"bool": {"filter": clauses}}

    def _span(self) -> dict[str, str]:
        span: dict[str, str] = {}
        if self.since:
            span["gte"] = self.since.isoformat()
        if self.until:
            span["lt"] = self.until.isoformat()
        return span

    def on_records(self) -> list[dict[str, Any]]:
        """The part of the filter the lifecycle records can apply themselves."""
        clauses: list[dict[str, Any]] = [
            {"term": {ON_RECORDS[k]: v}} for k, v in self.terms.items() if k in ON_RECORDS
        ]
        if span := self._span():
            clauses.append({"range": {"sepwatch.finding_time": span}})
        return clauses

    def params(self) -> dict[str, str]:
        out = dict(self.terms)
        if self.since:
            out["from"] = self.since.isoformat()
        if self.until:
            out["to"] = self.until.isoformat()
        return out


def _time(text: str | None) -> datetime | None:
    """A date or an RFC 3339 time from the URL (an unreadable one is ignored, as
    a browser's date field may send a partial value)."""
    if not text:
        return None
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def encode_cursor(sort: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(sort).encode()).decode().rstrip("=")


def decode_cursor(text: str | None) -> list[Any] | None:
    if not text:
        return None
    try:
        value = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, list) and len(value) == len(SORT) else None


class SearchFailed(Exception):
    """One search of a multi-search failed (its type and status, no query text)."""

    def __init__(self, kind: str, status: int) -> None:
        super().__init__(f"{status} {kind}")
        self.status = status


@dataclass
class Page:
    findings: list[dict[str, Any]]
    total: int
    total_exact: bool
    next_cursor: str | None
    facets: dict[str, list[tuple[str, int]]]


_NOWHERE: dict[str, Any] = {"ignore_unavailable": True, "allow_no_indices": True}


def page(
    es: Elasticsearch,
    index: str,
    filters: Filters,
    *,
    after: list[Any] | None = None,
    size: int = PAGE,
    facets: bool = True,
) -> Page:
    """One page, newest first, each finding with its current status, and the
    counts per filter value. A facet counts under every other filter but its
    own, so a chosen value shows its siblings (under a status filter, the other
    facets count every status). The page and the counts in one round trip; the
    counts as a size-0 search, which Elasticsearch's shard request cache keeps
    until that shard changes (older months: for good)."""
    status = filters.terms.get("status")
    body: dict[str, Any] = {
        "query": filters.query(),
        "sort": SORT,
        "size": size + 1,
        "track_total_hits": 10_000,
    }
    if after:
        body["search_after"] = after
    searches: list[dict[str, Any]] = [{"index": index, **_NOWHERE}, body] if not status else []
    if facets or status:
        searches += [
            {"index": index, "request_cache": True, **_NOWHERE},
            {"size": 0, "track_total_hits": False, "aggs": _facets(filters)},
        ]
    responses = es.msearch(searches=searches)["responses"]
    for r in responses:
        if "error" in r:
            raise SearchFailed(str(r["error"].get("type", "error")), int(r.get("status", 500)))
    counted = responses[-1].get("aggregations", {}) if facets or status else {}
    out = {name: _buckets(agg["v"]["buckets"]) for name, agg in counted.items()}
    stored = dict(out.pop("status", []))
    by_status = status_counts(es, index, filters, stored) if facets or status else None
    if by_status is not None:
        out["status"] = list(by_status.items())  # else not shown: unknown, not zero
    if status:
        shown, next_after = _with_status(es, index, filters, status, after, size)
        known = by_status.get(status) if by_status is not None else None
        return Page(
            findings=shown,
            total=known if known is not None else len(shown),
            total_exact=known is not None,
            next_cursor=encode_cursor(next_after) if next_after else None,
            facets=out if facets else {},
        )
    return _newest(es, index, responses[0], size, out)


def _newest(
    es: Elasticsearch,
    index: str,
    resp: dict[str, Any],
    size: int,
    facets: dict[str, list[tuple[str, int]]],
) -> Page:
    """The page of the search by event time (no status filter), each finding
    with its current status from its newest lifecycle record."""
    hits = resp["hits"]["hits"]
    more = len(hits) > size
    hits = hits[:size]
    total = resp["hits"]["total"]
    found = [finding_of(h["_source"]) for h in hits]
    return Page(
        findings=with_status(found, latest(es, index, [f["finding_id"] for f in found])),
        total=int(total["value"]),
        total_exact=total["relation"] == "eq",
        next_cursor=encode_cursor(hits[-1]["sort"]) if more and hits else None,
        facets=facets,
    )


def _with_status(
    es: Elasticsearch,
    index: str,
    filters: Filters,
    status: str,
    after: list[Any] | None,
    size: int,
) -> tuple[list[dict[str, Any]], list[Any] | None]:
    """Up to `size` findings whose current status is `status`, newest first,
    and where the next page goes on from (None: nothing after)."""
    kept: list[tuple[dict[str, Any], list[Any]]] = []
    scanned = 0
    while scanned < SCAN_LIMIT:
        extra: dict[str, Any] = {"search_after": after} if after else {}
        hits = es.search(
            index=index, query=filters.query(), sort=SORT, size=SCAN_BATCH, **extra, **_NOWHERE
        )["hits"]["hits"]
        batch = [finding_of(h["_source"]) for h in hits]
        batch = with_status(batch, latest(es, index, [f["finding_id"] for f in batch]))
        kept += [(f, h["sort"]) for f, h in zip(batch, hits, strict=True) if f["status"] == status]
        scanned += len(hits)
        if len(kept) > size:
            return [f for f, _ in kept[:size]], kept[size - 1][1]
        if len(hits) < SCAN_BATCH:
            return [f for f, _ in kept], None
        after = hits[-1]["sort"]
    # Read enough for one page: show what matched, and go on from where it stopped.
    return [f for f, _ in kept], after


def status_counts(
    es: Elasticsearch, index: str, filters: Filters, stored: dict[str, int]
) -> dict[str, int] | None:
    """Findings per current status under the filters (but a status one):
    `stored` (per stored status) moved by the matching findings' records.
    None when a user, device or app filter matches more than ID_LIMIT findings."""
    scope = filters.on_records()
    if any(k in filters.terms for k in ("app", "user", "device")):
        # Counted first (cheap, and cached): an app's findings run to the
        # hundreds of thousands, and reading 10,000 ids only to give up is not.
        matching = es.count(index=index, query=filters.query(), **_NOWHERE)["count"]
        if matching > ID_LIMIT:
            return None
        resp = es.search(
            index=index,
            query=filters.query(),
            size=max(matching, 1),
            source=False,
            docvalue_fields=[{"field": "sepwatch.finding_id"}],
            **_NOWHERE,
        )
        ids = [h["fields"]["sepwatch.finding_id"][0] for h in resp["hits"]["hits"]]
        scope.append({"terms": {"sepwatch.finding_id": ids}})
    counts = shifted(stored, status_shift(es, index, scope, {}))
    return {s: counts.get(s, 0) for s in STATUSES}


def _facets(filters: Filters) -> dict[str, Any]:
    """Each facet's counts under every other filter; by status as stored (see
    `status_counts`)."""
    return {
        name: {
            "filter": filters.query(skip=name),
            "aggs": {"v": {"terms": {"field": FIELDS[name], "size": FACET_SIZE}}},
        }
        for name in (*FACETS, "status")
    }


def _buckets(buckets: list[dict[str, Any]]) -> list[tuple[str, int]]:
    return [(str(b["key"]), int(b["doc_count"])) for b in buckets]


def export(
    es: Elasticsearch, index: str, filters: Filters, *, batch: int = 2000
) -> Iterator[dict[str, Any]]:
    """Every finding of the filtered set, newest first, with its status, in one
    point in time (findings arriving meanwhile do not shift the pages)."""
    query = filters.query()
    status = filters.terms.get("status")
    pit = es.open_point_in_time(index=index, keep_alive="2m", ignore_unavailable=True)["id"]
    after: list[Any] | None = None
    try:
        while True:
            body: dict[str, Any] = {
                "query": query,
                "sort": SORT,
                "size": batch,
                "pit": {"id": pit, "keep_alive": "2m"},
            }
            if after:
                body["search_after"] = after
            resp = es.search(**body)
            pit = resp.get("pit_id", pit)
            hits = resp["hits"]["hits"]
            found = [finding_of(h["_source"]) for h in hits]
            found = with_status(found, latest(es, index, [f["finding_id"] for f in found]))
            yield from (f for f in found if status is None or f["status"] == status)
            if len(hits) < batch:
                return
            after = hits[-1]["sort"]
    finally:
        es.close_point_in_time(id=pit)


@dataclass
class Overview:
    entity: str | None
    open_total: int
    open_by_rule: dict[str, dict[str, int]]  # rule -> severity -> count
    trend: list[tuple[str, int]]  # UTC day -> findings that day
    entities: list[str]


def overview(es: Elasticsearch, index: str, entity: str | None, now: datetime) -> Overview:
    """Open (or acknowledged) findings by rule and severity, as their lifecycle
    records leave them (stored counts by status, moved by the records'), and
    the last 30 days: two requests."""
    scope: list[dict[str, Any]] = []
    if entity:
        scope.append({"term": {"organization.name": entity}})
    start = (now - timedelta(days=29)).date()
    by_status = {"status": {"terms": {"field": "sepwatch.status", "size": 10}}}
    within = {
        "open": {
            "terms": {"field": "rule.id", "size": 100},
            "aggs": {
                "sev": {"terms": {"field": "sepwatch.severity", "size": 4}, "aggs": by_status}
            },
        },
        "trend": {
            "filter": {"range": {"@timestamp": {"gte": start.isoformat()}}},
            "aggs": {
                "day": {
                    "date_histogram": {
                        "field": "@timestamp",
                        "calendar_interval": "day",
                        "min_doc_count": 0,
                        "extended_bounds": {
                            "min": start.isoformat(),
                            "max": now.date().isoformat(),
                        },
                        "format": "yyyy-MM-dd",
                    }
                }
            },
        },
    }
    resp = es.search(
        index=index,
        size=0,
        aggs={
            # Every entity, for the page's entity links; the figures, for the one asked.
            "entities": {"terms": {"field": "organization.name", "size": 200}},
            "scope": {"filter": {"bool": {"filter": scope}}, "aggs": within},
        },
        **_NOWHERE,
    )
    aggs = resp.get("aggregations")
    if not aggs:
        return Overview(entity, 0, {}, [], [])
    mine = aggs["scope"]
    shift = status_shift(es, index, scope, {"rule": "rule.id"}, sub=_SEVERITY_SHIFT)
    by_rule = _open_cells(mine["open"]["buckets"], shifted_under(shift, "rule"))
    return Overview(
        entity=entity,
        open_total=sum(n for cells in by_rule.values() for n in cells.values()),
        open_by_rule=dict(sorted(by_rule.items())),
        trend=[(b["key_as_string"], int(b["doc_count"])) for b in mine["trend"]["day"]["buckets"]],
        entities=sorted(str(b["key"]) for b in aggs["entities"]["buckets"]),
    )


_SEVERITY_SHIFT = {
    "sev": {
        "terms": {"field": "sepwatch.severity", "size": 4},
        "aggs": {
            "to": {"terms": {"field": "sepwatch.to_status", "size": 10}},
            "from": {"terms": {"field": "sepwatch.from_status", "size": 10}},
        },
    }
}
OPEN = ("open", "acknowledged")  # still to be dealt with


def _open_cells(
    rules: list[dict[str, Any]], shift: dict[str, dict[str, Any]]
) -> dict[str, dict[str, int]]:
    """Rule -> severity -> open or acknowledged findings, stored counts moved by the records."""
    out: dict[str, dict[str, int]] = {}
    for rule in rules:
        moved = {
            str(b["key"]): b
            for b in shift.get(str(rule["key"]), {}).get("sev", {}).get("buckets", [])
        }
        for sev in rule["sev"]["buckets"]:
            stored = {str(b["key"]): int(b["doc_count"]) for b in sev["status"]["buckets"]}
            now = shifted(stored, moved.get(str(sev["key"]), {}))
            n = sum(now.get(s, 0) for s in OPEN)
            if n:
                out.setdefault(str(rule["key"]), {})[str(sev["key"])] = n
    return out
