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
do not know. The period's evidence digest is one sha256 over the ordered
`finding_id digest` lines of the period's findings: the report prints it
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
    from streams.report.period import Period
    from streams.settings import Settings


def period_digest(digests: Iterable[tuple[str, str]]) -> str:
    """One sha256 over `finding_id digest` lines, ordered by finding id."""
    h = hashlib.sha256()
    for finding_id, digest in sorted(digests):
        h.update(f"{finding_id} {digest}\n".encode())
    return h.hexdigest()


def _in_period(timestamp: str | None, period: Period) -> bool:
    if not timestamp:
        return False
    from datetime import datetime

    t = datetime.fromisoformat(timestamp)
    return period.start <= t < period.end


def _range(field_name: str, period: Period) -> dict[str, Any]:
    return {"range": {field_name: {"gte": period.start.isoformat(), "lt": period.end.isoformat()}}}


def stored_digest(es: Elasticsearch, index: str, period: Period) -> tuple[int, str]:
    """The period's evidence digest from the digests Elasticsearch holds: a
    composite aggregation over (finding id, digest) gives the pairs already in
    id order, from doc values (no document is read; about five times faster
    than paging hits). How many findings, and the hash."""
    pairs: list[tuple[str, str]] = []
    after: dict[str, Any] | None = None
    page = 50_000  # under the default search.max_buckets (65,536)
    while True:
        composite: dict[str, Any] = {
            "size": page,
            "sources": [
                {"id": {"terms": {"field": "sepwatch.finding_id"}}},
                # A document stored before digests were: an empty digest, still counted.
                {"digest": {"terms": {"field": "sepwatch.digest", "missing_bucket": True}}},
            ],
        }
        if after is not None:
            composite["after"] = after
        resp = es.search(
            index=index,
            query={"bool": {"filter": [_range("@timestamp", period)]}},
            size=0,
            aggs={"pairs": {"composite": composite}},
            filter_path=["aggregations.pairs.after_key", "aggregations.pairs.buckets.key"],
            ignore_unavailable=True,
            allow_no_indices=True,
        )
        agg = resp.get("aggregations", {}).get("pairs", {})
        buckets = agg.get("buckets", [])
        pairs.extend((b["key"]["id"], b["key"]["digest"] or "") for b in buckets)
        if len(buckets) < page:
            return len(pairs), period_digest(pairs)
        after = agg["after_key"]


@dataclass
class Verdict:
    """What `verify` found: problems named one by one, and the topic's digest."""

    findings: int = 0
    records: int = 0
    digest: str = ""
    problems: list[str] = field(default_factory=list)


def topic_findings(values: Iterable[bytes | None], period: Period) -> dict[str, str]:
    """The period's findings on the topic, by id, with their content digest;
    the first copy of an id is the one the sink stored (create-by-id)."""
    out: dict[str, str] = {}
    for value in values:
        try:
            finding = Finding.model_validate_json(value or b"")
        except ValidationError:
            continue  # dead-lettered by the sink; never in Elasticsearch either
        if finding.finding_id in out:
            continue
        doc = document(finding)
        if _in_period(doc["@timestamp"], period):
            out[finding.finding_id] = doc["sepwatch"]["digest"]
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


def check(
    es: Elasticsearch,
    index: str,
    period: Period,
    findings: dict[str, str],
    records: dict[str, dict[str, Any]],
    *,
    report_digest: str | None = None,
) -> Verdict:
    """Compare Elasticsearch with what the topics say of one period."""
    from elasticsearch.helpers import scan

    v = Verdict(
        findings=len(findings), records=len(records), digest=period_digest(findings.items())
    )
    seen: dict[str, str] = {}
    query = {"query": {"bool": {"filter": [_range("@timestamp", period)]}}}
    for hit in scan(es, index=index, query=query, size=2000):
        fid = hit["_id"]
        seen[fid] = str(hit["_source"].get("sepwatch", {}).get("digest", ""))
        want = findings.get(fid)
        if want is None:
            v.problems.append(
                f"finding {fid}: in Elasticsearch ({hit['_index']}) but not on the findings topic"
            )
        elif content_digest(hit["_source"]) != want:
            v.problems.append(
                f"finding {fid}: altered in Elasticsearch ({hit['_index']}): content digest differs"
            )
        elif hit["_source"].get("sepwatch", {}).get("digest") != want:
            v.problems.append(f"finding {fid}: its stored digest was altered ({hit['_index']})")
    for fid in sorted(set(findings) - set(seen)):
        v.problems.append(f"finding {fid}: missing from Elasticsearch")
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
    now = period_digest(seen.items())
    if report_digest is not None and report_digest != now:
        v.problems.append(
            f"report digest {report_digest} does not match the period's findings "
            f"in Elasticsearch now ({now})"
        )
    return v


def publish_lifecycle(settings: Settings, record_id: str, stored: dict[str, Any]) -> None:
    """Copy a stored lifecycle record to the lifecycle topic, keyed by its finding."""
    from kafka.errors import KafkaError

    from streams.kafka_io import KafkaUnavailable, producer
    from streams.topics import Topics

    out = producer(settings.kafka)
    try:
        value = orjson.dumps({"record_id": record_id, "record": stored})
        key = stored["sepwatch"]["finding_id"].encode()
        out.send(Topics(settings.topic_prefix).lifecycle, value, key=key).get(timeout=30)
    except KafkaError as exc:
        raise KafkaUnavailable(f"{type(exc).__name__}: {exc}") from None
    finally:
        out.close()
