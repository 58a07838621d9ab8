"""Google Workspace rules (DLP) activity -> dlp_alert."""

from __future__ import annotations

from adapters.mapping import VendorMapping
from tests.adapters.conftest import adapt_file


def test_public_rule_matches_single_event_objects(mapping: VendorMapping) -> None:
    run = adapt_file("google-workspace-rules", "google-workspace-rules-activities.log", mapping)
    first, second = run.events
    assert first["event_id"] != second["event_id"]  # same qualifier, another time
    assert (first["user_id"], first["channel"], first["saas_app"]) == ("foo@bar.com", "other", None)
    assert first["data_types"] == ["managers"]  # only the rule's name says what matched
    assert first["timestamp"] == "2020-10-02T15:00:00+00:00"
    assert run.dead == [] and not run.counts.skipped


def test_rule_matches_by_data_source(mapping: VendorMapping) -> None:
    run = adapt_file("google-workspace-rules", "google-workspace-rules-page.json", mapping)
    drive, mail, chrome = run.events
    assert (drive["channel"], drive["saas_app"]) == ("saas_upload", "google drive")
    assert drive["data_types"] == ["card_number", "kr_rrn"]  # detector ids through the mapping
    assert (drive["match_count"], drive["entity"]) == (2, "BR-SEOUL-GN")
    assert drive["user_id"] == "minseo.kim@hanbit-bank.example"
    assert drive["object"] == {"name": "고객명단 2026"}
    assert (mail["channel"], mail["data_types"]) == ("email", ["personal_credit_info"])
    assert (chrome["channel"], chrome["device_id"], chrome["data_types"]) == (
        "print",
        "pc-hq-0142",
        ["kr_passport"],
    )
    assert run.counts.skipped == {"rules rule_match ACTIVITY_RULE": 1, "application drive": 1}
    [misrouted] = run.dead
    assert misrouted["reason"] == (
        "google-workspace-rules: (record): unrecognised shape for google-workspace-rules:"
        " top-level keys eventType, published, uuid"
    )
