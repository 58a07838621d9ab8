"""Microsoft Intune managed devices -> `device_posture`.

Two vendor shapes, told apart by their fields:

- Microsoft Graph `managedDevice` resource
  (learn.microsoft.com/graph/api/resources/intune-devices-manageddevice):
  `id`, `azureADDeviceId`, `userPrincipalName`, `lastSyncDateTime` (ISO 8601,
  UTC), `operatingSystem`, `osVersion`, `complianceState`, `isEncrypted`,
  `jailBroken` (a string: "True", "False", "Unknown"), `managementState`,
  `partnerReportedThreatState`. Pages: `{"value": [...], "@odata.nextLink"}`.
- Intune's diagnostic settings export to Azure Monitor (Event Hubs, a storage
  account), category `Devices`: `{"time", "category", "operationName",
  "properties": {...}}` whose properties are the columns of the
  `IntuneDevices` table
  (learn.microsoft.com/azure/azure-monitor/reference/tables/intunedevices):
  `DeviceId` (Intune), `ReferenceId` (Entra device id), `UPN`, `OS`,
  `OSVersion`, `CompliantState`, `EncryptionStatusString`, `JailBroken`,
  `ManagedBy`, `LastContact`. Batches: `{"records": [...]}`. The other
  categories (`AuditLogs`, `OperationalLogs`, `DeviceComplianceOrg`) carry no
  posture of a device and are skipped.

A device record is a snapshot with no event id: the id is derived from the
device and its last sync (last contact), so polling the same state twice
gives one event. The device is named by its Entra device id (what sign-ins
carry), or by its Intune id where it has none.
Assumed: screen lock is enforced by the compliance policy, so a device is
taken to lock only when it is compliant; endpoint protection runs when the
partner (Defender or another MTD) reports an active state; an unknown
jailbreak state on a phone counts as jailbroken. The diagnostic export does
not report endpoint protection: it is unknown (`NOT_REPORTED`).
"""

from __future__ import annotations

from typing import Any

from adapters.canonical import NOT_REPORTED, device_posture
from adapters.mapping import VendorMapping, platform_of
from adapters.records import Adapted, Skip, UnrecognisedShape, derived_id, iso_time, text_of

SOURCE = "intune"
ENVELOPES = ("value", "records")
# A Graph managedDevice; an Azure Monitor diagnostic export record.
SHAPES = (("id", "deviceName"), ("category", "properties"))
EDR_DOWN = frozenset({"unknown", "deactivated", "unresponsive", "misconfigured", None, ""})
ENCRYPTED = frozenset({"encrypted", "true", "yes"})


def adapt(record: dict[str, Any], mapping: VendorMapping) -> Adapted:
    if "id" in record and ("lastSyncDateTime" in record or "complianceState" in record):
        return _managed_device(record, mapping)
    if "category" in record and "properties" in record:
        return _diagnostic(record, mapping)
    raise UnrecognisedShape(SOURCE, record)


def _managed_device(record: dict[str, Any], mapping: VendorMapping) -> Adapted:
    intune_id = text_of(record, "id")
    synced = iso_time(record.get("lastSyncDateTime"), "lastSyncDateTime")
    user = record.get("userPrincipalName")
    return [
        device_posture(
            mapping,
            source=SOURCE,
            event_id=derived_id(SOURCE, intune_id, synced),
            timestamp=synced,
            device_id=mapping.device_of(record.get("azureADDeviceId"), intune_id) or intune_id,
            user_id=user.strip().lower() if isinstance(user, str) and user.strip() else None,
            os_patch_age_days=mapping.patch_age(
                record.get("operatingSystem"), record.get("osVersion"), synced, path="osVersion"
            ),
            **_graph_controls(record),
            aliases=(
                ("intune_device_id", intune_id),
                ("entra_device_id", record.get("azureADDeviceId")),
                ("serial", record.get("serialNumber")),
                ("hostname", record.get("deviceName")),
            ),
        )
    ]


def _graph_controls(record: dict[str, Any]) -> dict[str, bool | None]:
    """What Graph's managedDevice says of each control."""
    return {
        "managed": record.get("managementState") in (None, "managed"),
        "edr_running": record.get("partnerReportedThreatState") not in EDR_DOWN,
        "disk_encrypted": record.get("isEncrypted") is True,
        "screen_lock": record.get("complianceState") == "compliant",
        "jailbroken": _jailbroken(record.get("jailBroken"), record.get("operatingSystem")),
    }


def _diagnostic(record: dict[str, Any], mapping: VendorMapping) -> Adapted:
    category = str(record.get("category") or "")
    if category.lower() != "devices":
        return Skip(f"diagnostic category {category}")
    properties = record.get("properties")
    if not isinstance(properties, dict):
        raise UnrecognisedShape(SOURCE, record)
    intune_id = text_of(properties, "DeviceId")
    contact = properties.get("LastContact") or record.get("time")
    seen = iso_time(contact, "properties.LastContact")
    path = "properties.OSVersion"
    return [
        device_posture(
            mapping,
            source=SOURCE,
            event_id=derived_id(SOURCE, intune_id, seen),
            timestamp=seen,
            device_id=mapping.device_of(properties.get("ReferenceId"), intune_id) or intune_id,
            user_id=_user(properties.get("UPN")),
            os_patch_age_days=mapping.patch_age(
                properties.get("OS"), properties.get("OSVersion"), seen, path=path
            ),
            **_diagnostic_controls(properties),
            aliases=(
                ("intune_device_id", intune_id),
                ("entra_device_id", properties.get("ReferenceId")),
                ("serial", properties.get("SerialNumber")),
                ("hostname", properties.get("DeviceName")),
            ),
        )
    ]


def _diagnostic_controls(properties: dict[str, Any]) -> dict[str, bool | None]:
    """What the IntuneDevices export says of each control (no endpoint
    protection column)."""
    managed_by = str(properties.get("ManagedBy") or "").strip().lower()
    is_managed = properties.get("IsManaged", properties.get("GraphDeviceIsManaged"))
    encryption = str(properties.get("EncryptionStatusString") or "").strip().lower()
    return {
        "managed": is_managed if isinstance(is_managed, bool) else managed_by in ("intune", "mdm"),
        "edr_running": NOT_REPORTED,
        "disk_encrypted": encryption in ENCRYPTED,
        "screen_lock": str(properties.get("CompliantState") or "").lower() == "compliant",
        "jailbroken": _jailbroken(properties.get("JailBroken"), properties.get("OS")),
    }


def _jailbroken(value: Any, platform: Any) -> bool:
    state = value if value in ("True", "False") else "Unknown"
    if state != "Unknown":
        return state == "True"
    return platform_of(platform if isinstance(platform, str) else None) in ("ios", "android")


def _user(value: Any) -> str | None:
    return value.strip().lower() if isinstance(value, str) and value.strip() else None
