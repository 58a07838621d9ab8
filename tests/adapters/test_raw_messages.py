"""One message of a raw topic through `adapt_message`, as the worker's adapter agent does."""

from __future__ import annotations

import json

from adapters import ADAPTERS
from adapters.intake import MAX_RECORD_BYTES, adapt_message
from adapters.mapping import VendorMapping
from tests.adapters.conftest import VENDORS

WHERE = {"topic": "t.raw.x", "partition": 0, "offset": 7}


def test_a_page_in_one_message_is_unwrapped_record_by_record(mapping: VendorMapping) -> None:
    page = (VENDORS / "entra-signin-eventhub.json").read_bytes()
    outcome = adapt_message(ADAPTERS["entra-signin"], page, mapping, WHERE)
    assert [e["event_id"] for e in outcome.events] == ["99bd87be-9634-4bb8-eb95-228da8ce3400"]
    assert outcome.skipped == ["category AuditLogs"]
    assert not outcome.dead_letters


def test_a_single_record_and_an_unmappable_one(mapping: VendorMapping) -> None:
    records = json.loads((VENDORS / "okta-logs-page.json").read_text())
    good = adapt_message(ADAPTERS["okta"], json.dumps(records[0]).encode(), mapping, WHERE)
    assert [(e["stream"], e.get("saas_app")) for e in good.events] == [
        ("saas_access", "m365-sharepoint"),
        ("device_posture", None),  # the Okta device assurance the sign-on carries
    ]
    bad = adapt_message(ADAPTERS["okta"], json.dumps(records[6]).encode(), mapping, WHERE)
    [letter] = bad.dead_letters
    assert (letter["source"], letter["field"], letter["offset"]) == ("okta", "client.ipAddress", 7)
    assert "record" not in letter  # one record: no position within the message


def test_not_json_too_large_and_text_sources(mapping: VendorMapping) -> None:
    rrn = b"900101-1234568"
    [letter] = adapt_message(ADAPTERS["m365"], b"{oops " + rrn, mapping, WHERE).dead_letters
    assert letter["reason"] == "m365: (record): not JSON"
    assert b"1234568" not in json.dumps(letter).encode()
    huge = b'{"pad": "' + b"x" * MAX_RECORD_BYTES + b'"}'
    [letter] = adapt_message(ADAPTERS["m365"], huge, mapping, WHERE).dead_letters
    assert "over the limit" in letter["reason"] and letter["raw_truncated"]
    line = (VENDORS / "cef-dlp.log").read_bytes().splitlines()[0]
    [alert] = adapt_message(ADAPTERS["cef-dlp"], line, mapping, WHERE).events
    assert alert["event_id"] == "cef-dlp:PI-2026-000123"
    assert adapt_message(ADAPTERS["okta"], b"[1, 2]", mapping, WHERE).dead_letters[1]["record"] == 1
