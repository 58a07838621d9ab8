"""Findings in Elasticsearch: the Elastic Common Schema document, the index
template, and the monthly indices that hold them.

A finding is stored under its id (so a replay or a restart never makes a
second copy) in the index of the month of its event time,
`<index>-YYYY.MM`, read through the alias `<index>`. ECS names carry what
ECS has a field for; the rest lives under `sepwatch.*`. `event.severity` is
numeric in ECS: the Elastic Security risk scores of the four levels.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from elasticsearch import AsyncElasticsearch, Elasticsearch
from elasticsearch.serializer import OrjsonSerializer

from schemas import Finding

if TYPE_CHECKING:
    from streams.settings import Settings

ECS_VERSION = "8.11.0"
SEVERITY_SCORE = {"low": 21, "medium": 47, "high": 73, "critical": 99}
STATUSES = ("open", "acknowledged", "resolved", "waived")

_KW = {"type": "keyword", "ignore_above": 1024}
_DATE = {"type": "date"}

MAPPINGS: dict[str, Any] = {
    # A field the template does not declare is refused, not guessed: a
    # document that does not fit goes to the dead letters with ES's reason.
    "dynamic": "strict",
    "properties": {
        "@timestamp": _DATE,
        "message": {"type": "text"},
        "ecs": {"properties": {"version": _KW}},
        "event": {
            "properties": {
                "id": _KW,
                "kind": _KW,
                "category": _KW,
                "type": _KW,
                "module": _KW,
                "dataset": _KW,
                "severity": {"type": "long"},
                "created": _DATE,
                "ingested": _DATE,
                "reference": _KW,
            }
        },
        "rule": {
            "properties": {
                "id": _KW,
                "name": _KW,
                "ruleset": _KW,
                "reference": _KW,
                "description": {"type": "text"},
            }
        },
        "user": {"properties": {"id": _KW}},
        "host": {"properties": {"id": _KW}},
        "organization": {"properties": {"name": _KW}},
        "related": {"properties": {"user": _KW, "hosts": _KW}},
        "sepwatch": {
            "properties": {
                "finding_id": _KW,
                "severity": _KW,
                "status": _KW,
                "saas_app": _KW,
                "evidence_event_ids": _KW,
                "detected_at": _DATE,
                "regulation": {"type": "text"},
                "waiver": {
                    "properties": {
                        "id": _KW,
                        "approved_by": _KW,
                        "reason": {"type": "text"},
                        "valid_until": _DATE,
                    }
                },
                "lifecycle": {
                    "properties": {
                        "acknowledged_by": _KW,
                        "acknowledged_at": _DATE,
                        "resolved_by": _KW,
                        "resolved_at": _DATE,
                        # detected_at to resolved_at, set on resolving: the report's
                        # time to resolve is then an aggregation, with no script.
                        "resolve_seconds": {"type": "long"},
                        "note": {"type": "text"},
                        "reopened_by": _KW,
                        "reopened_at": _DATE,
                        "updated_at": _DATE,
                    }
                },
                # Rule-specific facts, kept as stored JSON: their shape varies by rule.
                "details": {"type": "object", "enabled": False},
            }
        },
    },
}


MAPPINGS_LIFECYCLE = MAPPINGS["properties"]["sepwatch"]["properties"]["lifecycle"]


def index_for(finding_time: datetime, index: str) -> str:
    """The monthly index a finding lives in, by its event time (UTC)."""
    t = finding_time.astimezone(UTC)
    return f"{index}-{t.year:04d}.{t.month:02d}"


def template_body(index: str, *, shards: int = 1, replicas: int = 0) -> dict[str, Any]:
    return {
        "index_patterns": [f"{index}-*"],
        "priority": 200,
        "template": {
            "settings": {"number_of_shards": shards, "number_of_replicas": replicas},
            "mappings": MAPPINGS,
            "aliases": {index: {}},
        },
        "_meta": {"description": "sepwatch findings (ECS)", "ecs_version": ECS_VERSION},
    }


def document(finding: Finding, *, ingested: datetime | None = None) -> dict[str, Any]:
    """The ECS document of a finding (already masked by the engine)."""
    waiver = finding.waiver
    related_users = [finding.user_id] if finding.user_id else []
    related_hosts = [finding.device_id] if finding.device_id else []
    doc: dict[str, Any] = {
        "@timestamp": finding.timestamp.isoformat(),
        "message": finding.summary,
        "ecs": {"version": ECS_VERSION},
        "event": {
            "id": finding.finding_id,
            "kind": "alert",
            "category": ["configuration"],
            "type": ["info"],
            "module": "sepwatch",
            "dataset": "sepwatch.findings",
            "severity": SEVERITY_SCORE[finding.severity],
            "created": finding.detected_at.isoformat(),
        },
        "rule": {
            "id": finding.rule_id,
            "name": finding.rule_name,
            "ruleset": "sepwatch",
            "description": finding.regulation,
        },
        "organization": {"name": finding.entity},
        "related": {"user": related_users, "hosts": related_hosts},
        "sepwatch": {
            "finding_id": finding.finding_id,
            "severity": finding.severity,
            "status": finding.status,
            "evidence_event_ids": finding.evidence_event_ids,
            "detected_at": finding.detected_at.isoformat(),
            "regulation": finding.regulation,
            "details": finding.details,
        },
    }
    if ingested is not None:
        doc["event"]["ingested"] = ingested.isoformat()
    if finding.user_id:
        doc["user"] = {"id": finding.user_id}
    if finding.device_id:
        doc["host"] = {"id": finding.device_id}
    if finding.saas_app:
        doc["sepwatch"]["saas_app"] = finding.saas_app
    if waiver is not None:
        doc["sepwatch"]["waiver"] = waiver.model_dump()
    return doc


def connection_options(settings: Settings) -> dict[str, Any]:
    """The client's credentials and CA from the settings (none: a plain node)."""
    options: dict[str, Any] = {}
    if settings.es_api_key is not None:
        options["api_key"] = settings.es_api_key.get_secret_value()
    elif settings.es_username:
        password = settings.es_password.get_secret_value() if settings.es_password else ""
        options["basic_auth"] = (settings.es_username, password)
    if settings.es_ca_file is not None:
        options["ca_certs"] = str(settings.es_ca_file)
    return options


def writer_role(index: str) -> dict[str, Any]:
    """What the worker's sink needs, and no more: create findings (never
    overwrite one), create the month's index (the template, installed by an
    admin, gives it its mapping and the alias), list the months and delete
    expired ones. No cluster privilege: it cannot change templates or roles."""
    return {
        "cluster": [],
        "indices": [
            {
                "names": [index, f"{index}-*"],
                "privileges": ["create_doc", "create_index", "view_index_metadata", "delete_index"],
            }
        ],
    }


def analyst_role(index: str) -> dict[str, Any]:
    """What `findings list/show/ack/resolve/export` and `report` need: read,
    update a finding's lifecycle, and add a new lifecycle field to an older
    month's mapping. No delete, no create."""
    return {
        "cluster": [],
        "indices": [
            {
                "names": [index, f"{index}-*"],
                "privileges": [
                    "read",
                    "view_index_metadata",
                    "index",
                    "indices:admin/mapping/put",
                ],
            }
        ],
    }


def reader_role(index: str) -> dict[str, Any]:
    """Read the findings, change nothing (the console shows such a person no
    triage buttons, and Elasticsearch refuses their writes anyway)."""
    return {
        "cluster": [],
        "indices": [
            {"names": [index, f"{index}-*"], "privileges": ["read", "view_index_metadata"]}
        ],
    }


def client(url: str, **kwargs: Any) -> Elasticsearch:
    return Elasticsearch(
        url,
        request_timeout=kwargs.pop("request_timeout", 30),
        serializer=OrjsonSerializer(),
        **kwargs,
    )


def async_client(url: str, **kwargs: Any) -> AsyncElasticsearch:
    # orjson: a bulk response of a thousand items parses in a fifth of the time.
    return AsyncElasticsearch(
        url,
        request_timeout=kwargs.pop("request_timeout", 30),
        serializer=OrjsonSerializer(),
        **kwargs,
    )


def put_template(es: Elasticsearch, index: str) -> None:
    es.indices.put_index_template(name=index, **template_body(index))


class FindingNotFound(LookupError):
    """No finding with that id in the findings indices."""


class TransitionRefused(ValueError):
    """The finding's lifecycle does not allow that step (or it changed meanwhile)."""


# Which statuses each analyst action may start from.
TRANSITIONS = {
    "acknowledged": ("open",),
    "resolved": ("open", "acknowledged"),
    "open": ("acknowledged", "resolved"),  # reopened: the fix did not hold
}
VERBS = {"acknowledged": "acknowledged", "resolved": "resolved", "open": "reopened"}


def finding_of(source: dict[str, Any]) -> dict[str, Any]:
    """A stored document back in the findings' own shape, lifecycle included."""
    sw = source.get("sepwatch", {})
    out: dict[str, Any] = {
        "finding_id": sw.get("finding_id"),
        "rule_id": source.get("rule", {}).get("id"),
        "rule_name": source.get("rule", {}).get("name"),
        "severity": sw.get("severity"),
        "status": sw.get("status"),
        "timestamp": source.get("@timestamp"),
        "detected_at": sw.get("detected_at"),
        "entity": source.get("organization", {}).get("name"),
        "user_id": source.get("user", {}).get("id"),
        "device_id": source.get("host", {}).get("id"),
        "saas_app": sw.get("saas_app"),
        "evidence_event_ids": sw.get("evidence_event_ids", []),
        "summary": source.get("message"),
        "regulation": sw.get("regulation"),
        "waiver": sw.get("waiver"),
        "details": sw.get("details", {}),
    }
    if sw.get("lifecycle"):
        out["lifecycle"] = sw["lifecycle"]
    return out


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
    """The newest findings matching every filter given, and how many match."""
    filters: list[dict[str, Any]] = []
    if rule:
        filters.append({"term": {"rule.id": rule}})
    if entity:
        filters.append({"term": {"organization.name": entity}})
    if status:
        filters.append({"term": {"sepwatch.status": status}})
    if since:
        filters.append({"range": {"@timestamp": {"gte": since.isoformat()}}})
    resp = es.search(
        index=index,
        query={"bool": {"filter": filters}},
        sort=[{"@timestamp": "desc"}, {"sepwatch.finding_id": "asc"}],
        size=limit,
        track_total_hits=True,
        ignore_unavailable=True,
        allow_no_indices=True,
    )
    hits = resp["hits"]
    return int(hits["total"]["value"]), [finding_of(h["_source"]) for h in hits["hits"]]


def _locate(es: Elasticsearch, index: str, finding_id: str) -> dict[str, Any]:
    resp = es.search(
        index=index,
        query={"ids": {"values": [finding_id]}},
        size=1,
        seq_no_primary_term=True,
        ignore_unavailable=True,
        allow_no_indices=True,
    )
    hits = resp["hits"]["hits"]
    if not hits:
        raise FindingNotFound(f"no finding {finding_id} in {index}")
    return dict(hits[0])


def get_finding(es: Elasticsearch, index: str, finding_id: str) -> dict[str, Any]:
    return finding_of(_locate(es, index, finding_id)["_source"])


def transition(
    es: Elasticsearch,
    index: str,
    finding_id: str,
    to: str,
    *,
    by: str,
    at: datetime,
    note: str | None = None,
) -> dict[str, Any]:
    """Acknowledge, resolve or reopen a finding, guarded by its sequence
    number, so two analysts acting at once cannot overwrite each other. The
    CLI's `findings ack/resolve` and the console's buttons both come here."""
    from elasticsearch import ConflictError

    from detectors.masking import mask_text

    hit = _locate(es, index, finding_id)
    sw = hit["_source"].get("sepwatch", {})
    current = sw.get("status")
    if current not in TRANSITIONS[to]:
        life = sw.get("lifecycle", {})
        who = life.get("resolved_by") or life.get("acknowledged_by")
        since = f" by {who}" if who else ""
        raise TransitionRefused(f"{finding_id} is {current}{since}; it cannot become {to}")
    life = dict(sw.get("lifecycle", {}))
    verb = VERBS[to]
    life[f"{verb}_by"] = by
    life[f"{verb}_at"] = at.isoformat()
    life["updated_at"] = at.isoformat()
    if note:
        # A note is free text: an analyst may paste an identifier into it.
        life["note"] = mask_text(note)
    if to == "resolved" and sw.get("detected_at"):
        detected = datetime.fromisoformat(sw["detected_at"])
        life["resolve_seconds"] = int((at - detected).total_seconds())
    if to != "acknowledged":
        # An index made before the field was in the template learns it here.
        es.indices.put_mapping(
            index=hit["_index"],
            properties={"sepwatch": {"properties": {"lifecycle": MAPPINGS_LIFECYCLE}}},
        )
    try:
        es.update(
            index=hit["_index"],
            id=finding_id,
            doc={"sepwatch": {"status": to, "lifecycle": life}},
            if_seq_no=hit["_seq_no"],
            if_primary_term=hit["_primary_term"],
            refresh="wait_for",
        )
    except ConflictError:
        raise TransitionRefused(f"{finding_id} changed meanwhile; look again and retry") from None
    return get_finding(es, index, finding_id)


def scan_findings(es: Elasticsearch, index: str) -> Iterator[dict[str, Any]]:
    """Every stored finding, in no particular order (scroll through all)."""
    from elasticsearch.helpers import scan

    for hit in scan(es, index=index, query={"query": {"match_all": {}}}, size=2000):
        yield finding_of(hit["_source"])
