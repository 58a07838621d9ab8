"""A vendor's undo of a DLP match resolves the match's finding (issue 14,
problem 2): raw M365 records through a real worker, broker and Elasticsearch.
The finding stays as it was stored; a `resolve` record by the worker's own
Elasticsearch identity says why. Undos that match no finding resolve nothing
and are counted."""

from __future__ import annotations

import getpass
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from elasticsearch import Elasticsearch

from bench.harness import wait_for
from streams.elastic import content_digest
from streams.kafka_io import read_topics
from streams.lifecycle import records_of
from tests.adapters.conftest import VENDORS
from tests.integration.conftest import AdapterWorker

pytestmark = pytest.mark.integration
MATCH = "1c2d3e4f-5a6b-4c7d-8e9f-a0b1c2d3e4f5"
UNDO = "4f5a6b7c-8d9e-4fa0-b1c2-d3e4f5a6b7c8:undo"


def _records_now() -> list[bytes]:
    """The look-alikes (a OneDrive match, an undo of another rule, an undo of
    another document, the match's undo), stamped now so the rules judge them live."""
    records = json.loads((VENDORS / "m365-dlp-undo-lookalike.json").read_text())
    start = datetime.now(UTC).replace(tzinfo=None, microsecond=0) - timedelta(minutes=5)
    for n, record in enumerate(records):
        record["CreationTime"] = (start + timedelta(seconds=30 * n)).isoformat()
    return [json.dumps(r).encode() for r in records]


def test_an_undo_resolves_the_finding_of_its_match_and_nothing_else(
    broker: str, elasticsearch: str, prefix: str, adapter_worker: Callable[..., AdapterWorker]
) -> None:
    index = f"{prefix.rstrip('.')}-findings"
    # A short hold: the undos that match nothing are counted within the test.
    w = adapter_worker(es_url=elasticsearch, env={"SEPWATCH_DLP_RETRACTION_HOLD_S": "15"})
    topics, worker = w.topics, w.worker
    es = Elasticsearch(elasticsearch, request_timeout=30)
    try:
        # All four at once, as one content blob delivers them: the undo may
        # well be read before its finding is stored, and is held until it is.
        for value in _records_now():
            w.raw.send(topics.raw("m365"), value, key=b"jiwoo.kim@bank.example")
        w.raw.flush()

        def finding() -> dict[str, object] | None:
            es.indices.refresh(index=f"{index}*", ignore_unavailable=True, allow_no_indices=True)
            hits = es.search(
                index=index, query={"term": {"rule.id": "SEP-003"}}, ignore_unavailable=True
            )["hits"]["hits"]
            return hits[0]["_source"] if hits else None

        assert wait_for(lambda: finding() is not None, 90), worker.log.read_text()[-3000:]
        stored = finding()
        assert stored is not None
        sw = stored["sepwatch"]
        assert isinstance(sw, dict)
        assert sw["evidence_event_ids"] == [MATCH]
        finding_id = str(sw["finding_id"])

        def resolved() -> list[dict[str, object]]:
            return records_of(es, index, finding_id)

        assert wait_for(lambda: bool(resolved()), 90), worker.log.read_text()[-3000:]

        def counted() -> dict[str, float]:
            series = w.series("sepwatch_dlp_retractions_total")
            return {k.split('"')[1]: v for k, v in series.items()}

        # The other rule's undo and the other document's: nothing to resolve,
        # counted once their hold ends; the match's undo resolved its finding.
        want = {"resolved": 1.0, "already_settled": 0.0, "matched_nothing": 2.0}
        assert wait_for(lambda: counted() == want, 90), (counted(), worker.log.read_text())
        [record] = resolved()  # one record: the other undos added none
        assert record["event"]["action"] == "resolve"  # type: ignore[index]
        reason = str(record["event"]["reason"])  # type: ignore[index]
        assert reason == (
            f"vendor retracted the DLP match: DlpRuleUndo {UNDO} (OneDrive): FalsePositive: "
            "Test numbers, not customers' (RRN 900101-1****** was a sample)"
        )
        lifecycle = record["sepwatch"]
        assert isinstance(lifecycle, dict)
        assert (lifecycle["from_status"], lifecycle["to_status"]) == ("open", "resolved")
        # The worker's own identity: on this node without security, its OS
        # user, said to be unproven (streams/lifecycle.py); a secured node
        # stamps the worker's API key's user.
        assert lifecycle["actor"] == {
            "username": getpass.getuser(),
            "authentication_type": "unauthenticated",
        }
        # The finding itself is as it was stored.
        again = finding()
        assert again == stored and again is not None
        assert again["sepwatch"]["status"] == "open"  # type: ignore[index]
        assert content_digest(again) == again["sepwatch"]["digest"]  # type: ignore[index]
        # Copied to the lifecycle topic, the evidence `sepwatch evidence verify` reads.
        copies = [json.loads(r.value) for r in read_topics(broker, [topics.lifecycle])]
        assert [c["record_id"] for c in copies] == [f"{finding_id}.1"]
    finally:
        worker.stop()  # before its indices go: its sink would make them again
        es.options(ignore_status=404).indices.delete(index=f"{index}-*,{index}.lifecycle")
        es.close()
