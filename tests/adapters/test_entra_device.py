"""Microsoft Graph device objects -> device_posture."""

from __future__ import annotations

from adapters.mapping import VendorMapping
from tests.adapters.conftest import adapt_file

CONTROLS = ("managed", "edr_running", "disk_encrypted", "screen_lock", "jailbroken")


def test_device_objects(mapping: VendorMapping) -> None:
    run = adapt_file("entra-device", "entra-device-list-page.json", mapping)
    pc, phone = run.events
    assert pc["device_id"] == "pc-hq-0142"  # deviceId, the id sign-ins and Intune carry
    assert pc["timestamp"] == "2026-11-23T00:31:07+00:00"
    # managed, no EDR or encryption reported, compliant (screen lock by policy)
    assert tuple(pc[c] for c in CONTROLS) == (True, None, None, True, False)
    assert pc["os_patch_age_days"] == 13
    assert tuple(phone[c] for c in CONTROLS) == (False, None, None, False, True)  # rooted
    [unknown_build] = run.dead
    assert unknown_build["field"] == "operatingSystemVersion"


def test_the_shortened_reference_example_has_no_date(mapping: VendorMapping) -> None:
    run = adapt_file("entra-device", "entra-device-get.json", mapping)
    assert run.events == []
    assert [d["reason"] for d in run.dead] == [
        "entra-device: approximateLastSignInDateTime: missing"
    ]
