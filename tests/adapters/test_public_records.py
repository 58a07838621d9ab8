"""Public vendor records (provenance beside each file in tests/fixtures/vendors)
through the adapters: the numbered problems of issue 14 that are the adapters' own."""

from __future__ import annotations

import json

from adapters import google_workspace
from adapters.mapping import VendorMapping
from tests.adapters.conftest import VENDORS, adapt_file


def test_m365_dlp_on_onedrive_is_an_alert_whatever_the_case_of_dlprulematch(
    mapping: VendorMapping,
) -> None:
    # Problem 1: SharePoint and OneDrive write DLPRuleMatch (RecordType 11).
    got = adapt_file("m365", "m365-dlp-elastic.json", mapping).by_id()
    alert = got["eb8259c8-d2c2-449d-bd35-5c8a033eb629"]
    assert (alert["stream"], alert["channel"], alert["saas_app"]) == (
        "dlp_alert",
        "saas_upload",
        "m365-onedrive",
    )
    assert alert["data_types"] == ["card_number"]  # 50842eb7-...: the mapping's card GUID
    assert alert["object"] == {"name": "Customers Financial Data Copy.docx"}


def test_m365_dlp_names_the_person_not_the_dlp_service(mapping: VendorMapping) -> None:
    # Problem 2: UserId is DlpAgent / DlpPolicyEventBasedAssistant...; the person is From.
    run = adapt_file("m365", "m365-dlp-elastic.json", mapping)
    users = {e["event_id"]: e["user_id"] for e in run.events}
    assert users == {
        "a21f13b9-22b6-405b-bf9e-a07ad8d456da": "asr@testsiem2.onmicrosoft.com",  # SharePoint From
        "eb8259c8-d2c2-449d-bd35-5c8a033eb629": "asr@testsiem2.onmicrosoft.com",
        "d5a0e7d9-e06f-498c-8413-eb83b7dbd516": "asr@testsiem2.onmicrosoft.com",  # Exchange From
        # Its DlpRuleUndo: the same person, as a retraction (test_m365_undo_...).
        "d5a0e7d9-e06f-498c-8413-eb83b7dbd516:undo": "asr@testsiem2.onmicrosoft.com",
    }


def test_m365_dlp_counts_a_type_matched_by_two_rules_once(mapping: VendorMapping) -> None:
    # Problem 2: two rules of one policy both list the same two hits: 2, not 4.
    got = adapt_file("m365", "m365-dlp-elastic.json", mapping).by_id()
    mail = got["d5a0e7d9-e06f-498c-8413-eb83b7dbd516"]
    assert (mail["channel"], mail["match_count"]) == ("email", 2)
    assert len(mail["data_types"]) == 2
    assert got["eb8259c8-d2c2-449d-bd35-5c8a033eb629"]["match_count"] == 13  # 12 + 1, one rule


def test_google_drive_events_split_one_a_record_map_with_distinct_ids(
    mapping: VendorMapping,
) -> None:
    # Problem 3: `events` as one object (Elastic Agent splits activities), and
    # eight events of one activity (same time and unique qualifier).
    run = adapt_file("google-workspace", "google-workspace-drive-elastic.log", mapping)
    assert not run.dead
    assert [e["action"] for e in run.events] == [
        "upload",  # create
        "delete",
        "delete",  # the same delete, emptying the trash: other parameters
        "download",
        "edit",
        "edit",  # rename
        "upload",
    ]
    assert len({e["event_id"] for e in run.events}) == 7
    assert run.counts.skipped == {"drive add_to_folder": 1}


def test_google_ids_are_the_same_for_an_activity_split_or_whole(mapping: VendorMapping) -> None:
    lines = (VENDORS / "google-workspace-drive-elastic.log").read_text().splitlines()
    records = [json.loads(line) for line in lines[5:7]]  # download, edit
    whole = {**records[0], "events": [r["events"] for r in records]}
    split_ids = [e["event_id"] for r in records for e in google_workspace.adapt(r, mapping)]
    whole_adapted = google_workspace.adapt(whole, mapping)
    assert isinstance(whole_adapted, list)
    assert [e["event_id"] for e in whole_adapted] == split_ids


def test_zscaler_general_browsing_to_a_registry_host_is_an_access(mapping: VendorMapping) -> None:
    # Problem 5: Zscaler files a SaaS it does not classify as "General Browsing".
    [access] = adapt_file("zscaler-zia", "zscaler-general-browsing-lookalike.jsonl", mapping).events
    assert (access["saas_app"], access["action"], access["user_id"]) == (
        "dooray",
        "upload",
        "minseo.kim@hanbit-bank.example",
    )
    # General browsing to a host nobody registered, and blocked requests, stay skipped.
    real = adapt_file("zscaler-zia", "zscaler-nss-web-elastic.jsonl", mapping)
    assert not real.events and not real.dead
    assert real.counts.skipped == {"Blocked": 2, "General Browsing": 1}


def test_netskope_dlp_alert_raised_by_a_policy_is_an_alert(mapping: VendorMapping) -> None:
    # Problem 10: alert_type "policy" with alert_source "DLP".
    [alert] = adapt_file("netskope", "netskope-dlp-policy-lookalike.jsonl", mapping).events
    assert (alert["stream"], alert["saas_app"], alert["data_types"], alert["match_count"]) == (
        "dlp_alert",
        "dropbox",
        ["kr_rrn"],
        3,
    )
    real = adapt_file("netskope", "netskope-alerts-v2-elastic.jsonl", mapping)
    assert [e["event_id"] for e in real.events] == ["5182808a2a99fc688d4a8257"]  # alert_type dlp
    assert real.counts.skipped == {"alert quarantine": 1, "alert malware": 1}
