"""Google Workspace device audit (endpoint management) -> `device_posture`.

Vendor schema: Admin SDK Reports API, `applicationName=mobile`
(developers.google.com/admin-sdk/reports/v1/appendix/activity/mobile), as
`adapters/google_reports.py` reads activities. Device events carry
`DEVICE_ID`, `DEVICE_TYPE` (`ANDROID`, `IOS`, `WINDOWS`, ...), `OS_VERSION`,
`SECURITY_PATCH_LEVEL` (Android), `USER_EMAIL`, and, where the event is about
them, `DEVICE_COMPLIANCE` (`COMPLIANT`, `NON_COMPLIANT`) and
`DEVICE_COMPROMISED_STATE` (`COMPROMISED`, `NOT_COMPROMISED`).

An event that reports compliance or the compromised state is a posture of
its device as of the activity's time: compromised -> `jailbroken`;
compliant -> screen lock enforced (as the Intune adapter assumes of a
compliance policy). The OS age is the Android security patch level's age
where it is a date, else the OS version through the release table. Google
does not report MDM enrolment, encryption or endpoint protection in these
events (`NOT_REPORTED`). Device events without either parameter (syncs,
app reports, account changes) are skipped by name; activities are read by
their parameters, whatever `applicationName` a shipper gives them.
Context-Aware Access denials (`ACCESS_DENY_EVENT`,
developers.google.com/admin-sdk/reports/v1/appendix/activity/context-aware-access)
name the access levels a device missed, not which control: they are counted
as skips too.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from adapters import google_reports
from adapters.canonical import NOT_REPORTED, device_posture
from adapters.mapping import VendorMapping
from adapters.records import (
    Adapted,
    CanonicalEvent,
    Skip,
    Unmappable,
    derived_id,
    field,
)

SOURCE = "google-workspace-devices"
ENVELOPES = google_reports.ENVELOPES
SHAPES = google_reports.SHAPES
POSTURE = ("DEVICE_COMPLIANCE", "DEVICE_COMPROMISED_STATE")


def adapt(record: dict[str, Any], mapping: VendorMapping) -> Adapted:
    application = google_reports.application_of(SOURCE, record)
    events = google_reports.events_of(record)
    found: list[CanonicalEvent] = []
    for index, event in enumerate(events):
        params = google_reports.parameters(event)
        if "DEVICE_ID" in params and any(p in params for p in POSTURE):
            found.append(_posture(record, index, params, mapping))
    if not found:
        names = ",".join(sorted({str(e.get("name")) for e in events})) or "none"
        return Skip(f"{application} {names}")
    return found


def _posture(
    record: dict[str, Any], index: int, params: dict[str, Any], mapping: VendorMapping
) -> CanonicalEvent:
    timestamp, qualifier = google_reports.activity_time(record)
    device = str(params["DEVICE_ID"])
    user = params.get("USER_EMAIL") or field(record, "actor.email")
    return device_posture(
        mapping,
        source=SOURCE,
        event_id=derived_id(SOURCE, timestamp, qualifier, index),
        timestamp=timestamp,
        device_id=mapping.device_of(device) or device,
        user_id=user.strip().lower() if isinstance(user, str) and user.strip() else None,
        os_patch_age_days=_patch_age(params, mapping, timestamp),
        **_controls(params),
        aliases=(("google_device_id", device), ("serial", params.get("SERIAL_NUMBER"))),
    )


def _controls(params: dict[str, Any]) -> dict[str, bool | None]:
    """What a device event says of each control."""
    return {
        "managed": NOT_REPORTED,
        "edr_running": NOT_REPORTED,
        "disk_encrypted": NOT_REPORTED,
        "screen_lock": params.get("DEVICE_COMPLIANCE") == "COMPLIANT",
        "jailbroken": params.get("DEVICE_COMPROMISED_STATE") == "COMPROMISED",
    }


def _patch_age(params: dict[str, Any], mapping: VendorMapping, at: str) -> int:
    level = params.get("SECURITY_PATCH_LEVEL")
    try:
        patched = date.fromisoformat(str(level))
    except ValueError:
        patched = None
    if patched is not None:
        return max(0, (date.fromisoformat(at[:10]) - patched).days)
    platform = str(params.get("DEVICE_TYPE") or "").lower()
    if not platform:
        raise Unmappable("events.parameters.DEVICE_TYPE", "missing: the OS cannot be aged")
    return mapping.patch_age(
        platform, params.get("OS_VERSION"), at, path="events.parameters.OS_VERSION"
    )
