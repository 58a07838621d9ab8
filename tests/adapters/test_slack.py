"""Slack Audit Logs API -> saas_access."""

from __future__ import annotations

from adapters.mapping import VendorMapping
from tests.adapters.conftest import adapt_file


def test_public_entries(mapping: VendorMapping) -> None:
    run = adapt_file("slack", "slack-audit.log", mapping)
    login, download = run.events
    assert (login["action"], login["user_id"], login["saas_app"]) == (
        "login",
        "bird@slack.com",
        "slack",
    )
    assert (login["timestamp"], login["network_zone"]) == ("2018-03-16T15:32:23+00:00", "external")
    assert (download["action"], download["object"]) == ("download", {"name": "image.png"})
    assert download["event_id"] == "2db28060-1659-4b27-ad55-fdba12e3a7b1"
    assert run.counts.skipped == {"action user_created": 1, "action anomaly": 1}
    assert run.dead == []


def test_file_actions_and_refusals(mapping: VendorMapping) -> None:
    run = adapt_file("slack", "slack-audit-page.json", mapping)
    upload, share = run.events
    assert (upload["action"], upload["network_zone"], upload["entity"]) == (
        "upload",
        "internal",
        "HQ",
    )
    assert upload["user_id"] == "jiwoo.park@hanbit-bank.example"
    assert upload["object"] == {"name": "고객명단 2026.xlsx"}
    assert (share["action"], share["entity"]) == ("share", "BR-SEOUL-GN")
    assert run.counts.skipped == {"action user_logout": 1}
    assert sorted(d["field"] for d in run.dead) == ["(record)", "actor.user.email"]
