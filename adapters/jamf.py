"""Jamf Pro computer inventory -> `device_posture`.

Vendor schema: Jamf Pro API, computer inventory (`GET
/api/v1/computers-inventory` with `section=` GENERAL, DISK_ENCRYPTION,
SECURITY, OPERATING_SYSTEM and USER_AND_LOCATION, and
`/api/v1/computers-inventory-detail/{id}`; developer.jamf.com/jamf-pro/reference):
`{"id", "udid", "general": {"name", "platform", "reportDate",
"lastContactTime", "remoteManagement": {"managed"}}, "diskEncryption":
{"bootPartitionEncryptionDetails": {"partitionFileVault2State"}},
"security": {"sipStatus", "gatekeeperStatus", "firewallEnabled", ...},
"operatingSystem": {"name", "version", "build", "fileVault2Status"},
"userAndLocation": {"email"}}`. Pages: `{"totalCount", "results": [...]}`.
Sections not requested come as null.

The posture is as of the last inventory report (`general.reportDate`, else
the last check-in). The device is its `udid` through the mapping (else the
computer name). Jamf speaks for: MDM management (`remoteManagement.managed`),
FileVault (the boot partition encrypted, or `fileVault2Status` of all or boot
encrypted), the OS version (through the release table), and the OS's
integrity: System Integrity Protection or Gatekeeper disabled counts as
`jailbroken`. It does not report endpoint protection or screen lock
(`NOT_REPORTED`); the firewall has no canonical control and is not read. A
record without the GENERAL or OPERATING_SYSTEM section cannot give a posture:
a dead letter saying which section to request.
"""

from __future__ import annotations

from typing import Any

from adapters.canonical import NOT_REPORTED, device_posture
from adapters.mapping import VendorMapping
from adapters.records import (
    Adapted,
    Unmappable,
    UnrecognisedShape,
    derived_id,
    field,
    iso_time,
    text_of,
)

SOURCE = "jamf"
ENVELOPES = ("results",)
SHAPES = (("udid", "general"),)  # A computer inventory record.
ENCRYPTED = frozenset({"ENCRYPTED"})
FILEVAULT_ON = frozenset({"ALL_ENCRYPTED", "BOOT_ENCRYPTED"})


def adapt(record: dict[str, Any], mapping: VendorMapping) -> Adapted:
    if "udid" not in record or "general" not in record:
        raise UnrecognisedShape(SOURCE, record)
    general = _section(record, "general", "GENERAL")
    system = _section(record, "operatingSystem", "OPERATING_SYSTEM")
    computer = text_of(record, "id")
    reported = iso_time(
        general.get("reportDate") or general.get("lastContactTime"), "general.reportDate"
    )
    email = field(record, "userAndLocation.email")
    return [
        device_posture(
            mapping,
            source=SOURCE,
            event_id=derived_id(SOURCE, computer, reported),
            timestamp=reported,
            device_id=mapping.device_of(record.get("udid"), general.get("name")) or computer,
            user_id=email.strip().lower() if isinstance(email, str) and email.strip() else None,
            os_patch_age_days=mapping.patch_age(
                general.get("platform") or system.get("name"),
                system.get("version"),
                reported,
                path="operatingSystem.version",
            ),
            **_controls(record, general, system),
            aliases=(
                ("jamf_udid", record.get("udid")),
                ("serial", field(record, "hardware.serialNumber")),
                ("hostname", general.get("name")),
            ),
        )
    ]


def _controls(
    record: dict[str, Any], general: dict[str, Any], system: dict[str, Any]
) -> dict[str, bool | None]:
    """What Jamf's inventory says of each control."""
    security = record.get("security") or {}
    boot = field(record, "diskEncryption.bootPartitionEncryptionDetails.partitionFileVault2State")
    return {
        "managed": field(general, "remoteManagement.managed") is True,
        "edr_running": NOT_REPORTED,
        "disk_encrypted": boot in ENCRYPTED or system.get("fileVault2Status") in FILEVAULT_ON,
        "screen_lock": NOT_REPORTED,
        "jailbroken": security.get("sipStatus") == "DISABLED"
        or security.get("gatekeeperStatus") == "DISABLED",
    }


def _section(record: dict[str, Any], key: str, name: str) -> dict[str, Any]:
    section = record.get(key)
    if not isinstance(section, dict):
        raise Unmappable(key, f"the {name} section is missing: request it (section={name})")
    return section
