"""Symantec (Broadcom) Data Loss Prevention incidents, Enforce REST API -> `dlp_alert`.

Vendor schema: Symantec DLP 15.7+ Enforce REST API
(techdocs.broadcom.com, "DLP Enforce REST APIs", 15.8:
`GET /ProtectManager/webservices/v2/incidents/{id}/staticAttributes`, the
StaticIncidentInfoMap definition): `{"incidentId", "infoMap": {"policyName",
"policyId", "messageSource" (`NETWORK`, `ENDPOINT`, `DISCOVER`, ...),
"messageType" (`HTTP`, `SMTP`, `RAW`, ...), "detectionDate" (no zone),
"matchCount", "messageSubject", "attachmentInfo": [{"messageComponentName"}],
"senderIPAddress", "networkSenderIdentifier", "endpointMachineName",
"endpointUserName", "recipientInfo": [{"recipientDomain", "recipientUrl"}]}}`.
An entry of the incidents list (`POST .../v2/incidents`) names no policy or
user: it is a dead letter asking for the incident's static attributes.

The data types are the policy's name through the mapping's `data_types` (a
bank names its DLP policies, as for Netskope profiles). The channel follows
the message: HTTP(S) is `web`, or `saas_upload` to the app where the
recipient's host is a known app's domain; SMTP/e-mail is `email`; removable
media `usb`; print `print`; anything else `other`. The user is the endpoint
user, else the network sender where it is an e-mail address; the detection
date is in the Enforce server's zone (`source_timezones.symantec-dlp`, UTC by
default). Discover incidents (data at rest) are skipped.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from adapters.canonical import dlp_alert, file_object, user_of
from adapters.mapping import VendorMapping
from adapters.records import Adapted, Skip, Unmappable, UnrecognisedShape, iso_time, text_of

SOURCE = "symantec-dlp"
ENVELOPES = ("incidents",)
SHAPES = (("incidentId",),)  # An incident.
CHANNELS = (
    ("SMTP", "email"),
    ("MAIL", "email"),
    ("HTTP", "web"),
    ("USB", "usb"),
    ("REMOVABLE", "usb"),
    ("PRINT", "print"),
)


def adapt(record: dict[str, Any], mapping: VendorMapping) -> Adapted:
    if "incidentId" not in record:
        raise UnrecognisedShape(SOURCE, record)
    info = record.get("infoMap")
    if not isinstance(info, dict):
        raise Unmappable(
            "infoMap",
            "an incidents list entry names no policy or user:"
            " publish GET /incidents/{id}/staticAttributes instead",
        )
    source = str(info.get("messageSource") or "").upper()
    if source == "DISCOVER":
        return Skip("discover incident")
    channel, host = _channel(info)
    app = mapping.app_of(None, host) if host else None
    return [
        dlp_alert(
            mapping,
            source=SOURCE,
            event_id=f"{SOURCE}:{text_of(record, 'incidentId')}",
            timestamp=iso_time(
                info.get("detectionDate"), "infoMap.detectionDate", mapping.timezone_of(SOURCE)
            ),
            user_id=user_of(_user(info), "infoMap.endpointUserName"),
            channel="saas_upload" if channel == "web" and app else channel,
            saas_app=app,
            data_types=mapping.data_types_of([text_of(info, "policyName")]),
            match_count=int(info.get("matchCount") or 1),
            device_id=mapping.device_of(info.get("endpointMachineName")),
            object=file_object(_file_name(info)),
            ip=info.get("senderIPAddress") or info.get("endpointMachineIpAddress") or None,
            ip_path="infoMap.senderIPAddress",
        )
    ]


def _channel(info: dict[str, Any]) -> tuple[str, str | None]:
    kind = str(info.get("messageType") or "").upper()
    channel = next((c for key, c in CHANNELS if key in kind), "other")
    recipients = info.get("recipientInfo") or []
    first = recipients[0] if recipients and isinstance(recipients[0], dict) else {}
    host = first.get("recipientDomain") or urlsplit(str(first.get("recipientUrl") or "")).hostname
    return channel, host


def _user(info: dict[str, Any]) -> Any:
    sender = str(info.get("networkSenderIdentifier") or "")
    return info.get("endpointUserName") or (sender if "@" in sender else None)


def _file_name(info: dict[str, Any]) -> str | None:
    for attachment in info.get("attachmentInfo") or ():
        if isinstance(attachment, dict) and attachment.get("messageComponentName"):
            return str(attachment["messageComponentName"])
    subject = info.get("messageSubject")
    return str(subject) if subject else None
