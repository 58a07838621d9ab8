"""CrowdStrike Falcon Zero Trust Assessment and host details -> `device_posture`.

Two vendor shapes, told apart by their id field (`aid` or `device_id`).

Falcon Zero Trust Assessment API
(`GET /zero-trust-assessment/entities/assessments/v1`; falconpy
`ZeroTrustAssessment.get_assessment`): resources `{"aid", "cid",
"modified_time" (RFC 3339), "event_platform", "product_type_desc",
"sensor_file_status", "assessment": {"overall", "os", "sensor_config"},
"assessment_items": {"os_signals": [...], "sensor_signals": [...]}}`, each
signal `{"signal_id", "signal_name", "group_name", "criteria",
"meets_criteria": "yes" | "no" | "unknown"}`. Pages: `{"meta", "resources": [...], "errors"}`.

The device is the Falcon agent id (`aid`) through the mapping. The sensor
wrote the assessment, so endpoint protection is running unless its file
status says it is not deployed. Which signals decide encryption, screen
lock, MDM enrolment and a current OS is the mapping's
(`crowdstrike_signals`), since signal ids differ by platform and sensor
version: a control none of whose signals is met counts as not met. ZTA says
whether the OS is current, not since when: a current OS is 0 days behind,
any other is taken as a year behind (SEP-006 will fire).

Falcon host details (`GET /devices/entities/devices/v2`; falconpy
`Hosts.get_device_details`): resources `{"device_id", "cid", "hostname",
"platform_name", "os_version", "kernel_version", "last_seen" (RFC 3339),
"status", "reduced_functionality_mode" ("yes" | "no"), "device_policies":
{"prevention": {"applied": bool, ...}, ...}, "policies": [...]}`. They speak
for endpoint protection only: the sensor protects when it is not in reduced
functionality mode and its prevention policy is applied. A Windows host is
aged by its build (`kernel_version`, e.g. 10.0.22631.6199) through the
release table; other platforms give only a marketing name ("Ventura (13)"),
so their age is not reported, like MDM enrolment, encryption and screen lock
(`NOT_REPORTED`: unknown, for the engine to name if no other source
reports it). The posture is as of `last_seen`.
"""

from __future__ import annotations

from typing import Any

from adapters.canonical import NOT_REPORTED, device_posture
from adapters.mapping import Control, VendorMapping
from adapters.records import Adapted, UnrecognisedShape, derived_id, iso_time, text_of

SOURCE = "crowdstrike"
ENVELOPES = ("resources",)
SHAPES = (("aid",), ("assessment",), ("device_id",))  # ZTA; host details.
BEHIND_DAYS = 365


def adapt(record: dict[str, Any], mapping: VendorMapping) -> Adapted:
    if "aid" in record or "assessment" in record:
        return _assessment(record, mapping)
    if "device_id" in record:
        return _host(record, mapping)
    raise UnrecognisedShape(SOURCE, record)


def _assessment(record: dict[str, Any], mapping: VendorMapping) -> Adapted:
    aid = text_of(record, "aid")
    timestamp = iso_time(record.get("modified_time"), "modified_time")
    items = record.get("assessment_items") or {}
    met = {
        key
        for signal in [*(items.get("os_signals") or ()), *(items.get("sensor_signals") or ())]
        if str(signal.get("meets_criteria", "")).lower() == "yes"
        for key in (
            str(signal.get("signal_id", "")).lower(),
            str(signal.get("signal_name", "")).lower(),
        )
        if key
    }

    def control(name: Control) -> bool:
        return any(s.strip().lower() in met for s in mapping.crowdstrike_signals.get(name, []))

    return [
        device_posture(
            mapping,
            source=SOURCE,
            event_id=derived_id(SOURCE, aid, timestamp),
            timestamp=timestamp,
            device_id=mapping.device_of(aid) or aid,
            user_id=None,
            managed=control("managed"),
            edr_running=str(record.get("sensor_file_status", "")).lower() != "not deployed",
            disk_encrypted=control("disk_encrypted"),
            screen_lock=control("screen_lock"),
            os_patch_age_days=0 if control("os_current") else BEHIND_DAYS,
        )
    ]


def _host(record: dict[str, Any], mapping: VendorMapping) -> Adapted:
    aid = text_of(record, "device_id")
    seen = iso_time(record.get("last_seen"), "last_seen")
    return [
        device_posture(
            mapping,
            source=SOURCE,
            event_id=derived_id(SOURCE, aid, seen, "host"),
            timestamp=seen,
            device_id=mapping.device_of(aid) or aid,
            user_id=None,
            os_patch_age_days=_host_patch_age(record, mapping, seen),
            **_host_controls(record),
            aliases=(
                ("falcon_aid", aid),
                ("hostname", record.get("hostname")),
                ("serial", record.get("serial_number")),
            ),
        )
    ]


def _host_controls(record: dict[str, Any]) -> dict[str, bool | None]:
    """What host details say of each control: the sensor's own state only."""
    return {
        "managed": NOT_REPORTED,
        "edr_running": _prevention_applied(record)
        and str(record.get("reduced_functionality_mode", "")).lower() != "yes",
        "disk_encrypted": NOT_REPORTED,
        "screen_lock": NOT_REPORTED,
    }


def _prevention_applied(record: dict[str, Any]) -> bool:
    policies: dict[str, Any] = record.get("device_policies") or {}
    prevention: dict[str, Any] | None = policies.get("prevention")
    if prevention is None:  # older responses list the policies instead
        prevention = next(
            (p for p in record.get("policies") or () if p.get("policy_type") == "prevention"), {}
        )
    return prevention.get("applied") is True


def _host_patch_age(record: dict[str, Any], mapping: VendorMapping, seen: str) -> int | None:
    if str(record.get("platform_name", "")).lower() != "windows":
        return NOT_REPORTED  # no build reported: its age is unknown
    return mapping.patch_age("windows", record.get("kernel_version"), seen, path="kernel_version")
