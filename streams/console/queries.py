"""The console's questions to Elasticsearch: a page of findings (search_after,
never an offset), the counts per filter (aggregations), the filtered set
streamed for export (a point in time), and the overview's figures.

Every query is a filter on keyword fields the findings template declares, so
a page of one million findings costs the same as a page of one thousand.

A finding's status is its newest lifecycle record's (`<index>.lifecycle`,
streams.lifecycle), or the one it was stored with when it has none. A status
filter or count is therefore a query over both: the findings stored with the
status that no record has moved, or whose newest record moved them to it. The
findings with records are read first (one collapsed search of the records),
at most MOVED_LIMIT of them under the filters the records carry (rule,
severity, entity, time); beyond that the console says so (`TooManyMoved`)
rather than count wrong."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from elasticsearch import Elasticsearch

from streams.elastic import STATUSES, finding_of
from streams.lifecycle import latest, lifecycle_index, with_status

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
MOVED_LIMIT = 10_000


class TooManyMoved(Exception):
    """More findings with lifecycle records under these filters than one search reads."""


@dataclass(frozen=True)
class Moved:
    """The findings that have lifecycle records, and the status their newest sets."""

    to: dict[str, str] = field(default_factory=dict)

    def clause(self, statuses: list[str]) -> dict[str, Any]:
        """Findings whose current status is one of `statuses`."""
        stored: dict[str, Any] = {"filter": [{"terms": {"sepwatch.status": statuses}}]}
        if self.to:
            stored["must_not"] = [{"terms": {"sepwatch.finding_id": list(self.to)}}]
        should: list[dict[str, Any]] = [{"bool": stored}]
        now = [fid for fid, status in self.to.items() if status in statuses]
        if now:
            should.append({"terms": {"sepwatch.finding_id": now}})
        return {"bool": {"should": should, "minimum_should_match": 1}}


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

    def query(self, moved: Moved | None = None, *, skip: str | None = None) -> dict[str, Any]:
        """The bool filter; `skip` leaves one term out (its own facet's counts).
        A status filter needs `moved` (the findings whose records set it)."""
        clauses: list[dict[str, Any]] = [
            {"term": {FIELDS[k]: v}} for k, v in self.terms.items() if k not in (skip, "status")
        ]
        if "status" in self.terms and skip != "status":
            if moved is None:
                raise ValueError("a status filter needs the findings' lifecycle records")
            clauses.append(moved.clause([self.terms["status"]]))
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


_NOWHERE = {"ignore_unavailable": True, "allow_no_indices": True}


def moved(es: Elasticsearch, index: str, scope: list[dict[str, Any]]) -> Moved:
    """The findings under `scope` (record fields) that have lifecycle records,
    each with its newest record's status: one search, collapsed by finding."""
    resp = es.search(
        index=lifecycle_index(index),
        query={"bool": {"filter": scope}},
        collapse={"field": "sepwatch.finding_id"},
        sort=[{"sepwatch.seq": "desc"}],
        source_includes=["sepwatch.finding_id", "sepwatch.to_status"],
        size=MOVED_LIMIT,
        track_total_hits=False,
        **_NOWHERE,
    )
    hits = resp["hits"]["hits"]
    if len(hits) >= MOVED_LIMIT:
        raise TooManyMoved(
            f"more than {MOVED_LIMIT:,} findings under these filters have lifecycle records: "
            "narrow them by rule, severity, entity or time to filter or count by status"
        )
    return Moved(
        {
            h["_source"]["sepwatch"]["finding_id"]: h["_source"]["sepwatch"]["to_status"]
            for h in hits
        }
    )


def page(
    es: Elasticsearch,
    index: str,
    filters: Filters,
    *,
    after: list[Any] | None = None,
    size: int = PAGE,
    facets: bool = True,
) -> Page:
    """One page, newest first, and the counts per filter value. A facet counts
    under every other filter but its own, so a chosen value shows its siblings.
    Both in one round trip; the counts as a size-0 search, which Elasticsearch's
    shard request cache keeps until that shard changes (older months: for good).
    Before it, when a status is filtered or counted, the findings with records."""
    by_status = facets or "status" in filters.terms
    changed = moved(es, index, filters.on_records()) if by_status else None
    body: dict[str, Any] = {
        "query": filters.query(changed),
        "sort": SORT,
        "size": size + 1,
        "track_total_hits": 10_000,
    }
    if after:
        body["search_after"] = after
    searches: list[dict[str, Any]] = [{"index": index, **_NOWHERE}, body]
    if changed is not None and facets:
        searches += [
            {"index": index, "request_cache": True, **_NOWHERE},
            {"size": 0, "track_total_hits": False, "aggs": _facets(filters, changed)},
        ]
    responses = es.msearch(searches=searches)["responses"]
    for r in responses:
        if "error" in r:
            raise SearchFailed(str(r["error"].get("type", "error")), int(r.get("status", 500)))
    resp = responses[0]
    hits = resp["hits"]["hits"]
    more = len(hits) > size
    hits = hits[:size]
    counted = responses[1].get("aggregations", {}) if facets else {}
    out = {name: _buckets(agg["v"]["buckets"]) for name, agg in counted.items()}
    total = resp["hits"]["total"]
    shown = [finding_of(h["_source"]) for h in hits]
    return Page(
        findings=with_status(shown, latest(es, index, [f["finding_id"] for f in shown])),
        total=int(total["value"]),
        total_exact=total["relation"] == "eq",
        next_cursor=encode_cursor(hits[-1]["sort"]) if more and hits else None,
        facets=out,
    )


def _facets(filters: Filters, changed: Moved) -> dict[str, Any]:
    """Each facet's counts under every other filter; statuses as the records leave them."""
    aggs: dict[str, Any] = {
        name: {
            "filter": filters.query(changed, skip=name),
            "aggs": {"v": {"terms": {"field": FIELDS[name], "size": FACET_SIZE}}},
        }
        for name in FACETS
    }
    aggs["status"] = {
        "filter": filters.query(changed, skip="status"),
        "aggs": {"v": {"filters": {"filters": {s: changed.clause([s]) for s in STATUSES}}}},
    }
    return aggs


def _buckets(buckets: list[dict[str, Any]] | dict[str, dict[str, Any]]) -> list[tuple[str, int]]:
    """A terms aggregation's buckets, or a filters aggregation's (keyed)."""
    if isinstance(buckets, dict):
        return [(k, int(b["doc_count"])) for k, b in buckets.items() if b["doc_count"]]
    return [(str(b["key"]), int(b["doc_count"])) for b in buckets]


def export(
    es: Elasticsearch, index: str, filters: Filters, *, batch: int = 2000
) -> Iterator[dict[str, Any]]:
    """Every finding of the filtered set, newest first, with its status, in one
    point in time (findings arriving meanwhile do not shift the pages)."""
    changed = moved(es, index, filters.on_records()) if "status" in filters.terms else None
    query = filters.query(changed)
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
            yield from with_status(found, latest(es, index, [f["finding_id"] for f in found]))
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
    records leave them, and the last 30 days: the findings with records, then
    one request."""
    scope: list[dict[str, Any]] = []
    if entity:
        scope.append({"term": {"organization.name": entity}})
    changed = moved(es, index, scope)
    start = (now - timedelta(days=29)).date()
    within = {
        "open": {
            "filter": changed.clause(["open", "acknowledged"]),
            "aggs": {
                "rule": {
                    "terms": {"field": "rule.id", "size": 100},
                    "aggs": {"sev": {"terms": {"field": "sepwatch.severity", "size": 4}}},
                }
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
    by_rule = {
        str(b["key"]): {str(s["key"]): int(s["doc_count"]) for s in b["sev"]["buckets"]}
        for b in mine["open"]["rule"]["buckets"]
    }
    return Overview(
        entity=entity,
        open_total=int(mine["open"]["doc_count"]),
        open_by_rule=dict(sorted(by_rule.items())),
        trend=[(b["key_as_string"], int(b["doc_count"])) for b in mine["trend"]["day"]["buckets"]],
        entities=sorted(str(b["key"]) for b in aggs["entities"]["buckets"]),
    )
