"""Microsoft Intune managed devices -> `device_posture`.

Vendor schema: Microsoft Graph `managedDevice` resource
(learn.microsoft.com/graph/api/resources/intune-devices-manageddevice):
`id`, `azureADDeviceId`, `userPrincipalName`, `lastSyncDateTime` (ISO 8601,
UTC), `operatingSystem`, `osVersion`, `complianceState`, `isEncrypted`,
`jailBroken` (a string: "True", "False", "Unknown"), `managementState`,
`partnerReportedThreatState`. Pages: `{"value": [...], "@odata.nextLink"}`.

A device record is a snapshot with no event id: the id is derived from the
device and its last sync, so polling the same state twice gives one event.
The posture is as of `lastSyncDateTime`. The device is named by its Entra
device id (what sign-ins carry), or by its Intune id where it has none.
Assumed: screen lock is enforced by the compliance policy, so a device is
taken to lock only when `complianceState` is `compliant`; endpoint
protection runs when the partner (Defender or another MTD) reports an
active state; an unknown jailbreak state on a phone counts as jailbroken.
"""

from __future__ import annotations

from typing import Any

from streams.adapters.canonical import device_posture
from streams.adapters.mapping import VendorMapping, platform_of
from streams.adapters.records import Adapted, derived_id, iso_time, text_of

SOURCE = "intune"
ENVELOPES = ("value",)
SHAPES = (("id", "deviceName"),)  # A Graph managedDevice.
EDR_DOWN = frozenset({"unknown", "deactivated", "unresponsive", "misconfigured", None, ""})


def adapt(record: dict[str, Any], mapping: VendorMapping) -> Adapted:
    intune_id = text_of(record, "id")
    synced = iso_time(record.get("lastSyncDateTime"), "lastSyncDateTime")
    platform = record.get("operatingSystem")
    jailbroken = str(record.get("jailBroken") or "Unknown")
    phone = platform_of(platform) in ("ios", "android")
    user = record.get("userPrincipalName")
    return [
        device_posture(
            mapping,
            source=SOURCE,
            event_id=derived_id(SOURCE, intune_id, synced),
            timestamp=synced,
            device_id=mapping.device_of(record.get("azureADDeviceId"), intune_id) or intune_id,
            user_id=user.strip().lower() if isinstance(user, str) and user.strip() else None,
            managed=record.get("managementState") in (None, "managed"),
            edr_running=record.get("partnerReportedThreatState") not in EDR_DOWN,
            disk_encrypted=record.get("isEncrypted") is True,
            screen_lock=record.get("complianceState") == "compliant",
            os_patch_age_days=mapping.patch_age(
                platform, record.get("osVersion"), synced, path="osVersion"
            ),
            jailbroken=jailbroken == "True" or (phone and jailbroken == "Unknown"),
        )
    ]
