"""Device posture that access records carry (issue 14, problem 9): Okta's
device assurance, Entra sign-ins' deviceDetail, Netskope's device
classification. Each becomes a `device_posture` speaking only for the
controls the record carries; the others are null (unknown, never assumed)."""

from __future__ import annotations

from typing import Any

from adapters.mapping import VendorMapping
from detectors import Engine
from schemas import EventAdapter
from schemas.policy_file import load_policy
from tests import cases
from tests.adapters.conftest import POLICY, adapt_file

UNSAID = ("edr_running", "os_patch_age_days")  # no access log here speaks for these


def _controls(posture: dict[str, Any]) -> dict[str, Any]:
    return {
        k: posture[k]
        for k in ("managed", "edr_running", "disk_encrypted", "screen_lock", "jailbroken")
    }


def _pairs(events: list[dict[str, Any]]) -> dict[str, tuple[dict[str, Any], dict[str, Any] | None]]:
    """Each access by id, with the posture derived from it (or None)."""
    postures = {e["event_id"]: e for e in events if e["stream"] == "device_posture"}
    return {
        e["event_id"]: (e, postures.get(f"{e['event_id']}:posture"))
        for e in events
        if e["stream"] == "saas_access"
    }


def _same_device_time_and_unit(access: dict[str, Any], posture: dict[str, Any]) -> None:
    assert posture["device_id"] == access["device_id"]
    assert posture["timestamp"] == access["timestamp"]
    assert (posture["entity"], posture["user_id"]) == (access["entity"], access["user_id"])
    assert all(posture[c] is None for c in UNSAID)


def test_okta_sign_in_to_okta_reports_the_device_assurance_it_carries(
    mapping: VendorMapping,
) -> None:
    """The record as Okta's System Log API returns it (vectordotdev/vector's
    fixture): a sign-in to Okta itself is no SaaS access, but it says what
    Okta Verify saw of the device, so it is kept as a posture, not skipped."""
    run = adapt_file("okta", "okta-device-vector.json", mapping)
    assert not run.counts.skipped and not run.dead
    [posture] = run.events
    assert posture["stream"] == "device_posture"
    assert posture["event_id"] == "dc9fd3c0-598c-11ef-8478-2b7584bf8d5a:posture"
    assert posture["timestamp"] == "2024-08-13T15:58:20.353000+00:00"
    assert posture["device_id"] == mapping.device_of("guofdhyjex1feOgbN1d9")
    assert posture["user_id"] == "john.doe@example.com"
    # managed false, ALL_INTERNAL_VOLUMES, BIOMETRIC; `jailbreak: null` says nothing.
    assert _controls(posture) == {
        "managed": False,
        "edr_running": None,
        "disk_encrypted": True,
        "screen_lock": True,
        "jailbroken": None,
    }
    assert posture["os_patch_age_days"] is None


def test_okta_single_sign_on_brings_its_device_posture_beside_the_access(
    mapping: VendorMapping,
) -> None:
    pairs = _pairs(adapt_file("okta", "okta-device-assurance-lookalike.json", mapping).events)
    access, posture = pairs["5a0e7c10-0b1d-11f1-8478-2b7584bf8d01"]
    assert posture is not None
    _same_device_time_and_unit(access, posture)
    # disk_encryption_type NONE and screen_lock_type NONE: both fail, said so.
    assert _controls(posture) == {
        "managed": False,
        "edr_running": None,
        "disk_encrypted": False,
        "screen_lock": False,
        "jailbroken": None,
    }
    access, posture = pairs["5a0e7c10-0b1d-11f1-8478-2b7584bf8d02"]
    assert posture is not None and access["device_id"] == "pc-hq-0142"  # the mapping's alias
    _same_device_time_and_unit(access, posture)
    assert (posture["disk_encrypted"], posture["screen_lock"]) == (
        True,
        True,
    )  # SYSTEM_VOLUME, PASSCODE
    # A device object with no assurance values: an access, and no posture.
    access, posture = pairs["5a0e7c10-0b1d-11f1-8478-2b7584bf8d03"]
    assert access["device_id"] is not None and posture is None


def test_entra_sign_in_speaks_for_managed_only(mapping: VendorMapping) -> None:
    pairs = _pairs(
        adapt_file("entra-signin", "entra-signin-device-detail-lookalike.json", mapping).events
    )
    # isManaged true beside isCompliant false: managed; the failed compliance
    # does not say which control failed, so it names none.
    access, posture = pairs["6b3f1c2e-7a1d-4e8f-9b20-5c4d3e2f1a01"]
    assert posture is not None
    _same_device_time_and_unit(access, posture)
    assert _controls(posture) == {
        "managed": True,
        "edr_running": None,
        "disk_encrypted": None,
        "screen_lock": None,
        "jailbroken": None,
    }
    # isCompliant true with isManaged absent: only an enrolled device is compliant.
    access, posture = pairs["6b3f1c2e-7a1d-4e8f-9b20-5c4d3e2f1a02"]
    assert posture is not None and posture["device_id"] == "pc-hq-0142"
    assert _controls(posture)["managed"] is True
    # isCompliant false, isManaged absent, registered only: nothing said.
    assert pairs["6b3f1c2e-7a1d-4e8f-9b20-5c4d3e2f1a03"][1] is None


def test_entra_sign_in_without_a_device_id_has_no_posture(mapping: VendorMapping) -> None:
    """elastic/integrations' Event Hubs record: `deviceDetail` names no device."""
    run = adapt_file("entra-signin", "entra-signin-logs-elastic.jsonl", mapping)
    assert [e["stream"] for e in run.events] == ["saas_access"]
    assert run.events[0]["device_id"] is None


def test_netskope_device_classification_speaks_for_managed(mapping: VendorMapping) -> None:
    """elastic/integrations' Netskope v2 event: `device_classification: managed`."""
    [(access, posture)] = _pairs(
        adapt_file("netskope", "netskope-events-v2-elastic.jsonl", mapping).events
    ).values()
    assert posture is not None
    _same_device_time_and_unit(access, posture)
    assert access["device_id"] == "desktop-example"  # from `hostname`, as the access's
    assert _controls(posture) == {
        "managed": True,
        "edr_running": None,
        "disk_encrypted": None,
        "screen_lock": None,
        "jailbroken": None,
    }
    pairs = _pairs(
        adapt_file("netskope", "netskope-device-classification-lookalike.jsonl", mapping).events
    )
    unmanaged = pairs["b1c2d3e4f5a6b7c8d9e0f1b3"][1]
    assert unmanaged is not None and unmanaged["managed"] is False
    assert pairs["b1c2d3e4f5a6b7c8d9e0f1b4"][1] is None  # "not configured": says nothing


def test_a_device_seen_only_through_okta_is_judged_not_passed(mapping: VendorMapping) -> None:
    """Through the engine: the failing controls Okta names fire SEP-006; a
    device Okta says passes is still SEP-007, for the controls Okta cannot see."""
    events = adapt_file("okta", "okta-device-assurance-lookalike.json", mapping).events
    engine = Engine(load_policy(POLICY), now=lambda: cases.FIXED_NOW)
    found = engine.run(EventAdapter.validate_python(e) for e in events)
    by_access = {f.evidence_event_ids[0]: f for f in found if f.rule_id in ("SEP-006", "SEP-007")}
    failing = by_access["5a0e7c10-0b1d-11f1-8478-2b7584bf8d01"]
    assert failing.rule_id == "SEP-006"
    assert failing.details["failed_controls"] == ["managed", "disk_encrypted", "screen_lock"]
    assert failing.evidence_event_ids[1:] == ["5a0e7c10-0b1d-11f1-8478-2b7584bf8d01:posture"]
    passing = by_access["5a0e7c10-0b1d-11f1-8478-2b7584bf8d02"]
    assert passing.rule_id == "SEP-007"
    assert passing.details["unknown_controls"] == ["edr_running", "jailbroken", "os_patch_age_days"]
