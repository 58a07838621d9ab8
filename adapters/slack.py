"""Slack Audit Logs API -> `saas_access`.

Vendor schema: Slack Audit Logs API (`GET https://api.slack.com/audit/v1/logs`;
api.slack.com/admins/audit-logs): entries `{"id", "date_create" (epoch
seconds), "action", "actor": {"type", "user": {"id", "name", "email"}},
"entity": {"type", "file": {"id", "name", "title", "filetype"}, ...},
"context": {"location": {"type", "id", "name", "domain"}, "ua", "ip_address",
"session_id"}, "details"}`. Pages: `{"entries": [...], "response_metadata":
{"next_cursor"}}`.

Mapped: sign-ins (`user_login`) and file actions: download, upload, share
(shared to a channel or a public link created). The app is `slack` through
the mapping. Other actions (user and channel administration, anomalies,
sign-outs, blocked downloads) are skipped by name.

`share_target` (SEP-011): `file_public_link_created` makes the file
readable by anyone with the link: public. `file_shared` names the channel,
not whether anyone outside is in it (a Slack Connect channel can be):
null. Slack's audit log says nothing of how a sign-in was authenticated:
`auth` null.
"""

from __future__ import annotations

from typing import Any

from adapters.canonical import (
    SHARE_NOT_SAID,
    SHARE_PUBLIC,
    file_object,
    saas_access,
    user_of,
)
from adapters.mapping import VendorMapping
from adapters.records import Adapted, Skip, UnrecognisedShape, epoch_time, field, text_of

SOURCE = "slack"
ENVELOPES = ("entries",)
SHAPES = (("action", "actor", "date_create"),)  # An audit log entry.
ACTIONS = {
    "user_login": "login",
    "file_downloaded": "download",
    "file_uploaded": "upload",
    "file_shared": "share",
    "file_public_link_created": "share",
}


def adapt(record: dict[str, Any], mapping: VendorMapping) -> Adapted:
    if "action" not in record or "actor" not in record or "date_create" not in record:
        raise UnrecognisedShape(SOURCE, record)
    name = str(record.get("action"))
    action = ACTIONS.get(name)
    if action is None:
        return Skip(f"action {name}")
    file = field(record, "entity.file") or {}
    return [
        saas_access(
            mapping,
            source=SOURCE,
            event_id=text_of(record, "id"),
            timestamp=epoch_time(record.get("date_create"), "date_create"),
            user_id=user_of(field(record, "actor.user.email"), "actor.user.email"),
            saas_app=mapping.app_or_passthrough("slack", path="action"),
            action=action,
            ip=field(record, "context.ip_address"),
            ip_path="context.ip_address",
            object=file_object(file.get("name") or file.get("title")) if file else None,
            share=SHARE_PUBLIC if name == "file_public_link_created" else SHARE_NOT_SAID,
        )
    ]
