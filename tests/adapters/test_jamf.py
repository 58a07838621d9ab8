"""Jamf Pro computer inventory -> device_posture."""

from __future__ import annotations

from adapters.mapping import VendorMapping
from tests.adapters.conftest import adapt_file

CONTROLS = ("managed", "edr_running", "disk_encrypted", "screen_lock", "jailbroken")


def test_inventory_page(mapping: VendorMapping) -> None:
    run = adapt_file("jamf", "jamf-computers-inventory.json", mapping)
    good, bad = run.events
    assert good["device_id"] == "8e3a1f52-6c4d-5b7e-9a10-2b3c4d5e6f70"  # the udid
    assert good["timestamp"] == "2026-11-23T00:10:00+00:00"  # the inventory report
    # managed, no EDR or screen lock reported, FileVault on, SIP and Gatekeeper on
    assert tuple(good[c] for c in CONTROLS) == (True, None, True, None, False)
    assert (good["os_patch_age_days"], good["user_id"]) == (20, None)  # 26.1 of 2026-11-03
    assert bad["timestamp"] == "2026-11-23T00:20:00+00:00"  # no reportDate: the check-in
    assert tuple(bad[c] for c in CONTROLS) == (False, None, False, None, True)
    assert bad["user_id"] == "jiwoo.park@hanbit-bank.example"
    [old] = run.dead
    assert old["field"] == "operatingSystem.version"
    assert old["reason"].endswith("is not in the release table (os_releases)")


def test_public_records_without_the_needed_sections(mapping: VendorMapping) -> None:
    run = adapt_file("jamf", "jamf-inventory-elastic.json", mapping)
    assert run.events == []
    assert [d["reason"] for d in run.dead] == [
        "jamf: general: the GENERAL section is missing: request it (section=GENERAL)",
        "jamf: general: the GENERAL section is missing: request it (section=GENERAL)",
        "jamf: operatingSystem: the OPERATING_SYSTEM section is missing: request it"
        " (section=OPERATING_SYSTEM)",
    ]
