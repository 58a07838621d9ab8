"""Symantec DLP Enforce REST API incidents -> dlp_alert."""

from __future__ import annotations

from adapters.mapping import VendorMapping
from tests.adapters.conftest import adapt_file


def test_public_responses(mapping: VendorMapping) -> None:
    run = adapt_file("symantec-dlp", "symantec-dlp-static-attributes.jsonl", mapping)
    assert run.events == []
    assert run.counts.skipped == {"discover incident": 1}
    assert [(d["field"], d["reason"]) for d in run.dead] == [
        ("infoMap.endpointUserName", "symantec-dlp: infoMap.endpointUserName: no user"),
        (
            "infoMap",
            "symantec-dlp: infoMap: an incidents list entry names no policy or user:"
            " publish GET /incidents/{id}/staticAttributes instead",
        ),
    ]


def test_incidents_by_channel(mapping: VendorMapping) -> None:
    run = adapt_file("symantec-dlp", "symantec-dlp-incidents.jsonl", mapping)
    usb, upload, mail = run.events
    assert usb["event_id"] == "symantec-dlp:51001"
    assert usb["timestamp"] == "2026-11-23T10:40:00.120000+09:00"  # the Enforce server's zone
    assert (usb["channel"], usb["data_types"], usb["match_count"]) == ("usb", ["kr_rrn"], 12)
    assert (usb["device_id"], usb["entity"]) == ("pc-gn-0007", "BR-SEOUL-GN")
    assert usb["object"] == {"name": "고객명단 2026.xlsx"}
    assert (upload["channel"], upload["saas_app"]) == ("saas_upload", "box")
    assert upload["data_types"] == ["personal_credit_info"]
    assert upload["user_id"] == "jiwoo.park@hanbit-bank.example"
    assert (mail["channel"], mail["saas_app"], mail["data_types"]) == (
        "email",
        None,
        ["kr_passport"],
    )
    assert mail["user_id"] == "jiwoo.park@hanbit-bank.example"  # the SMTP sender
    assert run.dead == []
