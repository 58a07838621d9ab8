"""Entra ID sign-ins -> saas_access; Intune managedDevice -> device_posture;
the two name one device."""

from __future__ import annotations

from adapters.mapping import VendorMapping
from tests.adapters.conftest import adapt_file


def test_graph_page_sign_in_with_device_detail(mapping: VendorMapping) -> None:
    run = adapt_file("entra-signin", "entra-signin-graph-page.json", mapping)
    got = run.by_id()
    first = got["66ea54eb-6301-4ee5-be62-ff5a759b0100"]
    assert (first["saas_app"], first["action"], first["network_zone"]) == (
        "m365-sharepoint",
        "login",
        "internal",
    )
    assert first["device_id"] == "pc-hq-0142"  # upper-case Entra id, mapped
    teams = got["77fb65fc-7412-4ff6-cf73-006b86ac1200"]
    assert teams["saas_app"] == "m365-teams" and teams["device_id"] is None  # empty deviceId
    assert run.counts.skipped == {"failed sign-in": 1}
    assert not run.dead


def test_event_hubs_records_with_seven_digit_fractions(mapping: VendorMapping) -> None:
    run = adapt_file("entra-signin", "entra-signin-eventhub.json", mapping)
    [event] = run.events
    assert event["timestamp"] == "2026-11-23T09:14:59.123456+00:00"
    assert event["saas_app"] == "dropbox"
    assert (event["entity"], event["device_id"]) == ("BR-SEOUL-GN", "pc-gn-0007")
    assert run.counts.skipped == {"category AuditLogs": 1}


def test_intune_posture_from_compliance_encryption_threat_state_and_build(
    mapping: VendorMapping,
) -> None:
    run = adapt_file("intune", "intune-managed-devices.json", mapping)
    got = {e["device_id"]: e for e in run.events}
    good = got["pc-hq-0142"]
    assert good["timestamp"] == "2026-11-22T23:50:00+00:00"
    assert (good["managed"], good["edr_running"], good["disk_encrypted"], good["screen_lock"]) == (
        True,
        True,
        True,
        True,
    )
    assert good["os_patch_age_days"] == 12  # 10.0.26100.7309 released 2026-11-10
    assert good["jailbroken"] is False  # "Unknown" on a PC is not a jailbreak
    assert good["user_id"] == "jiwoo.park@hanbit-bank.example"
    bad = got["pc-gn-0007"]
    assert (bad["edr_running"], bad["disk_encrypted"], bad["screen_lock"]) == (False, False, False)
    assert bad["os_patch_age_days"] == 76  # 22631.6100 released 2026-09-08
    phone = got["3e4f5a6b-cccc-4ddd-8eee-333333333333"]  # zero Entra id: the Intune id names it
    assert phone["jailbroken"] is True  # an unknown jailbreak state on a phone counts
    assert phone["entity"] == "SUB-VN"


def test_same_state_polled_twice_is_one_event_id_and_missing_builds_are_dead(
    mapping: VendorMapping,
) -> None:
    first = adapt_file("intune", "intune-managed-devices.json", mapping)
    again = adapt_file("intune", "intune-managed-devices.json", mapping)
    assert [e["event_id"] for e in first.events] == [e["event_id"] for e in again.events]
    assert len({e["event_id"] for e in first.events}) == 3
    [letter] = first.dead
    assert letter["field"] == "osVersion" and "release table" in letter["reason"]
