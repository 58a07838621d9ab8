"""Microsoft 365 Management Activity API -> saas_access and dlp_alert (Purview DlpRuleMatch)."""

from __future__ import annotations

import json

from adapters import m365
from adapters.mapping import VendorMapping
from tests.adapters.conftest import adapt_file

HIDDEN = "1234568"  # the hidden part of the made-up RRN 900101-1234568 in the fixture


def test_file_operations_map_to_actions_apps_and_zones(mapping: VendorMapping) -> None:
    got = adapt_file("m365", "m365-content-blob.json", mapping).by_id()
    upload = got["4e5f6a7b-1c2d-4e3f-8a9b-0c1d2e3f4a5b"]
    assert upload["timestamp"] == "2026-11-23T00:20:11+00:00"  # zone-less, documented UTC
    assert (upload["saas_app"], upload["action"]) == ("m365-sharepoint", "upload")
    assert upload["device_id"] == "pc-hq-0142"  # DeviceDisplayName through the device map
    assert upload["object"] == {"name": "Q4-liquidity.xlsx", "size": 48213}
    assert upload["user_id"] == "jiwoo.park@hanbit-bank.example"
    download = got["5f6a7b8c-2d3e-4f4a-9b0c-1d2e3f4a5b6c"]
    assert (download["saas_app"], download["action"]) == ("m365-onedrive", "download")
    assert (download["network_zone"], download["src_ip"]) == ("external", "2001:db8:4:1::20")
    share = got["6a7b8c9d-3e4f-4a5b-0c1d-2e3f4a5b6c7d"]
    assert share["action"] == "share" and share["entity"] == "BR-SEOUL-GN"
    assert HIDDEN not in share["object"]["name"]  # the file name held an RRN
    assert got["7b8c9d0e-4f5a-4b6c-1d2e-3f4a5b6c7d8e"]["action"] == "login"
    mail = got["9d0e1f2a-6b7c-4d8e-3f4a-5b6c7d8e9f0a"]
    assert (mail["action"], mail["saas_app"], mail["src_ip"]) == (
        "share",
        "exchange",
        "203.0.113.10",
    )


def test_purview_dlp_rule_match_with_nested_sensitive_types(mapping: VendorMapping) -> None:
    got = adapt_file("m365", "m365-content-blob.json", mapping).by_id()
    alert = got["0e1f2a3b-7c8d-4e9f-4a5b-6c7d8e9f0a1b"]
    assert alert["stream"] == "dlp_alert"
    assert alert["channel"] == "saas_upload" and alert["saas_app"] == "m365-sharepoint"
    assert alert["data_types"] == ["card_number", "kr_rrn"]  # two policies, two rules
    assert alert["match_count"] == 14
    assert alert["snippet"] is not None and "900101-1******" in alert["snippet"]
    assert HIDDEN not in json.dumps(alert, ensure_ascii=False)
    assert "2345671" not in alert["snippet"]


def test_purview_exchange_match_is_email_and_masks_the_subject(mapping: VendorMapping) -> None:
    got = adapt_file("m365", "m365-content-blob.json", mapping).by_id()
    mail = got["1f2a3b4c-8d9e-4f0a-5b6c-7d8e9f0a1b2c"]
    assert (mail["channel"], mail["data_types"]) == ("email", ["kr_passport"])
    assert mail["saas_app"] is None  # Exchange is not a registry app here
    assert "12345678" not in mail["object"]["name"]


def test_sign_ins_are_left_to_entra_and_unmappable_records_dead_lettered(
    mapping: VendorMapping,
) -> None:
    run = adapt_file("m365", "m365-content-blob.json", mapping)
    assert run.counts.skipped == {"AzureActiveDirectory UserLoggedIn": 1}
    fields = sorted(d["field"] for d in run.dead)
    assert fields == ["CreationTime", "PolicyDetails.Rules.ConditionsMatched.SensitiveInformation"]
    assert all(d["source"] == "m365" for d in run.dead)
    assert HIDDEN not in json.dumps(run.dead, ensure_ascii=False)


def test_a_sensitive_type_named_only_by_its_guid(mapping: VendorMapping) -> None:
    record = {
        "Id": "g1",
        "CreationTime": "2026-11-23T03:00:00",
        "Operation": "DlpRuleMatch",
        "Workload": "OneDrive",
        "UserId": "minseo.kim@hanbit-bank.example",
        "PolicyDetails": [
            {"Rules": [{"ConditionsMatched": {"SensitiveInformation": [
                {"SensitiveType": "50842EB7-EDC8-4019-85DD-5A5C1F2BB085", "Count": 3},
                {"SensitiveType": "0e9b3178-9678-47dd-a509-37222ca96b42", "Count": 1},
            ]}}]}
        ],
    }  # fmt: skip
    [alert] = m365.adapt(record, mapping)
    assert alert["data_types"] == ["card_number"]  # the known GUID; the unknown one dropped
    assert (alert["saas_app"], alert["match_count"]) == ("m365-onedrive", 4)
