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
    entra_id = record.get("azureADDeviceId")
    managed, edr_running, disk_encrypted, screen_lock, jailbroken = _graph_controls(record)
    return [
        device_posture(
            mapping,
            source=SOURCE,
            event_id=derived_id(SOURCE, intune_id, synced),
            timestamp=synced,
            device_id=mapping.device_of(entra_id, intune_id) or intune_id,
            user_id=_user(record.get("userPrincipalName")),
            os_patch_age_days=mapping.patch_age(
                record.get("operatingSystem"), record.get("osVersion"), synced, path="osVersion"
            ),
            managed=managed,
            edr_running=edr_running,
            disk_encrypted=disk_encrypted,
            screen_lock=screen_lock,
            jailbroken=jailbroken,
            aliases=(
                ("intune_device_id", intune_id),
                ("entra_device_id", entra_id),
                ("serial", record.get("serialNumber")),
                ("hostname", record.get("deviceName")),
            ),
        )
    ]


# managed, edr_running, disk_encrypted, screen_lock, jailbroken: a tuple, passed
# as keywords (a dict passed with ** costs Python a second dict a record).
Controls = tuple[bool | None, bool | None, bool | None, bool | None, bool | None]


def _graph_controls(record: dict[str, Any]) -> Controls:
    """What Graph's managedDevice says of each control."""
    return (
        record.get("managementState") in (None, "managed"),
        record.get("partnerReportedThreatState") not in EDR_DOWN,
        record.get("isEncrypted") is True,
        record.get("complianceState") == "compliant",
        _jailbroken(record.get("jailBroken"), record.get("operatingSystem")),
    )


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
    managed, edr_running, disk_encrypted, screen_lock, jailbroken = _diagnostic_controls(properties)
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
            managed=managed,
            edr_running=edr_running,
            disk_encrypted=disk_encrypted,
            screen_lock=screen_lock,
            jailbroken=jailbroken,
            aliases=(
                ("intune_device_id", intune_id),
                ("entra_device_id", properties.get("ReferenceId")),
                ("serial", properties.get("SerialNumber")),
                ("hostname", properties.get("DeviceName")),
            ),
        )
    ]


def _diagnostic_controls(properties: dict[str, Any]) -> Controls:
    """What the IntuneDevices export says of each control (no endpoint
    protection column)."""
    managed_by = str(properties.get("ManagedBy") or "").strip().lower()
    is_managed = properties.get("IsManaged", properties.get("GraphDeviceIsManaged"))
    encryption = str(properties.get("EncryptionStatusString") or "").strip().lower()
    return (
        is_managed if isinstance(is_managed, bool) else managed_by in ("intune", "mdm"),
        NOT_REPORTED,
        encryption in ENCRYPTED,
        str(properties.get("CompliantState") or "").lower() == "compliant",
        _jailbroken(properties.get("JailBroken"), properties.get("OS")),
    )


def _jailbroken(value: Any, platform: Any) -> bool:
    state = value if value in ("True", "False") else "Unknown"
    if state != "Unknown":
        return state == "True"
    return platform_of(platform if isinstance(platform, str) else None) in ("ios", "android")


def _user(value: Any) -> str | None:
    return (value.strip().lower() or None) if isinstance(value, str) else None
