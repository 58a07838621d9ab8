"""Zscaler Internet Access web logs (NSS JSON feed) -> `saas_access`.

Vendor schema: ZIA NSS feed output format for web logs
(help.zscaler.com/zia/nss-feed-output-format-web-logs), as a JSON feed:
`{"sourcetype": "zscalernss-web", "event": {...}}` with `time` (a ctime
string in the feed's time zone, no zone written), `login`, `cip`, `eurl`,
`action`, `appname`, `appclass`, `reqmethod`, `recordid`,
`devicehostname`. The Splunk-style template renames some (`datetime`,
`user`, `url`, `ClientIP`, `event_id`, `hostname`): both are read.

A web log is an access when the request reached a cloud application:
blocked requests used nothing, so they are skipped; so is general browsing,
unless its host is a registry or mapped app's domain (Zscaler files the
SaaS it does not classify under "General Browsing"). The method gives the
action (GET view, POST/PUT upload, DELETE delete). The feed's time zone comes from the mapping
(`source_timezones.zscaler-zia`; UTC if unset). Without `recordid` in the
feed template, the id is derived from the record's content.
"""

from __future__ import annotations

from typing import Any

from adapters.canonical import saas_access, user_of
from adapters.mapping import VendorMapping
from adapters.records import Adapted, Skip, UnrecognisedShape, ctime_time, derived_id

SOURCE = "zscaler-zia"
ENVELOPES = ()
SHAPES = (("eurl",), ("url", "datetime"))  # A web log (NSS names, or the Splunk-style template's).

METHODS = {
    "GET": "view",
    "HEAD": "view",
    "CONNECT": "view",
    "POST": "upload",
    "PUT": "upload",
    "PATCH": "edit",
    "DELETE": "delete",
}
NOT_SAAS = frozenset({"general browsing", "none", ""})
NONE = frozenset({"none", "unknown", "na", ""})


def adapt(record: dict[str, Any], mapping: VendorMapping) -> Adapted:
    log = record.get("event", record)  # the feed's HEC-style wrapper, where not unwrapped
    if not isinstance(log, dict):
        raise UnrecognisedShape(SOURCE, record)
    if str(log.get("action", "")).lower() == "blocked":
        return Skip("Blocked")
    app_name = str(log.get("appname") or "")
    url = str(log.get("eurl", log.get("url")) or "")
    host = url.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0]
    browsing = app_name.lower() in NOT_SAAS and str(log.get("appclass") or "").lower() in NOT_SAAS
    # Zscaler classifies only the apps it knows: a registry app it does not
    # (a Korean SaaS, say) is "General Browsing" too, and is known by its host.
    if browsing and mapping.app_of(None, host) is None:
        return Skip("General Browsing")
    user = log.get("login", log.get("user"))
    if not isinstance(user, str) or user.strip().lower() in NONE:
        return Skip("unauthenticated")
    when = log.get("time", log.get("datetime"))
    timestamp = ctime_time(when, "time", mapping.timezone_of(SOURCE))
    record_id = log.get("recordid", log.get("event_id"))
    ip = log.get("cip", log.get("ClientIP"))
    device = str(log.get("devicehostname") or "")
    return [
        saas_access(
            mapping,
            source=SOURCE,
            event_id=f"{SOURCE}:{record_id}"
            if record_id not in (None, "", "0", 0)
            else derived_id(SOURCE, when, user, ip, url, log.get("reqmethod"), log.get("reqsize")),
            timestamp=timestamp,
            user_id=user_of(user, "login"),
            saas_app=mapping.app_or_passthrough(
                None if app_name.lower() in NOT_SAAS else app_name, host, path="appname"
            ),
            action=METHODS.get(str(log.get("reqmethod", "")).upper(), "other"),
            ip=ip,
            ip_path="cip",
            device_id=mapping.device_of(None if device.lower() in NONE else device),
        )
    ]
