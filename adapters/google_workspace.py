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

`auth` (SEP-010), on `login_success`: `is_second_factor` true says a
second factor was used; otherwise `login_challenge_method` (a value or a
multiValue) names the challenges passed: any second-factor method
(`SECOND_FACTOR_METHODS`) is multi-factor, `password` alone is single
factor, anything else (or no challenge named, as for a SAML login that the
identity provider authenticated) is null. `auth.method`: the challenges,
joined.

`share_target` (SEP-011), on Drive sharing events: `change_user_access`
names the person (`target_user`): internal or external by its domain
(`internal_domains` of the mapping); the visibility changes read the new
`visibility`: `people_with_link` and `public_on_the_web` are public,
`people_within_domain_with_link`, `public_in_the_domain`, `shared_internally`
and `private` internal, `shared_externally` external (domain not named).
Calendar guests (`add_event_guest`) name no target: null.
"""

from __future__ import annotations

from typing import Any

from adapters.canonical import (
    SHARE_NOT_SAID,
    SHARE_PUBLIC,
    Auth,
    ShareTarget,
    auth_of,
    file_object,
    saas_access,
    shared_with,
    user_of,
)
from adapters.mapping import VendorMapping
from adapters.records import (
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
SECOND_FACTOR_METHODS = frozenset(
    {
        "backup_code",
        "google_authenticator",
        "google_prompt",
        "idv_any_phone",
        "idv_preregistered_phone",
        "internal_two_factor",
        "offline_otp",
        "passkey",
        "phone_prompt",
        "security_key",
        "totp",
    }
)
VISIBILITY: dict[str, ShareTarget] = {
    "people_with_link": SHARE_PUBLIC,
    "public_on_the_web": SHARE_PUBLIC,
    "people_within_domain_with_link": ("internal", None),
    "public_in_the_domain": ("internal", None),
    "shared_internally": ("internal", None),
    "private": ("internal", None),
    "shared_externally": ("external", None),
}
DRIVE_SHARES = frozenset(
    {"change_document_visibility", "change_document_access_scope", "change_acl_editors"}
)
APP_NAMES = {"drive": "google drive", "login": "google workspace", "calendar": "calendar"}


def adapt(record: dict[str, Any], mapping: VendorMapping) -> Adapted:
    ident = record.get("id")
    ident = ident if isinstance(ident, dict) else {}
    application = ident.get("applicationName")
    if not isinstance(application, str) or application not in ACTIONS:
        return Skip(f"application {application}")
    actions = ACTIONS[application]
    found: list[CanonicalEvent] = []
    events = _events_of(record)
    first: tuple[str, str, str] | None = None  # the activity's, read at its first access
    for event in events:
        if not isinstance(event, dict):
            raise Unmappable("events", "expected an event object or a list of them")
        name = event.get("name")
        action = actions.get(name) if isinstance(name, str) else None
        if action is None:
            continue
        parameters = event.get("parameters") or ()
        title = _doc_title(parameters)
        if first is None:
            first = (
                iso_time(ident.get("time"), "id.time"),
                required(record, "id.uniqueQualifier"),
                user_of(field(record, "actor.email"), "actor.email"),
            )
        timestamp, qualifier, user = first
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
                auth=_auth(parameters) if action == "login" else None,
                share=_share(mapping, event.get("name"), parameters)
                if action == "share"
                else SHARE_NOT_SAID,
            )
        )
    if not found:
        names = ",".join(sorted({str(e.get("name")) for e in events})) or "none"
        return Skip(f"{application} {names}")
    return found


def _events_of(record: dict[str, Any]) -> list[Any]:
    """The activity's events: a list, or one event object alone."""
    events = record.get("events") or []
    if isinstance(events, dict):
        events = [events]
    if not isinstance(events, list):
        raise Unmappable("events", "expected an event object or a list of them")
    return events


def _doc_title(parameters: Any) -> Any:
    """The `doc_title` parameter's value, as the vendor wrote it (None without one)."""
    return next(
        (
            p.get("value")
            for p in parameters
            if isinstance(p, dict) and p.get("name") == "doc_title"
        ),
        None,
    )


def _parameter(parameters: Any, name: str) -> Any:
    """A Reports API parameter's value, whichever of its typed fields holds it."""
    for p in parameters:
        if isinstance(p, dict) and p.get("name") == name:
            for kind in ("value", "boolValue", "multiValue", "intValue"):
                if kind in p:
                    return p[kind]
    return None


def _auth(parameters: Any) -> Auth:
    """A login's second factor, as the login event says it (module docstring)."""
    methods = _parameter(parameters, "login_challenge_method")
    named = [methods] if isinstance(methods, str) else methods if isinstance(methods, list) else []
    named = [m.strip().lower() for m in named if isinstance(m, str) and m.strip()]
    if _parameter(parameters, "is_second_factor") is True or SECOND_FACTOR_METHODS.intersection(
        named
    ):
        mfa: bool | None = True
    elif named and all(m == "password" for m in named):
        mfa = False
    else:
        mfa = None
    return auth_of(mfa, ", ".join(named) or None)


def _share(mapping: VendorMapping, name: Any, parameters: Any) -> ShareTarget:
    """What a Drive share reached (module docstring); null where it does not say."""
    if name == "change_user_access":
        return shared_with(mapping, _parameter(parameters, "target_user"))
    if name in DRIVE_SHARES:
        visibility = _parameter(parameters, "visibility")
        if isinstance(visibility, str):
            return VISIBILITY.get(visibility, SHARE_NOT_SAID)
    return SHARE_NOT_SAID
