"""Okta System Log events -> `saas_access`.

Vendor schema: Okta System Log API, LogEvent object
(developer.okta.com/docs/reference/api/system-log/#logevent-object):
`uuid`, `published` (ISO 8601, UTC, `Z`), `eventType`, `actor.alternateId`,
`client.ipAddress`, `outcome.result`, `target[]` (the app is the target of
type `AppInstance`), `device` (Okta device assurance: `id`, `name`,
`os_platform`) where Okta Verify knows the device.

A single sign-on into an app (`user.authentication.sso`) is an access: a
login to that app. Everything else (Okta's own sessions, group and admin
changes) carries no SaaS access and is skipped; so is a failed or denied
sign-on, which used no app. Pages: the API returns a JSON array; Okta event
hooks deliver `{"data": {"events": [...]}}`.
"""

from __future__ import annotations

from typing import Any

from streams.adapters.canonical import saas_access, user_of
from streams.adapters.mapping import VendorMapping
from streams.adapters.records import Adapted, Skip, field, iso_time, text_of

SOURCE = "okta"
ENVELOPES = ("data.events",)
SHAPES = (("eventType", "uuid"),)  # An Okta LogEvent (API page or event hook).


def adapt(record: dict[str, Any], mapping: VendorMapping) -> Adapted:
    event_type = record.get("eventType")
    if event_type != "user.authentication.sso":
        return Skip(f"eventType {event_type}")
    if field(record, "outcome.result") not in ("SUCCESS", "ALLOW"):
        return Skip(f"{event_type} {field(record, 'outcome.result')}")
    app = next(
        (
            t
            for t in record.get("target") or ()
            if isinstance(t, dict) and t.get("type") == "AppInstance"
        ),
        None,
    )
    app_name = (app or {}).get("displayName") or (app or {}).get("alternateId")
    return [
        saas_access(
            mapping,
            source=SOURCE,
            event_id=text_of(record, "uuid"),
            timestamp=iso_time(record.get("published"), "published"),
            user_id=user_of(field(record, "actor.alternateId"), "actor.alternateId"),
            saas_app=mapping.app_or_passthrough(app_name, path="target.displayName"),
            action="login",
            ip=field(record, "client.ipAddress"),
            ip_path="client.ipAddress",
            device_id=mapping.device_of(field(record, "device.id")),
        )
    ]
