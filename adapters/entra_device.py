"""Microsoft Graph `device` objects (Microsoft Entra ID) -> `device_posture`.

Vendor schema: Microsoft Graph `device` resource
(learn.microsoft.com/graph/api/resources/device; `GET /devices`): `id`,
`deviceId` (the Entra device id, as sign-ins and Intune's `azureADDeviceId`
carry it), `displayName`, `operatingSystem`, `operatingSystemVersion`,
`isCompliant`, `isManaged`, `isRooted` (beta), `trustType`,
`approximateLastSignInDateTime` (ISO 8601, UTC). Pages: `{"value": [...],
"@odata.nextLink"}`.

Entra speaks for MDM management (`isManaged`), compliance with the MDM
compliance policy (`isCompliant`), a rooted phone (`isRooted`) and the OS
version (through the release table). As for Intune, screen lock is taken to
be enforced by the compliance policy, so a device locks only when it is
compliant; encryption and endpoint protection are not reported
(`NOT_REPORTED`). A device object is a snapshot: it is dated by the
device's last sign-in, and its id derived from the device and that time. A
device with no sign-in time is a dead letter: its state has no date.
"""

from __future__ import annotations

from typing import Any, TypedDict

from adapters.canonical import NOT_REPORTED, device_posture
from adapters.mapping import VendorMapping
from adapters.records import Adapted, UnrecognisedShape, derived_id, iso_time, text_of

SOURCE = "entra-device"
ENVELOPES = ("value",)
SHAPES = (("id", "operatingSystem"),)  # A Graph device.


def adapt(record: dict[str, Any], mapping: VendorMapping) -> Adapted:
    if "id" not in record or "operatingSystem" not in record:
        raise UnrecognisedShape(SOURCE, record)
    object_id = text_of(record, "id")
    seen = iso_time(record.get("approximateLastSignInDateTime"), "approximateLastSignInDateTime")
    return [
        device_posture(
            mapping,
            source=SOURCE,
            event_id=derived_id(SOURCE, object_id, seen),
            timestamp=seen,
            device_id=mapping.device_of(record.get("deviceId"), object_id) or object_id,
            user_id=None,
            os_patch_age_days=mapping.patch_age(
                record.get("operatingSystem"),
                record.get("operatingSystemVersion"),
                seen,
                path="operatingSystemVersion",
            ),
            **_controls(record),
        )
    ]


class _Controls(TypedDict):
    managed: bool | None
    edr_running: bool | None
    disk_encrypted: bool | None
    screen_lock: bool | None
    jailbroken: bool | None


def _controls(record: dict[str, Any]) -> _Controls:
    """What the directory's device object says of each control."""
    return {
        "managed": record.get("isManaged") is True,
        "edr_running": NOT_REPORTED,
        "disk_encrypted": NOT_REPORTED,
        "screen_lock": record.get("isCompliant") is True,
        "jailbroken": record.get("isRooted") is True,
    }
