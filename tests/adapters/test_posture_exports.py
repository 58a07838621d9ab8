"""Intune's Azure Monitor export and Falcon host details -> device_posture
(issue 14, problem 4: both dead-lettered every record before)."""

from __future__ import annotations

from adapters.mapping import VendorMapping
from tests.adapters.conftest import adapt_file

CONTROLS = ("managed", "edr_running", "disk_encrypted", "screen_lock", "jailbroken")


def controls(event: dict[str, object]) -> tuple[object, ...]:
    return tuple(event[c] for c in CONTROLS)


def test_intune_diagnostic_export_devices(mapping: VendorMapping) -> None:
    run = adapt_file("intune", "intune-diagnostic-devices.json", mapping)
    got = {e["device_id"]: e for e in run.events}
    pc = got["pc-hq-0142"]  # ReferenceId (the Entra id) through the device map
    assert pc["timestamp"] == "2026-11-23T00:00:00+00:00"  # LastContact, zone-less UTC
    assert pc["user_id"] == "jiwoo.park@hanbit-bank.example"
    # managed, no endpoint protection column (not reported), encrypted, compliant
    assert controls(pc) == (True, None, True, True, False)
    assert pc["os_patch_age_days"] == 13  # 10.0.26100.7309 of 2026-11-10
    phone = got["2c4e6a8b-0d1f-4a3c-8e5b-7d9f1a3c5e7b"]  # the all-zero Entra id is no id
    assert controls(phone) == (True, None, False, False, True)  # unknown jailbreak on a phone
    bare = got["7a7a7a7a-1b1b-4c2c-8d3d-4e4e4e4e4e4e"]
    assert bare["timestamp"] == "2026-11-23T00:08:00+00:00"  # no LastContact: the record's time
    assert bare["managed"] is False
    assert run.counts.skipped == {"diagnostic category AuditLogs": 1}
    assert run.dead == []


def test_intune_graph_and_export_name_one_device_with_stable_ids(mapping: VendorMapping) -> None:
    graph = adapt_file("intune", "intune-managed-devices.json", mapping)
    export = adapt_file("intune", "intune-diagnostic-devices.json", mapping)
    assert "pc-hq-0142" in {e["device_id"] for e in graph.events}
    assert "pc-hq-0142" in {e["device_id"] for e in export.events}
    again = adapt_file("intune", "intune-diagnostic-devices.json", mapping)
    assert [e["event_id"] for e in again.events] == [e["event_id"] for e in export.events]


def test_falcon_host_details_speak_for_the_sensor(mapping: VendorMapping) -> None:
    run = adapt_file("crowdstrike", "crowdstrike-hosts.jsonl", mapping)
    mac, server = run.events
    assert mac["device_id"] == "3114433dbce478ca48d9a828b9b34be"
    assert mac["timestamp"] == "2023-11-07T10:25:24+00:00"  # last_seen
    # sensor protecting; MDM, encryption and screen lock are not reported
    assert controls(mac) == (None, True, None, None, False)
    assert mac["os_patch_age_days"] is None  # a Mac's build is not reported: unknown
    assert server["edr_running"] is True  # containment pending: the sensor still runs
    assert server["os_patch_age_days"] == 2991  # 10.0.14393.693 of 2017-01-10
    assert run.dead == [] and not run.counts.skipped


def test_falcon_host_edge_cases(mapping: VendorMapping) -> None:
    run = adapt_file("crowdstrike", "crowdstrike-hosts-edge.jsonl", mapping)
    got = {e["device_id"]: e for e in run.events}
    assert got["pc-hq-0142"]["edr_running"] is False  # reduced functionality mode
    assert got["a1b2c3d4e5f60718293a4b5c6d7e8f90"]["edr_running"] is False  # prevention not applied
    shape, build = sorted(run.dead, key=lambda d: d["field"])
    assert shape["reason"] == (
        "crowdstrike: (record): unrecognised shape for crowdstrike: top-level keys"
        " hostname, last_seen, status"
    )
    assert build["field"] == "kernel_version"
    assert build["reason"].endswith("is not in the release table (os_releases)")
