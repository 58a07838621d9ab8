"""Google Workspace device audit -> device_posture."""

from __future__ import annotations

from adapters.mapping import VendorMapping
from tests.adapters.conftest import adapt_file

CONTROLS = ("managed", "edr_running", "disk_encrypted", "screen_lock", "jailbroken")


def test_compliance_and_compromise_events(mapping: VendorMapping) -> None:
    run = adapt_file("google-workspace-devices", "google-workspace-devices-page.json", mapping)
    android, iphone = run.events
    assert android["device_id"] == "android-7f3c2a19e0b4"
    assert android["user_id"] == "thanh.nguyen@vn.hanbit-bank.example"
    assert android["entity"] == "SUB-VN"
    assert tuple(android[c] for c in CONTROLS) == (None, None, None, True, False)
    assert android["os_patch_age_days"] == 53  # security patch level 2026-10-01
    assert tuple(iphone[c] for c in CONTROLS) == (None, None, None, False, True)
    assert iphone["os_patch_age_days"] == 20  # iOS 26.1 of 2026-11-03
    assert run.counts.skipped == {"mobile OS_UPDATED_EVENT": 1}
    assert run.dead == []


def test_public_fixture_placeholders_are_refused_by_field(mapping: VendorMapping) -> None:
    run = adapt_file("google-workspace-devices", "google-workspace-devices-activities.log", mapping)
    assert run.events == []
    assert run.counts.skipped == {"login DEVICE_SYNC_EVENT": 1}
    [letter] = run.dead  # "os11" and "patch level" give no age
    assert letter["field"] == "events.parameters.OS_VERSION"


def test_context_aware_access_denials_are_counted_not_postures(mapping: VendorMapping) -> None:
    # A denial says an access level was not met, not which control failed.
    run = adapt_file(
        "google-workspace-devices", "google-workspace-devices-caa-activities.log", mapping
    )
    assert run.events == [] and run.dead == []
    assert run.counts.skipped == {"token ACCESS_DENY_EVENT": 1}
