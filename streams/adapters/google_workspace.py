"""Google Workspace audit activities (Drive, login, Calendar) -> `saas_access`.

Vendor schema: Admin SDK Reports API, `activities` resource
(developers.google.com/admin-sdk/reports/reference/rest/v1/activities):
`id.time` (RFC 3339, UTC), `id.uniqueQualifier`, `id.applicationName`,
`actor.email`, `ipAddress`, and `events[]`, each with `type`, `name` and
`parameters[]` (`{"name", "value" | "intValue" | "boolValue" | "multiValue"}`).
Pages: `{"kind": "admin#reports#activities", "items": [...], "nextPageToken"}`.

One activity can hold several events: each meaningful one becomes an access.
Shippers that split activities (Elastic Agent, for one) send one record per
event, with `events` a single object: read the same. An access's id is
derived from the activity's time and unique qualifier and from the event's
type, name and parameters, so the events of one activity never share an id
and an activity gives the same ids split or whole. The
app is named by `applicationName` (`drive`, `login`, `calendar`) through the
mapping, so the bank says which registry app each one is. Failed logins,
logouts and other applications are skipped.
"""

from __future__ import annotations

import json
from typing import Any

from streams.adapters.canonical import file_object, saas_access, user_of
from streams.adapters.mapping import VendorMapping
from streams.adapters.records import (
    Adapted,
    CanonicalEvent,
    Skip,
    Unmappable,
    derived_id,
    field,
    iso_time,
    required,
)

SOURCE = "google-workspace"
ENVELOPES = ("items",)
SHAPES = (("id.applicationName", "events"),)  # An activity of the Reports API.

ACTIONS = {
    "drive": {
        "view": "view",
        "preview": "view",
        "download": "download",
        "upload": "upload",
        "create": "upload",
        "edit": "edit",
        "rename": "edit",
        "delete": "delete",
        "trash": "delete",
        "change_user_access": "share",
        "change_document_visibility": "share",
        "change_document_access_scope": "share",
        "change_acl_editors": "share",
    },
    "login": {"login_success": "login"},
    "calendar": {
        "create_event": "edit",
        "change_event": "edit",
        "change_event_title": "edit",
        "change_event_start_time": "edit",
        "add_event_guest": "share",
        "delete_event": "delete",
    },
}
APP_NAMES = {"drive": "google drive", "login": "google workspace", "calendar": "calendar"}


def adapt(record: dict[str, Any], mapping: VendorMapping) -> Adapted:
    application = field(record, "id.applicationName")
    actions = ACTIONS.get(application or "")
    if actions is None:
        return Skip(f"application {application}")
    found: list[CanonicalEvent] = []
    events = record.get("events") or []
    if isinstance(events, dict):
        events = [events]
    if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
        raise Unmappable("events", "expected an event object or a list of them")
    for event in events:
        action = actions.get(event.get("name"))
        if action is None:
            continue
        raw_parameters = event.get("parameters") or ()
        parameters = {p.get("name"): _value(p) for p in raw_parameters if isinstance(p, dict)}
        title = parameters.get("doc_title")
        timestamp = iso_time(field(record, "id.time"), "id.time")
        found.append(
            saas_access(
                mapping,
                source=SOURCE,
                event_id=derived_id(
                    SOURCE,
                    timestamp,
                    required(record, "id.uniqueQualifier"),
                    application,
                    event.get("type"),
                    event.get("name"),
                    json.dumps(raw_parameters, sort_keys=True),
                ),
                timestamp=timestamp,
                user_id=user_of(field(record, "actor.email"), "actor.email"),
                saas_app=mapping.app_or_passthrough(APP_NAMES[application], path="applicationName"),
                action=action,
                ip=record.get("ipAddress"),
                ip_path="ipAddress",
                object=file_object(title) if isinstance(title, str) else None,
            )
        )
    if not found:
        names = ",".join(sorted({str(e.get("name")) for e in events})) or "none"
        return Skip(f"{application} {names}")
    return found


def _value(parameter: dict[str, Any]) -> Any:
    for key in ("value", "intValue", "boolValue", "multiValue"):
        if key in parameter:
            return parameter[key]
    return None
