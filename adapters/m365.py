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
Exchange (`email`), whatever the case of `DlpRuleMatch`, for the person in
`From` where `UserId` is the DLP service; a sensitive type matched by several
rules is counted once. A match carries `match_ref`: its `Workload`,
`ObjectId` (the document or message) and the `RuleId`s that matched.
`DlpRuleUndo` (an override, a false positive, a document or policy change)
becomes a retraction naming the same: the person, workload, object and the
rules it undoes (`ExceptionInfo.Rules`, else the `PolicyDetails` rules it
repeats), with the vendor's reason; the worker resolves the findings of that
match (streams/retractions.py). Microsoft documents no link from an undo to
the match's `Id`, so none is relied on: the undo's own event id is its `Id`
with `:undo`, as the published undo repeats the match's `Id`.
Sign-ins (`UserLoggedIn`) are the Entra adapter's; other operations are
skipped. Content blobs are JSON arrays of records.

`share_target` (SEP-011) on SharePoint/OneDrive shares: `AnonymousLinkCreated`
is public, `CompanyLinkCreated` internal (a link for the organisation);
`AddedToSecureLink`, `SharingInvitationCreated` and `SharingSet` read the
target: `TargetUserOrGroupType` `Guest` is external, with the domain of
`TargetUserOrGroupName` (an address, or a guest account's
`name_domain#ext#@tenant`), `Member` internal; a `SharingLinks.<item>.
<kind>.<id>` group is public for `Anonymous*` links and internal for
`Organization*` links. Anything else (`SecureLinkCreated`, which names nobody
yet, a security group, a `Flexible` link) does not say: null. A guest whose
domain is one of the mapping's `internal_domains` is internal. Exchange
sends name recipients only in the message trace, not here: null.
"""

from __future__ import annotations

from typing import Any

from adapters.canonical import (
    SHARE_NOT_SAID,
    SHARE_PUBLIC,
    ShareTarget,
    dlp_alert,
    file_object,
    match_ref_of,
    saas_access,
    shared_with,
    user_of,
)
from adapters.mapping import VendorMapping
from adapters.records import Adapted, Skip, Unmappable, iso_time, masked, text_of

SOURCE = "m365"
ENVELOPES = ()
SHAPES = (("RecordType", "Operation"),)  # The common schema: every record has both.

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
# Exchange writes `DlpRuleMatch`, SharePoint and OneDrive `DLPRuleMatch`
# (the schema page's DLP examples show both): compared without case.
DLP_OPERATIONS = frozenset({"dlprulematch"})
DLP_UNDO_OPERATIONS = frozenset({"dlpruleundo"})
FILE_WORKLOADS = ("SharePoint", "OneDrive")
# DLP records name the service that evaluated the policy as `UserId`
# (`DlpAgent` in Exchange, `DlpPolicyEventBasedAssistant...` in SharePoint
# and OneDrive): the person is the item's sender or last modifier, `From`.
DLP_SERVICE_ACCOUNTS = ("dlpagent", "dlppolicyeventbasedassistant")


def adapt(record: dict[str, Any], mapping: VendorMapping) -> Adapted:
    operation = record.get("Operation")
    workload = record.get("Workload")
    if str(operation).lower() in DLP_OPERATIONS:
        return [_dlp(record, mapping, workload)]
    if str(operation).lower() in DLP_UNDO_OPERATIONS:
        return [_undo(record, mapping, workload)]
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
            share=_share(record, mapping, operation) if action == "share" else SHARE_NOT_SAID,
        )
    ]


LINK_OPERATIONS: dict[str, ShareTarget] = {
    "AnonymousLinkCreated": SHARE_PUBLIC,
    "CompanyLinkCreated": ("internal", None),
}
TARGETED_OPERATIONS = frozenset({"AddedToSecureLink", "SharingInvitationCreated", "SharingSet"})


def _share(record: dict[str, Any], mapping: VendorMapping, operation: Any) -> ShareTarget:
    """What a SharePoint/OneDrive share reached (module docstring)."""
    if operation in LINK_OPERATIONS:
        return LINK_OPERATIONS[operation]
    if operation not in TARGETED_OPERATIONS:
        return SHARE_NOT_SAID
    kind = record.get("TargetUserOrGroupType")
    name = record.get("TargetUserOrGroupName")
    name = name.strip() if isinstance(name, str) else ""
    if kind == "Guest":
        # A guest account's own name: `alice_fabrikam.com#EXT#@tenant...`.
        guest = (
            name.lower().split("#ext#", 1)[0].rsplit("_", 1)[-1]
            if "#ext#" in name.lower()
            else name
        )
        found = shared_with(mapping, guest)
        return found if found[0] else ("external", None)
    if kind == "Member":
        return ("internal", shared_with(mapping, name)[1])
    if name.startswith("SharingLinks."):
        link = name.split(".")[2] if name.count(".") >= 3 else ""
        if link.startswith("Anonymous"):
            return SHARE_PUBLIC
        if link.startswith("Organization"):
            return ("internal", None)
    return SHARE_NOT_SAID


def _dlp(record: dict[str, Any], mapping: VendorMapping, workload: str | None) -> dict[str, Any]:
    names: list[str] = []
    matched: list[str] = []
    # Every rule of every policy that matched lists the types it saw, so one
    # hit of a type matched by two rules appears twice: a type counts once,
    # with the most any rule saw of it.
    counts: dict[str, int] = {}
    for policy in record.get("PolicyDetails") or ():
        for rule in policy.get("Rules") or ():
            for info in (rule.get("ConditionsMatched") or {}).get("SensitiveInformation") or ():
                name = info.get("SensitiveInformationTypeName") or info.get("SensitiveType")
                if name:
                    names.append(str(name))
                key = str(info.get("SensitiveType") or name)
                counts[key] = max(counts.get(key, 0), int(info.get("Count") or 0))
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
        user_id=_dlp_user(record, sharepoint, exchange),
        channel="email" if email else "saas_upload",
        saas_app=(
            mapping.app_of(workload)
            if email
            else mapping.app_or_passthrough(workload, path="Workload")
        ),
        data_types=mapping.data_types_of(list(dict.fromkeys(names))),
        match_count=sum(counts.values()),
        object=file_object(sharepoint.get("FileName") or exchange.get("Subject")),
        matched=matched,
        match_ref=match_ref_of(workload, _object_id(record), _rule_ids(record)),
    )


def _undo(record: dict[str, Any], mapping: VendorMapping, workload: str | None) -> dict[str, Any]:
    """A `DlpRuleUndo` as a retraction of the match it names (module docstring)."""
    sharepoint = record.get("SharePointMetaData") or {}
    exchange = record.get("ExchangeMetaData") or {}
    exception = record.get("ExceptionInfo") or {}
    if not isinstance(exception, dict):
        exception = {}
    named = exception.get("Rules")
    rules = named if isinstance(named, list) and named else _rule_ids(record)
    ref = match_ref_of(workload, _object_id(record), rules)
    if ref is None:
        raise Unmappable(
            "Workload, ObjectId, ExceptionInfo.Rules",
            "a DlpRuleUndo naming no workload, object or rule cannot say which match it undoes",
        )
    reason = ": ".join(
        str(v).strip()
        for v in (exception.get("Reason"), exception.get("Justification"))
        if isinstance(v, str) and v.strip()
    )
    email = workload == "Exchange"
    return dlp_alert(
        mapping,
        source=SOURCE,
        event_id=f"{text_of(record, 'Id')[:250]}:undo",
        timestamp=iso_time(record.get("CreationTime"), "CreationTime"),
        user_id=_dlp_user(record, sharepoint, exchange),
        channel="email" if email else "saas_upload",
        saas_app=None,
        # An undo says no data left: nothing for a rule to judge.
        data_types=[],
        match_count=0,
        match_ref=ref,
        retraction={
            "operation": "DlpRuleUndo",
            "reason": masked(reason)[:1024] if reason else None,
        },
    )


def _object_id(record: dict[str, Any]) -> Any:
    """The document or message: `ObjectId`, else the item's `UniqueID`."""
    found = record.get("ObjectId")
    if isinstance(found, str) and found.strip():
        return found
    for meta in ("SharePointMetaData", "ExchangeMetaData"):
        item = record.get(meta)
        if isinstance(item, dict) and (found := item.get("UniqueID") or item.get("UniqueId")):
            return found
    return None


def _rule_ids(record: dict[str, Any]) -> list[Any]:
    return [
        rule.get("RuleId")
        for policy in record.get("PolicyDetails") or ()
        if isinstance(policy, dict)
        for rule in policy.get("Rules") or ()
        if isinstance(rule, dict)
    ]


def _dlp_user(record: dict[str, Any], sharepoint: dict[str, Any], exchange: dict[str, Any]) -> str:
    """The person a DLP match is about: `UserId`, unless that names the DLP
    service, then the item's `From` (the sender, or the file's last modifier)."""
    user = record.get("UserId") or exchange.get("From")
    if not isinstance(user, str) or not user.lower().startswith(DLP_SERVICE_ACCOUNTS):
        return user_of(user, "UserId")
    person = exchange.get("From") or sharepoint.get("From")
    path = "ExchangeMetaData.From" if exchange else "SharePointMetaData.From"
    if not person:
        raise Unmappable(path, "missing, and UserId names the DLP service, not a person")
    return user_of(person, path)
