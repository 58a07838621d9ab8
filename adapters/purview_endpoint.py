"""Microsoft Purview Endpoint DLP and Information Protection audit records -> `dlp_alert`.

Vendor schema: Office 365 Management Activity API
(learn.microsoft.com/office/office-365-management-api/office-365-management-activity-api-schema),
the records of devices onboarded to Purview:

- Endpoint DLP (`RecordType` 63, `Workload` `Endpoint`): `Id`, `CreationTime`
  (ISO 8601 without a zone, UTC), `Operation` (`FileUploadedToCloud`,
  `FileCopiedToRemovableMedia`, `FilePrinted`, ...), `UserId`, `ClientIP`,
  `DeviceName`, `MDATPDeviceId`, `ObjectId` (the file's path), `Sha256`,
  `FileSize`, `TargetDomain` (the cloud service an upload went to),
  `EnforcementMode` (0 none, 1 audit, 2 warn, 3 warn and bypass, 4 block),
  `PolicyMatchInfo`, and `SensitiveInfoTypeData[]` (`SensitiveInfoTypeId`,
  `SensitiveInfoTypeName`, `Count`, `Confidence`).
- Information Protection (`Workload` `Aip`: `AipDiscover` 93,
  `AipSensitivityLabelAction` 94, `AipProtectionAction` 95, ...; the
  AipDiscover reference, learn.microsoft.com/azure/information-protection/audit-logs):
  the same common fields with the device in `Common.DeviceName` and the
  types found in `SensitiveInfoTypeData[]`.

Mapped: an endpoint action that moves a file off the device and found
sensitive types (upload to a cloud service -> `saas_upload` to the app of
`TargetDomain`; removable media -> `usb`; print -> `print`; network share,
clipboard, Bluetooth, remote desktop -> `other`), and an Information
Protection use (`Access`, a label or protection action) of a file with
sensitive types -> `other`, which reaches SEP-003/004 only by an upload of
the same user within the correlation window. Skipped, by kind: a blocked
action (the data did not leave), a record without sensitive types, other
endpoint operations (file read, created, renamed), Information Protection
discovery at rest and heartbeats. Type names (or GUIDs, where the record has
only `SensitiveInfoTypeId`) go through the mapping's `data_types`; matched
values are not read.
"""

from __future__ import annotations

from typing import Any

from adapters.canonical import dlp_alert, file_object, user_of
from adapters.mapping import VendorMapping
from adapters.records import Adapted, Skip, UnrecognisedShape, field, iso_time, text_of

SOURCE = "purview-endpoint"
ENVELOPES = ("records",)
SHAPES = (("Workload", "Operation"),)  # The audit log's common schema.

CHANNELS = {
    "FileUploadedToCloud": "saas_upload",
    "FileCopiedToRemovableMedia": "usb",
    "FileCreatedOnRemovableMedia": "usb",
    "FilePrinted": "print",
    "Print": "print",
    "FileCopiedToNetworkShare": "other",
    "FileCreatedOnNetworkShare": "other",
    "FileCopiedToClipboard": "other",
    "FileTransferredByBluetooth": "other",
    "RemoteDesktopAccess": "other",
    "FileAccessedByUnallowedApp": "other",
}
IP_OPERATIONS = frozenset(
    {"Access", "SensitivityLabelApplied", "SensitivityLabelUpdated", "ProtectionApplied"}
)
BLOCK = 4


def adapt(record: dict[str, Any], mapping: VendorMapping) -> Adapted:
    workload = record.get("Workload")
    operation = str(record.get("Operation") or "")
    if workload == "Endpoint":
        channel = CHANNELS.get(operation)
        device = record.get("DeviceName") or record.get("MDATPDeviceId")
        if channel is None:
            return Skip(f"endpoint {operation}")
    elif workload == "Aip":
        if operation not in IP_OPERATIONS:
            return Skip(f"information protection {operation}")
        channel, device = "other", field(record, "Common.DeviceName")
    else:
        raise UnrecognisedShape(SOURCE, record)
    if record.get("EnforcementMode") == BLOCK:
        return Skip(f"blocked {operation}")
    names, count = _sensitive_types(record.get("SensitiveInfoTypeData"))
    if not names:
        return Skip(f"{operation} without sensitive types")
    return [_alert(record, mapping, channel, device, names, count)]


def _alert(
    record: dict[str, Any],
    mapping: VendorMapping,
    channel: str,
    device: Any,
    names: list[str],
    count: int,
) -> dict[str, Any]:
    upload = channel == "saas_upload"
    target = record.get("TargetDomain")
    return dlp_alert(
        mapping,
        source=SOURCE,
        event_id=text_of(record, "Id"),
        timestamp=iso_time(record.get("CreationTime"), "CreationTime"),
        user_id=user_of(record.get("UserId"), "UserId"),
        channel=channel,
        saas_app=mapping.app_or_passthrough(None, target, path="TargetDomain") if upload else None,
        data_types=mapping.data_types_of(names),
        match_count=count,
        device_id=mapping.device_of(device if isinstance(device, str) else None),
        object=file_object(
            _file_name(record.get("ObjectId")), record.get("Sha256"), record.get("FileSize")
        ),
        ip=record.get("ClientIP") or None,
        ip_path="ClientIP",
    )


def _sensitive_types(data: Any) -> tuple[list[str], int]:
    """Type names (or ids) and the matches counted once per type."""
    counts: dict[str, int] = {}
    for info in data if isinstance(data, list) else ():
        if not isinstance(info, dict):
            continue
        name = info.get("SensitiveInfoTypeName") or info.get("SensitiveInfoTypeId")
        if name:
            counts[str(name)] = max(counts.get(str(name), 0), _int(info.get("Count")))
    return list(counts), sum(counts.values())


def _int(value: Any) -> int:
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return 0


def _file_name(path: Any) -> str | None:
    if not isinstance(path, str) or not path:
        return None
    return path.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1] or None
