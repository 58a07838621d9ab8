"""A stored finding judged against the findings topic (review.evidence), one
document at a time: what is altered, and what was only written before
digests (tests/integration/test_secure_elasticsearch.py runs `evidence
verify` on a secured node)."""

from __future__ import annotations

from typing import Any

from review.evidence import _finding_problem, topic_findings
from review.period import Period
from schemas import Finding
from streams.elastic import document
from tests.integration.test_elasticsearch import _finding

FID = "SEP-001-evidence-1"
RAW = _finding(FID, timestamp="2026-08-03T01:00:00+00:00", detected_at="2026-08-03T01:00:02+00:00")


def _on_topic() -> Any:
    value = Finding.model_validate(RAW).model_dump_json().encode()
    return topic_findings([value], Period.parse("2026H2"))[FID]


def _stored() -> dict[str, Any]:
    return document(Finding.model_validate(RAW))


def _before_digests(acknowledged: bool) -> dict[str, Any]:
    """The document as versions before digests left it (streams/elastic.py at
    8bd05ca^: no digest; `transition` set status and lifecycle in place)."""
    doc = _stored()
    del doc["sepwatch"]["digest"]
    if acknowledged:
        doc["sepwatch"]["status"] = "acknowledged"
        doc["sepwatch"]["lifecycle"] = {
            "acknowledged_by": "kim",
            "acknowledged_at": "2026-08-04T00:00:00+00:00",
            "updated_at": "2026-08-04T00:00:00+00:00",
        }
    return doc


def test_a_document_as_stored_passes() -> None:
    assert _finding_problem(FID, _stored(), "m", _on_topic()) is None


def test_documents_written_before_digests_are_not_altered() -> None:
    for acknowledged in (False, True):
        assert _finding_problem(FID, _before_digests(acknowledged), "m", _on_topic()) is None


def test_a_document_before_digests_edited_beyond_its_status_is_altered() -> None:
    doc = _before_digests(acknowledged=True)
    doc["user"]["id"] = "u-2"
    problem = _finding_problem(FID, doc, "m", _on_topic())
    assert problem is not None and "altered" in problem and "written before digests" in problem


def test_a_status_changed_in_place_on_a_document_with_a_digest_is_altered() -> None:
    doc = _stored()
    doc["sepwatch"]["status"] = "resolved"
    problem = _finding_problem(FID, doc, "m", _on_topic())
    assert problem == f"finding {FID}: altered in Elasticsearch (m): content digest differs"


def test_a_rewritten_stored_digest_is_caught() -> None:
    doc = _stored()
    doc["sepwatch"]["digest"] = "0" * 64
    assert _finding_problem(FID, doc, "m", _on_topic()) == (
        f"finding {FID}: its stored digest was altered (m)"
    )
