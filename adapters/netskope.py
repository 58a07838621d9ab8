"""Netskope application events -> `saas_access`; Netskope DLP alerts -> `dlp_alert`.

Vendor schema: Netskope REST API v2 data export (`/api/v2/events/data/application`,
`/api/v2/events/data/alert?type=dlp`) and Log Streaming, which share the
field names: `_id`, `timestamp` (epoch seconds), `type`, `user`, `srcip`,
`app`, `activity`, `access_method`, `hostname`, `object`, `file_size`,
`sha256`; alerts add `alert: "yes"`, `alert_type` and, for DLP,
`dlp_profile`, `dlp_rule`, `dlp_rule_count`, `dlp_incident_id`, `dlp_file`.
Pages: `{"ok": 1, "result": [...]}` (v2) or `{"status": "success", "data": [...]}` (v1).

A DLP alert's sensitive types are its DLP rule's and profile's names through
the mapping; the alert is `saas_upload` to the app Netskope saw (Netskope
sits inline, so it knows the destination). Page (connection) events and
other alert types are skipped (an alert is DLP by its `alert_type` or its
`alert_source`); so are API-connector events with no client
address, which describe data at rest, not a use from a network.
"""

from __future__ import annotations

from typing import Any

from adapters.canonical import dlp_alert, file_object, posture_seen_at, saas_access, user_of
from adapters.mapping import VendorMapping
from adapters.records import Adapted, CanonicalEvent, Skip, epoch_time, text_of

SOURCE = "netskope"
ENVELOPES = ("result", "data")
SHAPES = (
    ("timestamp", "type"),
    ("timestamp", "alert_type"),
)  # An event (`type`) or an alert (`alert_type`).

ACTIONS = {
    "login successful": "login",
    "login": "login",
    "view": "view",
    "browse": "view",
    "preview": "view",
    "download": "download",
    "upload": "upload",
    "create": "upload",
    "post": "upload",
    "attach": "upload",
    "edit": "edit",
    "rename": "edit",
    "share": "share",
    "invite": "share",
    "send": "share",
    "delete": "delete",
}
UPLOADS = frozenset({"upload", "create", "post", "attach", "edit", "share", "send"})


def adapt(record: dict[str, Any], mapping: VendorMapping) -> Adapted:
    if record.get("alert") == "yes" or "alert_type" in record:
        # A real-time policy with a DLP profile raises `alert_type: policy`
        # with `alert_source: DLP`: a DLP alert all the same.
        dlp = str(record.get("alert_type", "")).upper() == "DLP"
        if not dlp and str(record.get("alert_source", "")).upper() != "DLP":
            return Skip(f"alert {record.get('alert_type')}")
        return [_dlp(record, mapping)]
    if record.get("type") not in ("nspolicy", "application"):
        return Skip(f"type {record.get('type')}")
    if not record.get("srcip") and record.get("access_method") == "API Connector":
        return Skip("API Connector event without a client address")
    activity = str(record.get("activity") or "").lower()
    if activity in ("login failed", "login attempt", "logout"):
        return Skip(f"activity {activity}")
    access = saas_access(
        mapping,
        source=SOURCE,
        event_id=text_of(record, "_id"),
        timestamp=epoch_time(record.get("timestamp"), "timestamp"),
        user_id=user_of(record.get("user"), "user"),
        saas_app=mapping.app_or_passthrough(record.get("app"), path="app"),
        action=ACTIONS.get(activity, "other"),
        ip=record.get("srcip"),
        ip_path="srcip",
        device_id=mapping.device_of(record.get("hostname")),
        object=file_object(record.get("object"), record.get("sha256"), record.get("file_size")),
    )
    return [access, *posture_of(record, access)]


# Netskope's device classification (Settings > Manage > Device Classification):
# the client's check of the rules the bank set for a managed device.
MANAGED = {"managed": True, "unmanaged": False}


def posture_of(record: dict[str, Any], access: CanonicalEvent) -> list[CanonicalEvent]:
    """`device_classification` speaks for managed, and for nothing else: the
    rules behind it are the bank's, and the record does not say which held.
    Any other value (not configured, unknown) says nothing."""
    managed = MANAGED.get(str(record.get("device_classification") or "").strip().lower())
    return posture_seen_at(access, managed=managed)


def _dlp(record: dict[str, Any], mapping: VendorMapping) -> dict[str, Any]:
    activity = str(record.get("activity") or "").lower()
    app = record.get("app")
    to_app = bool(app) and activity in UPLOADS
    names = [str(n) for n in (record.get("dlp_rule"), record.get("dlp_profile")) if n]
    return dlp_alert(
        mapping,
        source=SOURCE,
        event_id=text_of(record, "_id"),
        timestamp=epoch_time(record.get("timestamp"), "timestamp"),
        user_id=user_of(record.get("user"), "user"),
        channel="saas_upload" if to_app else "web",
        saas_app=mapping.app_or_passthrough(app, path="app") if to_app else None,
        data_types=mapping.data_types_of(names),
        match_count=int(record.get("dlp_rule_count") or record.get("dlp_unique_count") or 1),
        device_id=mapping.device_of(record.get("hostname")),
        object=file_object(
            record.get("dlp_file") or record.get("object"),
            record.get("sha256"),
            record.get("file_size"),
        ),
        ip=record.get("srcip"),
        ip_path="srcip",
    )
