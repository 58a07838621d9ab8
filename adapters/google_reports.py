"""What the Google Workspace Reports API's activities share, for the
adapters of its applications (`rules`, `mobile`, `context_aware_access`).

Vendor schema: Admin SDK Reports API, `activities` resource
(developers.google.com/admin-sdk/reports/reference/rest/v1/activities):
`id.time` (RFC 3339, UTC), `id.uniqueQualifier`, `id.applicationName`,
`actor.email`, `ipAddress`, and `events[]`, each with `type`, `name` and
`parameters[]` (`{"name", "value" | "intValue" | "boolValue" | "multiValue" |
"multiIntValue" | "messageValue" | "multiMessageValue"}`). Some shippers split
an activity into one record per event, with `events` a single object.
"""

from __future__ import annotations

from typing import Any

from adapters.records import Unmappable, UnrecognisedShape, iso_time

ENVELOPES = ("items",)
SHAPES = (("id.applicationName", "events"),)  # An activity of the Reports API.
_SCALARS = ("value", "intValue", "boolValue", "multiValue", "multiIntValue", "multiBoolValue")


def application_of(source: str, record: dict[str, Any]) -> str:
    """The activity's application; a record that is not an activity is a dead letter."""
    ids = record.get("id")
    application = ids.get("applicationName") if isinstance(ids, dict) else None
    if not isinstance(application, str) or "events" not in record:
        raise UnrecognisedShape(source, record)
    return application


def events_of(record: dict[str, Any]) -> list[dict[str, Any]]:
    events = record.get("events")
    if isinstance(events, dict):
        return [events]
    if isinstance(events, list) and all(isinstance(e, dict) for e in events):
        return events
    raise Unmappable("events", "neither an event nor a list of events")


def parameters(event: dict[str, Any]) -> dict[str, Any]:
    """An event's parameters by name; a message is a dict of its own
    parameters, a list of messages a list of such dicts."""
    # Most parameters are plain strings: `value` first, the other kinds rarely.
    return {
        p.get("name", ""): p["value"] if "value" in p else _other_value(p)
        for p in event.get("parameters") or ()
        if isinstance(p, dict)
    }


def _other_value(p: dict[str, Any]) -> Any:
    if "messageValue" in p:
        return _message(p["messageValue"])
    if "multiMessageValue" in p:
        return [_message(m) for m in p["multiMessageValue"] or ()]
    for key in _SCALARS:
        if key in p:
            return p[key]
    return None


def _message(message: Any) -> dict[str, Any]:
    return parameters({"parameters": (message or {}).get("parameter")})


def activity_time(record: dict[str, Any]) -> tuple[str, Any]:
    """The activity's time and unique qualifier, which with the event's
    position make its events' ids."""
    ids = record["id"]  # application_of has seen it is an object
    qualifier = ids.get("uniqueQualifier")
    if qualifier is None or qualifier == "":
        raise Unmappable("id.uniqueQualifier", "missing")
    return iso_time(ids.get("time"), "id.time"), qualifier
