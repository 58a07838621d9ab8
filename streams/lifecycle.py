"""A finding's lifecycle as records only ever added: acknowledge, resolve,
reopen and waive are documents in `<index>.lifecycle`, each naming who acted,
when, why, and the status it moved the finding from and to. A finding's
document is never changed; its current status is its newest record's
`to_status`, or the status the engine gave it when it has none.

Who acted is the identity Elasticsearch authenticated, never a flag: on a
secured node the index's final pipeline (`set_security_user`, which a
request cannot skip) writes the user of the credentials used into
`sepwatch.actor`, over whatever the client sent. A node without security
authenticates nobody: the record then carries the OS user, marked
`authentication_type: unauthenticated`.

The record of a finding's n-th step has the id `<finding id>.<n>` and is
created with `op_type=create`: two analysts acting at once cannot both take
step n; the second is told the finding changed meanwhile.

Because each record moves one finding from one status to another, counts by
status telescope: the findings with status s are those stored with s, plus
the records to s, minus the records from s (`status_shift`). The report's
figures stay aggregations.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from elasticsearch import ApiError, ConflictError, Elasticsearch, NotFoundError

from detectors.masking import mask_text
from streams.elastic import locate

if TYPE_CHECKING:
    from streams.settings import Settings

_KW = {"type": "keyword", "ignore_above": 1024}
_DATE = {"type": "date"}


@dataclass(frozen=True)
class Action:
    verb: str
    to: str
    allowed_from: tuple[str, ...]


ACTIONS = {
    a.verb: a
    for a in (
        Action("acknowledge", "acknowledged", ("open",)),
        Action("resolve", "resolved", ("open", "acknowledged")),
        Action("reopen", "open", ("acknowledged", "resolved", "waived")),
        Action("waive", "waived", ("open", "acknowledged")),
    )
}
UNAUTHENTICATED = "unauthenticated"

MAPPINGS: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "@timestamp": _DATE,
        "event": {
            "properties": {
                "action": _KW,
                "kind": _KW,
                "dataset": _KW,
                "reason": {"type": "text"},
            }
        },
        # Copied from the finding so the report filters records as it filters findings.
        "rule": {"properties": {"id": _KW}},
        "organization": {"properties": {"name": _KW}},
        "sepwatch": {
            "properties": {
                "finding_id": _KW,
                "finding_time": _DATE,
                "severity": _KW,
                "seq": {"type": "long"},
                "from_status": _KW,
                "to_status": _KW,
                # On resolving: detected_at to the record's time. On reopening a
                # resolved finding: the same seconds again, so that histograms of
                # time to resolve telescope like the counts.
                "resolve_seconds": {"type": "long"},
                "actor": {
                    "dynamic": "strict",
                    "properties": {
                        "username": _KW,
                        "authentication_type": _KW,
                        "roles": _KW,
                        "realm": {"properties": {"name": _KW, "type": _KW}},
                    },
                },
            }
        },
    },
}


class TransitionRefused(ValueError):
    """The finding's lifecycle does not allow that step (or it changed meanwhile)."""


def lifecycle_index(index: str) -> str:
    """Beside the findings alias, outside its `<index>-*` template pattern."""
    return f"{index}.lifecycle"


def pipeline_name(index: str) -> str:
    return f"{lifecycle_index(index)}-actor"


def authenticated(es: Elasticsearch) -> dict[str, Any] | None:
    """Who Elasticsearch says the client's credentials are; None on a node
    without security (there is no one to authenticate)."""
    try:
        me = es.security.authenticate()
    except ApiError as exc:
        if exc.meta.status in (400, 404, 405, 500) and "ecurity" in str(exc.message):
            return None
        raise
    return {
        "username": me["username"],
        "authentication_type": me.get("authentication_type", ""),
        "roles": list(me.get("roles", [])),
        "realm": {
            "name": me.get("authentication_realm", {}).get("name", ""),
            "type": me.get("authentication_realm", {}).get("type", ""),
        },
    }


def os_actor() -> dict[str, Any]:
    """On a node without security: the OS user, said to be unproven."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return {"username": user, "authentication_type": UNAUTHENTICATED}


def template_body(index: str, *, secured: bool = False) -> dict[str, Any]:
    settings: dict[str, Any] = {"number_of_shards": 1, "number_of_replicas": 0}
    if secured:
        settings["index.final_pipeline"] = pipeline_name(index)
    return {
        "index_patterns": [lifecycle_index(index)],
        "priority": 200,
        "template": {"settings": settings, "mappings": MAPPINGS},
        "_meta": {"description": "sepwatch findings lifecycle records (append-only)"},
    }


def pipeline_body() -> dict[str, Any]:
    return {
        "description": "sepwatch: the authenticated user of each lifecycle record",
        "processors": [
            {
                "set_security_user": {
                    "field": "sepwatch.actor",
                    "properties": ["username", "roles", "realm", "authentication_type"],
                }
            }
        ],
    }


def put_lifecycle_template(es: Elasticsearch, index: str) -> None:
    """The records' template; on a secured node also the pipeline stamping the
    authenticated user, set on the index if it exists already (an admin's step)."""
    secured = authenticated(es) is not None
    name = lifecycle_index(index)
    if secured:
        es.ingest.put_pipeline(id=pipeline_name(index), **pipeline_body())
    es.indices.put_index_template(name=name, **template_body(index, secured=secured))
    if not es.indices.exists(index=name):
        # Made here, by the admin, so the analyst role needs no create_index.
        es.indices.create(index=name)
    elif secured:
        es.indices.put_settings(index=name, settings={"index.final_pipeline": pipeline_name(index)})


def records_of(es: Elasticsearch, index: str, finding_id: str) -> list[dict[str, Any]]:
    """A finding's records in order, read in real time (GET, not search): ids
    are `<id>.1`, `<id>.2`, ..., so the next step's number is known exactly."""
    out: list[dict[str, Any]] = []
    batch = 8
    while True:
        ids = [f"{finding_id}.{n}" for n in range(len(out) + 1, len(out) + batch + 1)]
        try:
            docs = es.mget(index=lifecycle_index(index), ids=ids)["docs"]
        except NotFoundError:
            return out
        found = [d["_source"] for d in docs if d.get("found")]
        out.extend(found)
        if len(found) < batch:
            return out
        batch *= 4


def record(
    es: Elasticsearch,
    index: str,
    finding_id: str,
    verb: str,
    *,
    at: datetime,
    reason: str | None = None,
) -> tuple[str, dict[str, Any]]:
    """Add one lifecycle record; its id and the record as stored (with the
    actor the node stamped)."""
    action = ACTIONS[verb]
    actor = authenticated(es)
    secured = actor is not None
    hit = locate(es, index, finding_id)
    source = hit["_source"]
    sw = source.get("sepwatch", {})
    records = records_of(es, index, finding_id)
    current = records[-1]["sepwatch"]["to_status"] if records else sw.get("status")
    if current not in action.allowed_from:
        who = f" by {actor_name(records[-1])}" if records else ""
        raise TransitionRefused(f"{finding_id} is {current}{who}; it cannot {verb}")
    seq = len(records) + 1
    doc: dict[str, Any] = {
        "@timestamp": at.isoformat(),
        "event": {"action": verb, "kind": "event", "dataset": "sepwatch.lifecycle"},
        "rule": {"id": source.get("rule", {}).get("id")},
        "organization": {"name": source.get("organization", {}).get("name")},
        "sepwatch": {
            "finding_id": finding_id,
            "finding_time": source.get("@timestamp"),
            "severity": sw.get("severity"),
            "seq": seq,
            "from_status": current,
            "to_status": action.to,
            # Stamped over by the node's pipeline when it authenticates anyone.
            "actor": {"username": actor["username"]} if actor is not None else os_actor(),
        },
    }
    if reason:
        # Free text: an analyst may paste an identifier into it.
        doc["event"]["reason"] = mask_text(reason)
    seconds = _resolve_seconds(action, sw, records, at)
    if seconds is not None:
        doc["sepwatch"]["resolve_seconds"] = seconds
    record_id = f"{finding_id}.{seq}"
    try:
        # Searchable at once: `findings list` right after shows the new status.
        es.create(index=lifecycle_index(index), id=record_id, document=doc, refresh=True)
    except ConflictError:
        raise TransitionRefused(f"{finding_id} changed meanwhile; look again and retry") from None
    if not secured:
        return record_id, doc  # no pipeline on an open node: stored as sent
    # As stored: with the actor the node's pipeline wrote.
    return record_id, dict(es.get(index=lifecycle_index(index), id=record_id)["_source"])


def publish_copy(settings: Settings, record_id: str, stored: dict[str, Any]) -> None:
    """Copy a stored record to the lifecycle topic, keyed by its finding: the
    evidence `sepwatch evidence verify` checks Elasticsearch against
    (review/evidence.py). Here, below review/, so that the worker's own
    records (streams/retractions.py) are copied as analysts' are."""
    import orjson
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


def _resolve_seconds(
    action: Action, sw: dict[str, Any], records: list[dict[str, Any]], at: datetime
) -> int | None:
    if action.to == "resolved" and sw.get("detected_at"):
        return int((at - datetime.fromisoformat(sw["detected_at"])).total_seconds())
    if action.verb == "reopen" and records and records[-1]["sepwatch"]["to_status"] == "resolved":
        undone = records[-1]["sepwatch"].get("resolve_seconds")
        return int(undone) if undone is not None else None
    return None


def actor_name(rec: dict[str, Any]) -> str:
    actor = rec.get("sepwatch", {}).get("actor", {})
    name = str(actor.get("username", "?"))
    return (
        f"{name} ({UNAUTHENTICATED})"
        if actor.get("authentication_type") == UNAUTHENTICATED
        else name
    )


def latest(es: Elasticsearch, index: str, finding_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The newest record of each finding that has any."""
    if not finding_ids:
        return {}
    try:
        resp = es.search(
            index=lifecycle_index(index),
            query={"terms": {"sepwatch.finding_id": finding_ids}},
            collapse={"field": "sepwatch.finding_id"},
            sort=[{"sepwatch.seq": "desc"}],
            size=len(finding_ids),
            ignore_unavailable=True,
            allow_no_indices=True,
        )
    except NotFoundError:
        return {}
    return {h["_source"]["sepwatch"]["finding_id"]: h["_source"] for h in resp["hits"]["hits"]}


def with_status(
    findings: list[dict[str, Any]], newest: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """Findings (streams.elastic.finding_of) with their derived status and who set it."""
    out = []
    for f in findings:
        rec = newest.get(f["finding_id"])
        if rec is not None:
            f = {
                **f,
                "status": rec["sepwatch"]["to_status"],
                "status_by": actor_name(rec),
                "status_at": rec["@timestamp"],
                "status_reason": rec.get("event", {}).get("reason"),
            }
        out.append(f)
    return out


def status_shift(
    es: Elasticsearch,
    index: str,
    filters: list[dict[str, Any]],
    aggs_by: dict[str, str],
    sub: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The records' aggregations that adjust stored status counts: `to` and
    `from` by status, overall and under each `name: field` in `aggs_by`
    (with `sub` aggregations there too)."""

    def by_status(extra: dict[str, Any] | None = None) -> dict[str, Any]:
        aggs = {
            "to": {"terms": {"field": "sepwatch.to_status", "size": 10}},
            "from": {"terms": {"field": "sepwatch.from_status", "size": 10}},
        }
        return {**aggs, **(extra or {})}

    aggs: dict[str, Any] = by_status(
        {
            name: {"terms": {"field": field, "size": 1000}, "aggs": by_status(sub)}
            for name, field in aggs_by.items()
        }
    )
    try:
        resp = es.search(
            index=lifecycle_index(index),
            query={"bool": {"filter": filters}},
            aggs=aggs,
            size=0,
            ignore_unavailable=True,
            allow_no_indices=True,
        )
    except NotFoundError:
        return {}
    return dict(resp.get("aggregations") or {})


def shifted(counts: dict[str, int], shift: dict[str, Any]) -> dict[str, int]:
    """Stored counts by status, moved by the records' to/from buckets."""
    out = dict(counts)
    for b in shift.get("to", {}).get("buckets", []):
        out[str(b["key"])] = out.get(str(b["key"]), 0) + int(b["doc_count"])
    for b in shift.get("from", {}).get("buckets", []):
        out[str(b["key"])] = out.get(str(b["key"]), 0) - int(b["doc_count"])
    return out


def shifted_under(shift: dict[str, Any], name: str) -> dict[str, dict[str, Any]]:
    """The per-key shift aggregations under `name` (e.g. per rule)."""
    return {str(b["key"]): b for b in shift.get(name, {}).get("buckets", [])}


def search_findings(
    es: Elasticsearch,
    index: str,
    *,
    rule: str | None = None,
    entity: str | None = None,
    status: str | None = None,
    since: datetime | None = None,
    limit: int = 50,
) -> tuple[int, list[dict[str, Any]]]:
    """The newest findings matching every filter, with their derived status,
    and how many match (exact: stored counts shifted by the records)."""
    from streams.elastic import finding_of

    filters: list[dict[str, Any]] = []
    if rule:
        filters.append({"term": {"rule.id": rule}})
    if entity:
        filters.append({"term": {"organization.name": entity}})
    found: list[dict[str, Any]] = []
    after: list[Any] | None = None
    page = limit if status is None else max(1000, limit)
    while len(found) < limit:
        time_filter = (
            [{"range": {"@timestamp": {"gte": since.isoformat()}}}] if since is not None else []
        )
        extra: dict[str, Any] = {"search_after": after} if after else {}
        resp = es.search(
            index=index,
            query={"bool": {"filter": filters + time_filter}},
            sort=[{"@timestamp": "desc"}, {"sepwatch.finding_id": "asc"}],
            size=page,
            ignore_unavailable=True,
            allow_no_indices=True,
            **extra,
        )
        hits = resp["hits"]["hits"]
        batch = [finding_of(h["_source"]) for h in hits]
        batch = with_status(batch, latest(es, index, [f["finding_id"] for f in batch]))
        found.extend(f for f in batch if status is None or f["status"] == status)
        if len(hits) < page:
            break
        after = hits[-1]["sort"]
    return _total(es, index, filters, status, since), found[:limit]


def _total(
    es: Elasticsearch,
    index: str,
    filters: list[dict[str, Any]],
    status: str | None,
    since: datetime | None,
) -> int:
    stored_filters = list(filters)
    record_filters = list(filters)
    if since is not None:
        stored_filters.append({"range": {"@timestamp": {"gte": since.isoformat()}}})
        record_filters.append({"range": {"sepwatch.finding_time": {"gte": since.isoformat()}}})
    if status is not None:
        stored_filters.append({"term": {"sepwatch.status": status}})
    stored = int(
        es.count(
            index=index,
            query={"bool": {"filter": stored_filters}},
            ignore_unavailable=True,
            allow_no_indices=True,
        )["count"]
    )
    if status is None:
        return stored
    return shifted({status: stored}, status_shift(es, index, record_filters, {})).get(status, 0)


def scan_with_status(es: Elasticsearch, index: str) -> Any:
    """Every stored finding with its derived status, in no particular order."""
    from elasticsearch.helpers import scan

    from streams.elastic import finding_of

    batch: list[dict[str, Any]] = []
    for hit in scan(es, index=index, query={"query": {"match_all": {}}}, size=2000):
        batch.append(finding_of(hit["_source"]))
        if len(batch) == 2000:
            yield from with_status(batch, latest(es, index, [f["finding_id"] for f in batch]))
            batch = []
    yield from with_status(batch, latest(es, index, [f["finding_id"] for f in batch]))
