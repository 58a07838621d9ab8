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
SHAPES = (("id", "events"),)  # An activity of the Reports API.

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
    ident = record.get("id")
    ident = ident if isinstance(ident, dict) else {}
    application = ident.get("applicationName")
    actions = ACTIONS.get(application or "")
    if actions is None:
        return Skip(f"application {application}")
    found: list[CanonicalEvent] = []
    events = record.get("events") or []
    if isinstance(events, dict):
        events = [events]
    if not isinstance(events, list):
        raise Unmappable("events", "expected an event object or a list of them")
    timestamp = qualifier = user = None  # the activity's, read at its first access
    for event in events:
        if not isinstance(event, dict):
            raise Unmappable("events", "expected an event object or a list of them")
        action = actions.get(event.get("name"))
        if action is None:
            continue
        parameters = event.get("parameters") or ()
        title = next(
            (
                p.get("value")
                for p in parameters
                if isinstance(p, dict) and p.get("name") == "doc_title"
            ),
            None,
        )
        if timestamp is None:
            timestamp = iso_time(ident.get("time"), "id.time")
            qualifier = required(record, "id.uniqueQualifier")
            user = user_of(field(record, "actor.email"), "actor.email")
        found.append(
            saas_access(
                mapping,
                source=SOURCE,
                event_id=derived_id(
                    SOURCE,
                    timestamp,
                    qualifier,
                    application,
                    event.get("type"),
                    event.get("name"),
                    repr(parameters),  # as the vendor wrote them: cheap, and stable
                ),
                timestamp=timestamp,
                user_id=user,
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
