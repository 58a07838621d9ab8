"""Google Workspace rules (DLP) activity -> `dlp_alert`.

Vendor schema: Admin SDK Reports API, `applicationName=rules`
(developers.google.com/admin-sdk/reports/v1/appendix/activity/rules), as
`adapters/google_reports.py` reads activities. A `rule_match` event
carries the rule (`rule_name`, `rule_id`, `rule_type`), where the data was
(`data_source`: `DRIVE`, `GMAIL`, `CHAT`, `CHROME`, ...; `matched_trigger`),
the resource (`resource_title`, `resource_id`, `resource_owner_email`,
`resource_recipients`), the device (`device_id`), and what matched:
`matched_detectors` (messages with `detector_id`, `display_name`,
`detector_type`) and `matched_templates`.

Each `rule_match` of a DLP rule (or of a rule whose type is not given) is an
alert. Its data types are the matched detectors' names and ids, and the
matched templates, through the mapping's `data_types`; where nothing names
what matched, the rule's name (a bank names its Workspace DLP rules, as it
names Netskope profiles). The channel follows the data source: Drive and
Chat are Google SaaS (`saas_upload` to the mapping's `google drive` or
`google chat` app), Gmail is `email`, Chrome uploads are `web`, Chrome
printing is `print`, anything else `other`. The actor is the user; the
record's `ipAddress` places them. Other rule events (`action_complete`,
`rule_trigger`...) and rules of other types (activity, system alerts) are
skipped by kind.
"""

from __future__ import annotations

from typing import Any

from adapters import google_reports
from adapters.canonical import dlp_alert, file_object, user_of
from adapters.mapping import VendorMapping
from adapters.records import (
    Adapted,
    CanonicalEvent,
    Skip,
    Unmappable,
    derived_id,
    field,
)

SOURCE = "google-workspace-rules"
ENVELOPES = google_reports.ENVELOPES
SHAPES = google_reports.SHAPES

SAAS = {"DRIVE": "google drive", "CHAT": "google chat"}
CHROME_CHANNELS = {"PRINT": "print", "FILE_UPLOAD": "web", "WEB_CONTENT_UPLOAD": "web"}


def adapt(record: dict[str, Any], mapping: VendorMapping) -> Adapted:
    application = google_reports.application_of(SOURCE, record)
    if application != "rules":
        return Skip(f"application {application}")
    events = google_reports.events_of(record)
    found: list[CanonicalEvent] = []
    kinds = set()
    for index, event in enumerate(events):
        params = google_reports.parameters(event)
        rule_type = str(params.get("rule_type") or "DLP").upper()
        if event.get("name") == "rule_match" and rule_type == "DLP":
            found.append(_alert(record, index, params, mapping))
        else:
            kinds.add(f"{event.get('name')} {rule_type}")
    if not found:
        return Skip(f"rules {','.join(sorted(kinds)) or 'none'}")
    return found


def _alert(
    record: dict[str, Any], index: int, params: dict[str, Any], mapping: VendorMapping
) -> CanonicalEvent:
    timestamp, qualifier = google_reports.activity_time(record)
    source = str(params.get("data_source") or "").upper()
    channel, app = _destination(source, str(params.get("matched_trigger") or "").upper())
    title = params.get("resource_title")
    names = _matched(params)
    if not names:
        raise Unmappable("events.parameters", "no detector, template or rule names what matched")
    return dlp_alert(
        mapping,
        source=SOURCE,
        event_id=derived_id(SOURCE, timestamp, qualifier, index),
        timestamp=timestamp,
        user_id=user_of(field(record, "actor.email"), "actor.email"),
        channel=channel,
        saas_app=mapping.app_or_passthrough(app, path="data_source") if app else None,
        data_types=mapping.data_types_of(names),
        match_count=max(1, len(params.get("matched_detectors") or ())),
        device_id=mapping.device_of(params.get("device_id")),
        object=file_object(title) if isinstance(title, str) else None,
        ip=record.get("ipAddress") or None,
        ip_path="ipAddress",
    )


def _destination(source: str, trigger: str) -> tuple[str, str | None]:
    if source in SAAS:
        return "saas_upload", SAAS[source]
    if source == "GMAIL":
        return "email", None
    if source == "CHROME":
        found = next((c for key, c in CHROME_CHANNELS.items() if key in trigger), "other")
        return found, None
    return "other", None


def _matched(params: dict[str, Any]) -> list[str]:
    names: list[str] = []
    for detector in params.get("matched_detectors") or ():
        if isinstance(detector, dict):
            names += [str(detector[k]) for k in ("display_name", "detector_id") if detector.get(k)]
    names += [str(t) for t in params.get("matched_templates") or () if t]
    if not names:
        rule = params.get("rule_name")
        names = [str(r) for r in (rule if isinstance(rule, list) else [rule]) if r]
    return names
