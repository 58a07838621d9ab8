"""The Elasticsearch document, template and sink decisions, without a server."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from schemas import Finding, WaiverRef
from streams.backoff import Backoff
from streams.elastic import (
    MAPPINGS,
    SEVERITY_SCORE,
    connection_options,
    content_digest,
    document,
    expired_indices,
    finding_of,
    index_for,
    template_body,
)
from streams.indices import analyst_role, reader_role, writer_role
from streams.settings import Settings
from streams.sink import bulk_body, settle

KST = timedelta(hours=9)


def _finding(**over: Any) -> Finding:
    base: dict[str, Any] = {
        "finding_id": "SEP-003-0123456789abcdef0123",
        "rule_id": "SEP-003",
        "rule_name": "Unique identification sent to SaaS",
        "severity": "critical",
        "status": "waived",
        "timestamp": datetime(2026, 5, 1, 8, 30, tzinfo=UTC) - KST,  # 2026-05-01 08:30 KST
        "detected_at": datetime(2026, 5, 1, 0, 0, 5, tzinfo=UTC),
        "entity": "BR-SEOUL-GN",
        "user_id": "u-gn-0007",
        "device_id": "lt-gn-0007",
        "saas_app": "m365-onedrive",
        "evidence_event_ids": ["dlp-1", "acc-1"],
        "summary": "u-gn-0007 uploaded a file with an RRN (900101-1******) to m365-onedrive.",
        "regulation": "detailed rules rev. 2026-04-20",
        "waiver": WaiverRef(id="W-7", approved_by="CISO", reason="pilot", valid_until="2026-06-30"),
        "details": {"data_types": ["kr_rrn"], "snippet": "900101-1******", "nested": {"a": 1}},
    }
    return Finding(**{**base, **over})


def _leaves(doc: dict[str, Any], prefix: str = "") -> set[str]:
    out: set[str] = set()
    for key, value in doc.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and path != "sepwatch.details":
            out |= _leaves(value, path + ".")
        else:
            out.add(path)
    return out


def _mapped(props: dict[str, Any], prefix: str = "") -> set[str]:
    out: set[str] = set()
    for key, spec in props.items():
        path = f"{prefix}{key}"
        if "properties" in spec:
            out |= _mapped(spec["properties"], path + ".")
        else:
            out.add(path)
    return out


def test_every_field_of_a_document_is_declared_in_the_template() -> None:
    # The mapping is strict: an undeclared field would make ES refuse the document.
    leaves = _leaves(document(_finding(), ingested=datetime(2026, 5, 1, tzinfo=UTC)))
    assert leaves <= _mapped(MAPPINGS["properties"])
    for name in ("@timestamp", "rule.id", "rule.name", "event.kind", "event.severity"):
        assert name in leaves
    assert {"user.id", "host.id", "organization.name"} <= leaves


def test_document_speaks_ecs() -> None:
    doc = document(_finding())
    assert doc["event"]["kind"] == "alert"
    assert doc["event"]["severity"] == SEVERITY_SCORE["critical"] == 99
    assert doc["rule"]["id"] == "SEP-003"
    assert doc["user"]["id"] == "u-gn-0007"
    assert doc["host"]["id"] == "lt-gn-0007"
    assert doc["organization"]["name"] == "BR-SEOUL-GN"
    assert doc["sepwatch"]["status"] == "waived"
    assert doc["sepwatch"]["waiver"]["approved_by"] == "CISO"
    assert MAPPINGS["properties"]["event"]["properties"]["severity"]["type"] == "long"


def test_a_finding_without_user_or_device_has_no_empty_ecs_groups() -> None:
    doc = document(_finding(user_id=None, device_id=None, saas_app=None, waiver=None))
    assert "user" not in doc and "host" not in doc
    assert doc["related"] == {"user": [], "hosts": []}
    assert "waiver" not in doc["sepwatch"]


def test_severity_scores_rise_with_severity() -> None:
    scores = [SEVERITY_SCORE[s] for s in ("low", "medium", "high", "critical")]
    assert scores == sorted(scores) and len(set(scores)) == 4


def test_a_finding_lives_in_the_month_of_its_utc_event_time() -> None:
    # 2026-05-01 08:30 KST is 2026-04-30 23:30 UTC: April's index.
    assert index_for(_finding().timestamp, "x") == "x-2026.04"
    assert index_for(datetime(2026, 12, 31, 23, 59, tzinfo=UTC), "x") == "x-2026.12"


def test_template_covers_the_monthly_indices_and_aliases_them() -> None:
    body = template_body("sepwatch-findings")
    assert body["index_patterns"] == ["sepwatch-findings-*"]
    assert "sepwatch-findings" in body["template"]["aliases"]
    assert body["template"]["mappings"]["dynamic"] == "strict"


def test_a_stored_finding_reads_back_as_the_finding() -> None:
    f = _finding()
    back = finding_of(document(f))
    want = f.model_dump(mode="json")
    for key in want:
        if key in ("timestamp", "detected_at"):
            assert datetime.fromisoformat(back[key]) == getattr(f, key)
        else:
            assert back[key] == want[key], key


def test_bulk_body_creates_by_finding_id() -> None:
    actions = [{"_index": "i-2026.04", "_id": "A", "_source": {"a": 1}}]
    lines = bulk_body(actions).split(b"\n")
    assert [json.loads(x) for x in lines[:2]] == [
        {"create": {"_index": "i-2026.04", "_id": "A"}},
        {"a": 1},
    ]
    assert lines[2] == b""  # NDJSON ends with a newline


def test_settle_sorts_every_item_of_a_bulk_response() -> None:
    actions = [{"_index": "i", "_id": k, "_source": {}} for k in "ABCDE"]
    items = [
        {"create": {"status": 201}},
        {"create": {"status": 409, "error": {"type": "version_conflict_engine_exception"}}},
        {"create": {"status": 429, "error": {"type": "es_rejected_execution_exception"}}},
        {
            "create": {
                "status": 400,
                "error": {"type": "document_parsing_exception", "reason": "x 900101-1234567"},
            }
        },
        {"create": {"status": 503}},
    ]
    out = settle(actions, {"items": items, "errors": True})
    assert (out.created, out.present) == (1, 1)
    assert [a["_id"] for a in out.retry] == ["C", "E"]
    assert [(a["_id"], r.split(":")[0]) for a, r in out.rejected] == [
        ("D", "document_parsing_exception")
    ]
    assert "1234567" not in out.rejected[0][1]  # reasons are masked


def test_settle_refuses_a_response_of_another_length() -> None:
    with pytest.raises(ValueError):
        settle([{"_index": "i", "_id": "A", "_source": {}}], {"items": []})


def test_only_months_wholly_past_the_retention_expire() -> None:
    names = ["f-2025.01", "f-2025.10", "f-2025.11", "f-2026.11", "f-other", "f-2025.13x"]
    # 2026-11-26 less 395 days is 2025-10-27: October 2025 still has days inside.
    assert expired_indices(names, "f", date(2026, 11, 26), 395) == ["f-2025.01"]
    assert expired_indices(names, "f", date(2026, 11, 26), 30) == [
        "f-2025.01",
        "f-2025.10",
        "f-2025.11",
    ]


def test_backoff_grows_to_its_cap_and_starts_again_after_a_success() -> None:
    b = Backoff(first=0.5, cap=4.0)
    delays = [b.next_delay() for _ in range(8)]
    assert all(0.25 <= d <= 4.0 for d in delays)
    assert max(delays[5:]) > 2.0 - 1e-9 and min(delays[5:]) >= 2.0  # capped at 4, jitter >= half
    b.reset()
    assert b.next_delay() <= 0.5


def test_a_plain_node_needs_no_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SEPWATCH_CONFIG", str(tmp_path / "none.toml"))
    for name in ("API_KEY", "USERNAME", "PASSWORD", "CA_FILE"):
        monkeypatch.delenv(f"SEPWATCH_ES_{name}", raising=False)
    assert connection_options(Settings(es_url="http://127.0.0.1:9200")) == {}


def test_credentials_and_ca_come_from_the_environment_and_stay_secret(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SEPWATCH_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.setenv("SEPWATCH_ES_USERNAME", "sepwatch-writer")
    monkeypatch.setenv("SEPWATCH_ES_PASSWORD", "pw-from-env")
    monkeypatch.setenv("SEPWATCH_ES_CA_FILE", "/etc/sepwatch/ca.crt")
    settings = Settings()
    assert connection_options(settings) == {
        "basic_auth": ("sepwatch-writer", "pw-from-env"),
        "ca_certs": "/etc/sepwatch/ca.crt",
    }
    assert "pw-from-env" not in repr(settings) and "pw-from-env" not in str(settings)
    # An API key, when given, is used instead of the user.
    monkeypatch.setenv("SEPWATCH_ES_API_KEY", "a2V5LWlkOmtleQ==")
    options = connection_options(Settings())
    assert options["api_key"] == "a2V5LWlkOmtleQ==" and "basic_auth" not in options
    assert "a2V5LWlkOmtleQ==" not in repr(Settings())


def test_a_password_in_the_url_is_refused() -> None:
    with pytest.raises(ValidationError, match="no password in es_url"):
        Settings(es_url="https://writer:secret@127.0.0.1:9200")


def test_the_writer_may_only_create_findings_in_the_findings_indices() -> None:
    role = writer_role("sepwatch-findings")
    assert role["cluster"] == []
    grant, records = role["indices"]
    assert grant["names"] == ["sepwatch-findings", "sepwatch-findings-*"]
    # create_doc, never index/write/delete: a stored finding is never overwritten or removed.
    # Read: a vendor's DLP retraction finds the findings of its match (streams/retractions.py).
    assert set(grant["privileges"]) == {"create_doc", "auto_configure", "read"}
    # And adds lifecycle records to them, never changing one.
    assert records["names"] == ["sepwatch-findings.lifecycle"]
    assert set(records["privileges"]) == {"read", "create_doc"}
    analyst = analyst_role("sepwatch-findings")
    assert analyst["cluster"] == []
    findings, lifecycle = analyst["indices"]
    assert findings["names"] == [
        "sepwatch-findings",
        "sepwatch-findings-*",
        "sepwatch-findings.accesses",
    ]
    assert set(findings["privileges"]) == {"read", "view_index_metadata"}
    # Lifecycle records: added, never changed (no index/write/delete).
    assert lifecycle["names"] == ["sepwatch-findings.lifecycle"]
    assert set(lifecycle["privileges"]) == {"read", "view_index_metadata", "create_doc"}


def test_the_content_digest_ignores_when_it_was_stored_and_sees_any_change() -> None:
    doc = document(_finding())
    stored = document(_finding(), ingested=datetime(2026, 12, 1, tzinfo=UTC))
    assert doc["sepwatch"]["digest"] == stored["sepwatch"]["digest"] == content_digest(stored)
    changed = {**stored, "message": stored["message"] + "."}
    assert content_digest(changed) != stored["sepwatch"]["digest"]


def test_the_roles_command_prints_a_roles_file() -> None:
    from typer.testing import CliRunner

    from cli.main import app

    result = CliRunner().invoke(app, ["elasticsearch", "roles", "--index", "f"])
    assert result.exit_code == 0, result.output
    roles = yaml.safe_load(result.stdout)
    assert roles == {
        "sepwatch_findings_writer": writer_role("f"),
        "sepwatch_findings_analyst": analyst_role("f"),
        "sepwatch_findings_reader": reader_role("f"),
    }
    # The console's read-only person: reads findings and their records, adds none.
    (grant,) = reader_role("f")["indices"]
    assert set(grant["privileges"]) == {"read", "view_index_metadata"}
    assert "f.lifecycle" in grant["names"]


def test_a_settled_batch_commits_only_the_partitions_still_owned() -> None:
    """A rebalance between reading a batch and settling it took partition 2:
    committing it raised IllegalStateError and stopped the whole worker (seen
    in the two-worker benchmark). Its new owner writes those findings again."""
    import asyncio

    from aiokafka import TopicPartition

    from streams.sink import FindingsSink, InFlight

    kept, taken = TopicPartition("f", 0), TopicPartition("f", 2)
    committed: list[dict[Any, int]] = []

    class Consumer:
        def assignment(self) -> set[TopicPartition]:
            return {kept}

        async def commit(self, offsets: dict[Any, int]) -> None:
            if set(offsets) - self.assignment():
                raise AssertionError("committed a partition not assigned")
            committed.append(offsets)

    async def finish() -> bool:
        sink = FindingsSink(Settings(), es=object())  # type: ignore[arg-type]
        sink._consumer = Consumer()  # type: ignore[assignment]

        async def settled() -> bool:
            return True

        batch = InFlight(asyncio.create_task(settled()), {kept: 10, taken: 7})
        return await sink._finish(batch)

    assert asyncio.run(finish()) is True
    assert committed == [{kept: 10}]
