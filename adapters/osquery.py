"""osquery scheduled query results -> `device_posture`.

Vendor schema: osquery results logs (osquery.readthedocs.io/en/stable/deployment/logging/):
differential rows `{"name", "hostIdentifier", "calendarTime" (ctime, UTC),
"unixTime" (epoch seconds, a number or a string), "counter", "decorations",
"columns": {...}, "action": "added" | "removed"}` and snapshots
`{"name", "hostIdentifier", ..., "snapshot": [{...}], "action": "snapshot"}`.
Column values are strings.

Only the posture query (a name ending in `sepwatch_posture`; its SQL is in
docs/adapters.md) is read: its columns `platform`, `os_version`, `managed`,
`edr_running`, `disk_encrypted`, `screen_lock` (and optional `user`) give
one posture per row. Other queries and removed rows are skipped. A
`host_uuid` decoration names the device beside `hostIdentifier`
(`device_aliases`). The
event id is derived from host, query, time and row, so a result shipped
twice is one event.
"""

from __future__ import annotations

from typing import Any

from adapters.canonical import device_posture
from adapters.mapping import VendorMapping
from adapters.records import (
    Adapted,
    CanonicalEvent,
    Skip,
    Unmappable,
    ctime_time,
    derived_id,
    epoch_time,
    text_of,
)

SOURCE = "osquery"
ENVELOPES = ()
SHAPES = (("name", "hostIdentifier"),)  # A result log line of osqueryd.
QUERY = "sepwatch_posture"


def adapt(record: dict[str, Any], mapping: VendorMapping) -> Adapted:
    name = str(record.get("name") or "")
    if not name.endswith(QUERY):
        return Skip(f"query {name}")
    action = record.get("action", "added")
    if action == "removed":
        return Skip("removed row")
    rows = record.get("snapshot") if action == "snapshot" else [record.get("columns")]
    if not isinstance(rows, list) or not rows:
        raise Unmappable("columns" if action != "snapshot" else "snapshot", "no rows")
    host = text_of(record, "hostIdentifier")
    if record.get("unixTime") not in (None, ""):
        timestamp = epoch_time(record.get("unixTime"), "unixTime")
    else:
        timestamp = ctime_time(record.get("calendarTime"), "calendarTime")
    found: list[CanonicalEvent] = []
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            raise Unmappable("columns", "a row is not an object")
        # Each control read in turn (the first bad one is the dead letter's
        # field), passed as keywords: a dict passed with ** costs a second dict.
        managed = _flag(row, "managed")
        edr_running = _flag(row, "edr_running")
        disk_encrypted = _flag(row, "disk_encrypted")
        screen_lock = _flag(row, "screen_lock")
        user = str(row.get("user") or "").strip().lower() or None
        found.append(
            device_posture(
                mapping,
                source=SOURCE,
                event_id=derived_id(SOURCE, host, name, timestamp, record.get("counter"), index),
                timestamp=timestamp,
                device_id=mapping.device_of(host) or host,
                user_id=user,
                os_patch_age_days=mapping.patch_age(
                    row.get("platform"), row.get("os_version"), timestamp, path="columns.os_version"
                ),
                managed=managed,
                edr_running=edr_running,
                disk_encrypted=disk_encrypted,
                screen_lock=screen_lock,
                aliases=_aliases(record, host),
            )
        )
    return found


def _aliases(record: dict[str, Any], host: str) -> tuple[tuple[str, Any], ...]:
    """The host UUID where a decoration gives it; `hostIdentifier` is the
    hostname unless osqueryd was set to identify hosts by that UUID."""
    decorations = record.get("decorations")
    uuid = decorations.get("host_uuid") if isinstance(decorations, dict) else None
    if not isinstance(uuid, str) or not uuid.strip():
        return ()
    if uuid.strip().lower() == host.strip().lower():
        return (("osquery_uuid", uuid),)
    return (("osquery_uuid", uuid), ("hostname", host))


def _flag(row: dict[str, Any], column: str) -> bool:
    value = str(row.get(column, "")).strip().lower()
    if value in ("1", "true", "yes"):
        return True
    if value in ("0", "false", "no"):
        return False
    raise Unmappable(f"columns.{column}", "missing or not 0/1")
