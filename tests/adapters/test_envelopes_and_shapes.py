"""Shipper envelopes unwrapped on every source; a record of no shape the
source knows (a misrouted feed, say) dead-lettered, never skipped."""

from __future__ import annotations

import json

from adapters import ADAPTERS
from adapters.intake import MAX_SKIP_KINDS, SkipLabels, adapt_message
from adapters.mapping import VendorMapping
from tests.adapters.conftest import VENDORS, adapt_file

WHERE = {"topic": "t.raw.x", "partition": 0, "offset": 3}
ONEDRIVE = "a21f13b9-22b6-405b-bf9e-a07ad8d456da"
SENT_MAIL = "d5a0e7d9-e06f-498c-8413-eb83b7dbd516"


def test_every_shipper_envelope_gives_the_record_inside(mapping: VendorMapping) -> None:
    run = adapt_file("m365", "m365-shipped-lookalike.jsonl", mapping)
    # Filebeat, Elastic Agent, Fluent Bit, Splunk HEC, and two in an Event Hubs batch.
    assert [e["event_id"] for e in run.events] == [
        ONEDRIVE,
        "eb8259c8-d2c2-449d-bd35-5c8a033eb629",
        SENT_MAIL,
        f"{SENT_MAIL}:undo",  # Vector's `message`: the undo, a retraction
        ONEDRIVE,
        "eb8259c8-d2c2-449d-bd35-5c8a033eb629",
        SENT_MAIL,
    ]
    assert not run.counts.skipped
    # The Okta record a Filebeat envelope carried to the m365 topic.
    [letter] = run.dead
    assert letter["reason"] == (
        "m365: (record): unrecognised shape for m365: top-level keys eventType, published, uuid"
    )
    assert (letter["file"], letter["line"]) == ("m365-shipped-lookalike.jsonl", 7)


def test_a_text_source_shipped_inside_json(mapping: VendorMapping) -> None:
    run = adapt_file("cef-dlp", "cef-dlp-shipped-lookalike.jsonl", mapping)
    assert [e["event_id"] for e in run.events] == ["cef-dlp:PI-2026-000123"] * 4
    assert not run.dead


def test_a_misrouted_feed_is_dead_lettered_not_skipped(mapping: VendorMapping) -> None:
    # Slack audit entries on the okta topic: before, "eventType None", skipped.
    run = adapt_file("okta", "okta-misrouted-slack-audit.log", mapping)
    assert not run.events and not run.counts.skipped
    assert [d["reason"] for d in run.dead] == [
        "okta: (record): unrecognised shape for okta: top-level keys "
        "action, actor, context, date_create, entity, id",
        "okta: (record): unrecognised shape for okta: top-level keys "
        "action, actor, context, date_create, details, entity, id",
    ]


def test_a_shipped_message_on_a_raw_topic(mapping: VendorMapping) -> None:
    lines = (VENDORS / "m365-shipped-lookalike.jsonl").read_bytes().splitlines()
    fluent_bit = adapt_message(ADAPTERS["m365"], lines[2], mapping, WHERE)
    assert [e["event_id"] for e in fluent_bit.events] == [SENT_MAIL]
    assert fluent_bit.records == {"event": 1}
    batch = adapt_message(ADAPTERS["m365"], lines[5], mapping, WHERE)
    assert batch.records == {"event": 2}
    misrouted = (VENDORS / "okta-misrouted-slack-audit.log").read_bytes().splitlines()[0]
    slack = adapt_message(ADAPTERS["okta"], misrouted, mapping, WHERE)
    assert slack.records == {"dead": 1} and not slack.skipped
    assert "unrecognised shape for okta" in slack.dead_letters[0]["reason"]


def test_every_source_refuses_another_sources_record(mapping: VendorMapping) -> None:
    slack = (VENDORS / "okta-misrouted-slack-audit.log").read_bytes().splitlines()[0]
    assert adapt_message(ADAPTERS["slack"], slack, mapping, WHERE).records == {"event": 1}
    for source, adapter in ADAPTERS.items():
        if source == "slack":
            continue  # its own record, above
        outcome = adapt_message(adapter, slack, mapping, WHERE)
        assert outcome.records == {"dead": 1}, source
        assert f"unrecognised shape for {source}" in outcome.dead_letters[0]["reason"], source


def test_an_envelope_holding_no_record_is_named_by_its_keys(mapping: VendorMapping) -> None:
    empty = json.dumps({"message": "GET /healthz 200", "host": "collector-01"}).encode()
    [letter] = adapt_message(ADAPTERS["netskope"], empty, mapping, WHERE).dead_letters
    assert letter["reason"].endswith("top-level keys host, message")


def test_skip_kinds_as_metric_labels_are_bounded_per_source() -> None:
    labels = SkipLabels()
    seen = {labels.label("okta", f"eventType custom.{i}") for i in range(MAX_SKIP_KINDS + 30)}
    assert len(seen) == MAX_SKIP_KINDS + 1 and "other" in seen
    assert labels.label("okta", "eventType custom.0") == "eventType custom.0"  # still its own
    assert labels.label("m365", "Exchange DlpRuleUndo") == "Exchange DlpRuleUndo"  # per source
