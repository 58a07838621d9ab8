"""Purview Endpoint DLP and Information Protection -> dlp_alert."""

from __future__ import annotations

import json

from adapters.mapping import VendorMapping
from tests.adapters.conftest import adapt_file


def test_endpoint_dlp_actions_by_channel(mapping: VendorMapping) -> None:
    run = adapt_file("purview-endpoint", "purview-endpoint-dlp.jsonl", mapping)
    got = run.by_id()
    upload = got["6b0e2a41-8c3d-4f5e-9a7b-1c2d3e4f5a01"]
    assert (upload["channel"], upload["saas_app"]) == ("saas_upload", "box")  # app.box.com
    assert upload["data_types"] == ["card_number", "kr_rrn"]  # a name, and a GUID
    assert upload["match_count"] == 14
    assert (upload["device_id"], upload["entity"]) == ("pc-gn-0007", "BR-SEOUL-GN")
    assert upload["timestamp"] == "2026-11-23T01:12:30+00:00"
    assert upload["object"] == {
        "name": "고객명단 2026.xlsx",
        "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "size": 48213,
    }
    usb = got["6b0e2a41-8c3d-4f5e-9a7b-1c2d3e4f5a02"]
    assert (usb["channel"], usb["saas_app"], usb["device_id"]) == ("usb", None, "pc-hq-0142")
    assert usb["user_id"] == "jiwoo.park@hanbit-bank.example"
    assert usb["object"] == {"name": "passports.csv", "size": 1024}  # not a SHA-256: left out
    used = got["7c1f3b52-9d4e-4a6f-8b8c-2d3e4f5a6b01"]  # Information Protection: Common.DeviceName
    assert (used["channel"], used["device_id"], used["data_types"]) == (
        "other",
        "pc-gn-0007",
        ["kr_passport"],
    )
    assert run.counts.skipped == {
        "blocked FileUploadedToCloud": 1,
        "endpoint FileRead": 1,
        "FilePrinted without sensitive types": 1,
    }
    [misrouted] = run.dead
    assert misrouted["reason"].startswith("purview-endpoint: (record): unrecognised shape")
    assert "4C530001090815111535" not in json.dumps(run.events)  # USB serials are not read


def test_information_protection_reference_records(mapping: VendorMapping) -> None:
    run = adapt_file("purview-endpoint", "purview-aip-discover.json", mapping)
    assert run.events == [] and run.dead == []
    assert run.counts.skipped == {
        "information protection Discover": 1,
        "Access without sensitive types": 1,
    }
