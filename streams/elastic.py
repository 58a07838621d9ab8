"""Findings in Elasticsearch: the Elastic Common Schema document, the index
template, and the monthly indices that hold them.

A finding is stored under its id (so a replay or a restart never makes a
second copy) in the index of the month of its event time,
`<index>-YYYY.MM`, read through the alias `<index>`. ECS names carry what
ECS has a field for; the rest lives under `sepwatch.*`. `event.severity` is
numeric in ECS: the Elastic Security risk scores of the four levels.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
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
                # sha256 of the document's content (review/evidence.py): what
                # `evidence verify` and the report's evidence digest rest on.
                "digest": _KW,
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
                # Written by versions before lifecycle records (streams/lifecycle.py):
                # still read, never written.
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
                        "updated_at": _DATE,
                    }
                },
                # Rule-specific facts, kept as stored JSON: their shape varies by rule.
                "details": {"type": "object", "enabled": False},
            }
        },
    },
}


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
    doc["sepwatch"]["digest"] = content_digest(doc)
    return doc


def content_digest(doc: dict[str, Any]) -> str:
    """sha256 of a finding document's content: canonical JSON (sorted keys)
    without what is not the finding's (when it was stored, the digest itself)."""
    import hashlib

    import orjson

    content = {k: v for k, v in doc.items() if k != "event"}
    content["event"] = {k: v for k, v in doc.get("event", {}).items() if k != "ingested"}
    content["sepwatch"] = {k: v for k, v in doc.get("sepwatch", {}).items() if k != "digest"}
    return hashlib.sha256(orjson.dumps(content, option=orjson.OPT_SORT_KEYS)).hexdigest()


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


def access_index(findings_index: str) -> str:
    """The access tally's index (review/accesses.py): beside the findings
    alias, outside its `<index>-*` template pattern."""
    return f"{findings_index}.accesses"


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


def replicas_for(setting: int | None, data_nodes: int) -> int:
    """SEPWATCH_ES_REPLICAS, or by default one replica of each shard where a
    second data node can hold it (a node lost loses no finding), else none
    (a replica that can never be assigned keeps a single node yellow)."""
    if setting is not None:
        return setting
    return 1 if data_nodes >= 2 else 0


def expired_indices(names: Sequence[str], index: str, today: date, days: int) -> list[str]:
    """Monthly indices whose whole month is older than the retention."""
    cutoff = today - timedelta(days=days)
    out = []
    for name in names:
        suffix = name.removeprefix(f"{index}-")
        try:
            year, month = (int(x) for x in suffix.split("."))
            last_day = (date(year + month // 12, month % 12 + 1, 1)) - timedelta(days=1)
        except ValueError:
            continue  # not one of ours
        if last_day < cutoff:
            out.append(name)
    return sorted(out)


class FindingNotFound(LookupError):
    """No finding with that id in the findings indices."""


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


def finding_entities(es: Elasticsearch, index: str) -> list[str]:
    """Every entity named by a finding (one with no review at all is known to
    the engine, and has its SEP-008 findings, but is on no review record)."""
    resp = es.search(
        index=index,
        size=0,
        aggs={"entities": {"terms": {"field": "organization.name", "size": 10_000}}},
        ignore_unavailable=True,
        allow_no_indices=True,
    )
    return sorted(str(b["key"]) for b in resp["aggregations"]["entities"]["buckets"])


def locate(es: Elasticsearch, index: str, finding_id: str) -> dict[str, Any]:
    resp = es.search(
        index=index,
        query={"ids": {"values": [finding_id]}},
        size=1,
        ignore_unavailable=True,
        allow_no_indices=True,
    )
    hits = resp["hits"]["hits"]
    if not hits:
        raise FindingNotFound(f"no finding {finding_id} in {index}")
    return dict(hits[0])


def get_finding(es: Elasticsearch, index: str, finding_id: str) -> dict[str, Any]:
    return finding_of(locate(es, index, finding_id)["_source"])
