"""Evidence that can be verified: Elasticsearch checked against Kafka.

The findings topic is the system of record: the engine writes each finding
there first, keyed by id, and the topic is kept long enough for two review
periods (`evidence_retention_days`, 400 by default). Lifecycle records are
copied to their own topic (`PREFIXfindings-lifecycle`) once Elasticsearch has
stored them, with the actor it stamped. An administrator of Elasticsearch can
delete or edit documents there; they cannot make the topics agree.

`verify` reads both topics from their beginning and compares, for one report
period: every finding present in Elasticsearch with the same content digest
(streams.elastic.content_digest, stored beside it as `sepwatch.digest`), every
lifecycle record present and unchanged, nothing in Elasticsearch the topics
do not know. The period's evidence digest is one sha256 over the period's finding
digests, sorted, one a line (a digest covers its finding's id): the report prints it
(computed from the digests Elasticsearch holds), and `verify --digest`
recomputes it from the topic.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from elasticsearch import Elasticsearch, NotFoundError
from pydantic import ValidationError

from schemas import Finding
from streams.elastic import content_digest, document
from streams.lifecycle import lifecycle_index

if TYPE_CHECKING:
    from review.period import Period
    from streams.settings import Settings


def period_digest(digests: Iterable[str]) -> str:
    """One sha256 over the finding digests, one a line, in order. A finding's
    digest covers its id and content, so no two findings share one and the
    order of the digests is the order of a fixed set."""
    h = hashlib.sha256()
    for digest in sorted(digests):
        h.update(f"{digest}\n".encode())
    return h.hexdigest()


def _in_period(timestamp: str | None, period: Period) -> bool:
    if not timestamp:
        return False
    from datetime import datetime

    t = datetime.fromisoformat(timestamp)
    return period.start <= t < period.end


def _range(field_name: str, period: Period) -> dict[str, Any]:
    return {"range": {field_name: {"gte": period.start.isoformat(), "lt": period.end.isoformat()}}}


PAGE = 50_000  # buckets a request: under the default search.max_buckets (65,536)


@dataclass(frozen=True)
class StoredDigest:
    """The period's evidence digest as Elasticsearch holds it: over the
    `findings` that carry a digest; `before_digests` documents were written
    before digests were stored and are not covered (nor counted in `findings`)."""

    findings: int
    digest: str
    before_digests: int


def stored_digest(es: Elasticsearch, index: str, period: Period) -> StoredDigest:
    """The period's evidence digest from the digests Elasticsearch holds, read
    by aggregation from doc values (no document is fetched).

    The period is cut into time windows of at most a page of findings each
    (from an hourly histogram), and each window's digests are one `terms`
    aggregation: every document is visited about twice, where paging one
    aggregation by `after` visits all of them again for every page."""
    digests: list[str] = []
    for start, end in _windows(es, index, period):
        digests.extend(_digests(es, index, start, end))
    covered = [d for d in digests if d]
    return StoredDigest(len(covered), period_digest(covered), len(digests) - len(covered))


def _windows(es: Elasticsearch, index: str, period: Period) -> list[tuple[int, int]]:
    """[start, end) epoch-ms windows holding at most PAGE findings each (an
    hour holding more is one window, read in several requests)."""
    resp = es.search(
        index=index,
        query={"bool": {"filter": [_range("@timestamp", period)]}},
        size=0,
        aggs={"hours": {"date_histogram": {"field": "@timestamp", "fixed_interval": "1h"}}},
        ignore_unavailable=True,
        allow_no_indices=True,
    )
    hours = resp.get("aggregations", {}).get("hours", {}).get("buckets", [])
    windows: list[tuple[int, int, int]] = []  # start, end, findings
    for b in hours:
        start, count = int(b["key"]), int(b["doc_count"])
        if windows and windows[-1][2] + count <= PAGE:
            windows[-1] = (windows[-1][0], start + 3_600_000, windows[-1][2] + count)
        elif count:
            windows.append((start, start + 3_600_000, count))
    return [(start, end) for start, end, _ in windows]


def _digests(es: Elasticsearch, index: str, start: int, end: int) -> list[str]:
    """The stored digests of the findings stamped in [start, end)."""
    window = {"range": {"@timestamp": {"gte": start, "lt": end, "format": "epoch_millis"}}}
    resp = es.search(
        index=index,
        query={"bool": {"filter": [window]}},
        size=0,
        track_total_hits=True,
        # A document stored before digests were counts, with an empty digest.
        aggs={"digests": {"terms": {"field": "sepwatch.digest", "size": PAGE, "missing": ""}}},
        filter_path=["hits.total", "aggregations.digests.buckets"],
        ignore_unavailable=True,
        allow_no_indices=True,
    )
    total = int(resp.get("hits", {}).get("total", {}).get("value", 0))
    buckets = resp.get("aggregations", {}).get("digests", {}).get("buckets", [])
    out = [str(b["key"]) for b in buckets for _ in range(int(b["doc_count"]))]
    if len(out) < total:  # more than a page in one hour: halve the window
        middle = (start + end) // 2
        return _digests(es, index, start, middle) + _digests(es, index, middle, end)
    return out


# What versions before lifecycle records changed in place on a finding's
# document (streams/lifecycle.py reads them still): a document of that time
# differs from its finding there without anyone having tampered with it.
IN_PLACE = ("status", "lifecycle")


def _content_but_status(doc: dict[str, Any]) -> str:
    """A finding document's content digest without what versions before
    digests changed in place (IN_PLACE)."""
    sw = {k: v for k, v in doc.get("sepwatch", {}).items() if k not in IN_PLACE}
    return content_digest({**doc, "sepwatch": sw})


@dataclass(frozen=True)
class OnTopic:
    """A finding as the topic holds it: the digest of its document, and of
    that document without the status it may have been given in place."""

    digest: str
    but_status: str


@dataclass
class Verdict:
    """What `verify` found: problems named one by one, the topic's digest, and
    the findings written before digests (not altered; their status and
    lifecycle kept in the document then cannot be verified)."""

    findings: int = 0
    records: int = 0
    digest: str = ""
    problems: list[str] = field(default_factory=list)
    before_digests: list[str] = field(default_factory=list)


def topic_findings(values: Iterable[bytes | None], period: Period) -> dict[str, OnTopic]:
    """The period's findings on the topic, by id, with their content digests;
    the first copy of an id is the one the sink stored (create-by-id)."""
    out: dict[str, OnTopic] = {}
    for value in values:
        try:
            finding = Finding.model_validate_json(value or b"")
        except ValidationError:
            continue  # dead-lettered by the sink; never in Elasticsearch either
        if finding.finding_id in out:
            continue
        doc = document(finding)
        if _in_period(doc["@timestamp"], period):
            out[finding.finding_id] = OnTopic(doc["sepwatch"]["digest"], _content_but_status(doc))
    return out


def topic_records(values: Iterable[bytes | None], period: Period) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for value in values:
        try:
            copy = json.loads(value or b"")
            rec = copy["record"]
            finding_time = rec["sepwatch"]["finding_time"]
        except (ValueError, KeyError, TypeError):
            continue
        if _in_period(finding_time, period):
            out[copy["record_id"]] = rec
    return out


def _canonical(doc: dict[str, Any]) -> bytes:
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)


def _finding_problem(
    fid: str, source: dict[str, Any], where: str, want: OnTopic | None
) -> str | None:
    """What is wrong with one stored finding, if anything. A document written
    before digests passes when its content matches the topic's but for the
    status and lifecycle versions of that time kept in it (IN_PLACE)."""
    stored = source.get("sepwatch", {}).get("digest")
    if want is None:
        return f"finding {fid}: in Elasticsearch ({where}) but not on the findings topic"
    if not stored:
        if content_digest(source) == want.digest or _content_but_status(source) == want.but_status:
            return None
        return (
            f"finding {fid}: altered in Elasticsearch ({where}): written before digests, "
            "and its content differs from the topic's beyond the status kept in it then"
        )
    if content_digest(source) != want.digest:
        return f"finding {fid}: altered in Elasticsearch ({where}): content digest differs"
    if stored != want.digest:
        return f"finding {fid}: its stored digest was altered ({where})"
    return None


def check(
    es: Elasticsearch,
    index: str,
    period: Period,
    findings: dict[str, OnTopic],
    records: dict[str, dict[str, Any]],
    *,
    report_digest: str | None = None,
) -> Verdict:
    """Compare Elasticsearch with what the topics say of one period. The
    period's digest covers the findings Elasticsearch holds a digest for, as
    the report's does: one whose digest an administrator removed falls out of
    it, so a report's digest stops verifying."""
    from elasticsearch.helpers import scan

    v = Verdict(findings=len(findings), records=len(records))
    seen: dict[str, str] = {}
    query = {"query": {"bool": {"filter": [_range("@timestamp", period)]}}}
    for hit in scan(es, index=index, query=query, size=2000):
        fid = hit["_id"]
        seen[fid] = str(hit["_source"].get("sepwatch", {}).get("digest") or "")
        problem = _finding_problem(fid, hit["_source"], hit["_index"], findings.get(fid))
        if problem is not None:
            v.problems.append(problem)
        elif not seen[fid]:
            v.before_digests.append(fid)
    v.before_digests.sort()
    for fid in sorted(set(findings) - set(seen)):
        v.problems.append(f"finding {fid}: missing from Elasticsearch")
    v.digest = period_digest(on.digest for fid, on in findings.items() if seen.get(fid) != "")
    stored: dict[str, dict[str, Any]] = {}
    lq = {"query": {"bool": {"filter": [_range("sepwatch.finding_time", period)]}}}
    try:
        for hit in scan(es, index=lifecycle_index(index), query=lq, size=2000):
            stored[hit["_id"]] = hit["_source"]
    except NotFoundError:
        pass
    for rid in sorted(set(records) | set(stored)):
        if rid not in stored:
            v.problems.append(f"lifecycle record {rid}: missing from Elasticsearch")
        elif rid not in records:
            v.problems.append(
                f"lifecycle record {rid}: in Elasticsearch but not on the lifecycle topic"
            )
        elif _canonical(stored[rid]) != _canonical(records[rid]):
            v.problems.append(f"lifecycle record {rid}: altered in Elasticsearch")
    if report_digest is not None and report_digest != v.digest:
        v.problems.append(
            f"report digest {report_digest} does not match the period's findings "
            f"on the topic ({v.digest})"
        )
    now = period_digest(d for d in seen.values() if d)
    if report_digest is not None and report_digest != now:
        v.problems.append(
            f"report digest {report_digest} does not match the period's findings "
            f"in Elasticsearch now ({now})"
        )
    return v


def publish_lifecycle(settings: Settings, record_id: str, stored: dict[str, Any]) -> None:
    """Copy a stored lifecycle record to the lifecycle topic, keyed by its finding."""
    from streams.lifecycle import publish_copy

    publish_copy(settings, record_id, stored)
