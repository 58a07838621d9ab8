"""Microsoft 365 Management Activity API audit records -> `saas_access`, `dlp_alert`.

Vendor schema: Office 365 Management Activity API schema
(learn.microsoft.com/office/office-365-management-api/office-365-management-activity-api-schema):
common fields `Id`, `RecordType`, `CreationTime` (ISO 8601 without a zone;
documented as UTC), `Operation`, `Workload`, `UserId`, `ClientIP`; SharePoint
file operations add `SourceFileName`, `SiteUrl`, `ObjectId`,
`DeviceDisplayName`; DLP records (`Operation` `DlpRuleMatch`) carry
`PolicyDetails[].Rules[].ConditionsMatched.SensitiveInformation[]` with each
type's name, count and, where evidence is on, `DetectedValues`.

Mapped: SharePoint and OneDrive file operations (view, download, upload,
edit, delete, share), Teams session starts (login), Exchange sends (share),
DLP rule matches in SharePoint/OneDrive (`saas_upload` to that app) and
Exchange (`email`). Sign-ins (`UserLoggedIn`) are the Entra adapter's; other
operations are skipped. Content blobs are JSON arrays of records.
"""

from __future__ import annotations

from typing import Any

from streams.adapters.canonical import dlp_alert, file_object, saas_access, user_of
from streams.adapters.mapping import VendorMapping
from streams.adapters.records import Adapted, Skip, Unmappable, iso_time, text_of

SOURCE = "m365"
ENVELOPES = ()

FILE_ACTIONS = {
    "FileAccessed": "view",
    "FileAccessedExtended": "view",
    "FilePreviewed": "view",
    "FileDownloaded": "download",
    "FileSyncDownloadedFull": "download",
    "FileUploaded": "upload",
    "FileSyncUploadedFull": "upload",
    "FileModified": "edit",
    "FileModifiedExtended": "edit",
    "FileRenamed": "edit",
    "FileCheckedIn": "edit",
    "FileDeleted": "delete",
    "FileRecycled": "delete",
    "SharingSet": "share",
    "SharingInvitationCreated": "share",
    "AnonymousLinkCreated": "share",
    "CompanyLinkCreated": "share",
    "SecureLinkCreated": "share",
    "AddedToSecureLink": "share",
}
OTHER_ACTIONS = {
    ("MicrosoftTeams", "TeamsSessionStarted"): "login",
    ("Exchange", "Send"): "share",
    ("Exchange", "SendAs"): "share",
    ("Exchange", "SendOnBehalf"): "share",
}
DLP_OPERATIONS = ("DlpRuleMatch",)
FILE_WORKLOADS = ("SharePoint", "OneDrive")


def adapt(record: dict[str, Any], mapping: VendorMapping) -> Adapted:
    operation = record.get("Operation")
    workload = record.get("Workload")
    if operation in DLP_OPERATIONS:
        return [_dlp(record, mapping, workload)]
    if workload in FILE_WORKLOADS and operation in FILE_ACTIONS:
        action = FILE_ACTIONS[operation]
    elif (found := OTHER_ACTIONS.get((str(workload), str(operation)))) is not None:
        action = found
    else:
        return Skip(f"{workload} {operation}")
    name = record.get("SourceFileName")
    return [
        saas_access(
            mapping,
            source=SOURCE,
            event_id=text_of(record, "Id"),
            timestamp=iso_time(record.get("CreationTime"), "CreationTime"),
            user_id=user_of(record.get("UserId"), "UserId"),
            saas_app=mapping.app_or_passthrough(workload, path="Workload"),
            action=action,
            ip=record.get("ClientIP") or record.get("ClientIPAddress"),
            ip_path="ClientIP",
            device_id=mapping.device_of(record.get("DeviceDisplayName")),
            object=file_object(name, size=record.get("FileSizeBytes")) if name else None,
        )
    ]


def _dlp(record: dict[str, Any], mapping: VendorMapping, workload: str | None) -> dict[str, Any]:
    names: list[str] = []
    matched: list[str] = []
    count = 0
    for policy in record.get("PolicyDetails") or ():
        for rule in policy.get("Rules") or ():
            for info in (rule.get("ConditionsMatched") or {}).get("SensitiveInformation") or ():
                name = info.get("SensitiveInformationTypeName") or info.get("SensitiveType")
                if name:
                    names.append(str(name))
                count += int(info.get("Count") or 0)
                detections = info.get("SensitiveInformationDetections") or {}
                matched += [str(v.get("Value")) for v in detections.get("DetectedValues") or ()]
    if not names:
        raise Unmappable(
            "PolicyDetails.Rules.ConditionsMatched.SensitiveInformation",
            "no sensitive information type matched",
        )
    sharepoint = record.get("SharePointMetaData") or {}
    exchange = record.get("ExchangeMetaData") or {}
    email = workload == "Exchange"
    return dlp_alert(
        mapping,
        source=SOURCE,
        event_id=text_of(record, "Id"),
        timestamp=iso_time(record.get("CreationTime"), "CreationTime"),
        user_id=user_of(record.get("UserId") or exchange.get("From"), "UserId"),
        channel="email" if email else "saas_upload",
        saas_app=(
            mapping.app_of(workload)
            if email
            else mapping.app_or_passthrough(workload, path="Workload")
        ),
        data_types=mapping.data_types_of(names),
        match_count=count,
        object=file_object(sharepoint.get("FileName") or exchange.get("Subject")),
        matched=matched,
    )
