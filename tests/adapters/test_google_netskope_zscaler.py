"""Google Workspace, Netskope and Zscaler ZIA -> saas_access (and Netskope DLP alerts)."""

from __future__ import annotations

from adapters.mapping import VendorMapping
from tests.adapters.conftest import adapt_file


def test_google_activity_with_several_events_gives_one_access_each(
    mapping: VendorMapping,
) -> None:
    run = adapt_file("google-workspace", "google-workspace-activities.json", mapping)
    drive = [e for e in run.events if e["saas_app"] == "google drive"]
    assert [e["action"] for e in drive] == ["upload", "share"]  # sync_item_content left out
    assert len({e["event_id"] for e in drive}) == 2
    assert drive[0]["object"] == {"name": "branch-kpi.xlsx"}
    assert drive[0]["timestamp"] == "2026-11-23T01:30:00.512000+00:00"
    calendar = next(e for e in run.events if e["saas_app"] == "google-calendar")
    assert (calendar["action"], calendar["entity"]) == ("edit", "BR-SEOUL-GN")
    assert run.counts.skipped == {"login login_failure": 1, "application token": 1}
    assert not run.dead


def test_netskope_events_and_dlp_alerts(mapping: VendorMapping) -> None:
    run = adapt_file("netskope", "netskope-events.jsonl", mapping)
    got = run.by_id()
    upload = got["f621f259f5fbde850ad5593a"]
    assert (upload["saas_app"], upload["action"], upload["network_zone"]) == (
        "dropbox",
        "upload",
        "internal",
    )
    assert upload["device_id"] == "pc-gn-0007"
    assert upload["object"]["sha256"].startswith("9f2c3b1a")
    browse = got["a711b35a06fcde851bd6604b"]
    assert (browse["saas_app"], browse["action"]) == ("box", "view")
    assert browse["timestamp"] == "2026-11-23T01:41:00+00:00"  # epoch seconds as a string
    assert browse["object"] is None  # md5 only: not a SHA-256
    alert = got["d044e68d39cf20b84e09937e"]
    assert alert["stream"] == "dlp_alert"
    assert alert["timestamp"] == "2026-11-23T01:45:00+00:00"  # epoch milliseconds
    assert (alert["channel"], alert["saas_app"], alert["data_types"]) == (
        "saas_upload",
        "dropbox",
        ["kr_rrn"],  # the rule is known: the profile's bare name is not added
    )
    assert alert["match_count"] == 37
    assert alert["object"]["sha256"] == upload["object"]["sha256"]
    assert run.counts.skipped == {
        "type connection": 1,
        "API Connector event without a client address": 1,
        "alert anomaly": 1,
    }
    [letter] = run.dead
    assert (letter["source"], letter["field"]) == ("netskope", "user")


def test_zscaler_cloud_app_requests_only_in_the_feed_time_zone(mapping: VendorMapping) -> None:
    run = adapt_file("zscaler-zia", "zscaler-nss-web.jsonl", mapping)
    got = run.by_id()
    jira = got["zscaler-zia:7318049962000000001"]
    assert jira["timestamp"] == "2026-11-23T10:20:00+09:00"  # ctime, KST by the mapping
    assert (jira["saas_app"], jira["action"], jira["network_zone"], jira["entity"]) == (
        "jira-cloud",
        "upload",
        "internal",
        "HQ",
    )
    assert jira["device_id"] == "pc-hq-0142"
    unknown = next(e for e in run.events if e["saas_app"] == "wetransfer")
    assert unknown["device_id"] is None and unknown["event_id"].startswith("zscaler-zia:")
    remote = got["zscaler-zia:7318049962000000005"]  # the Splunk-style template's names
    assert (remote["saas_app"], remote["network_zone"]) == ("m365-sharepoint", "external")
    assert run.counts.skipped == {"General Browsing": 1, "Blocked": 1}
    [letter] = run.dead
    assert letter["field"] == "time" and "ctime" in letter["reason"]
