"""A DLP alert in CEF over syslog -> `dlp_alert`, as Korean DLP products emit it.

Vendor schema: ArcSight Common Event Format, rev. 25
(`CEF:Version|Device Vendor|Device Product|Device Version|Signature ID|Name|Severity|Extension`,
`|` and `\\` escaped in the header, `=`, `\\` and newlines in values), after
an optional syslog header. Extension keys read: `rt` (epoch ms, or
`MMM dd yyyy HH:mm:ss[.SSS] [zone]`, local to the DLP server when no zone:
`source_timezones.cef-dlp`), `suser`/`duser`, `src`, `shost`, `dhost`,
`request`, `fname`, `fsize`, `fileHash`, `externalId`, `cnt`, and custom
strings `csN` by their label `csNLabel`: data types (`DataTypes`,
`PatternName`, `탐지유형`), channel (`Channel`, `채널`), match count
(`cnN` labelled `MatchCount`, `탐지건수`), matched text (`MatchedText`, masked at once).

The channel word gives the channel (upload, mail, USB, print); an upload to
a host the mapping knows is `saas_upload` to that app. The id is
`externalId` where the product sends one, else derived from the line.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from streams.adapters.canonical import dlp_alert, file_object, user_of
from streams.adapters.mapping import VendorMapping
from streams.adapters.records import Adapted, Skip, Unmappable, derived_id, epoch_time

SOURCE = "cef-dlp"
ENVELOPES = ()

_HEADER = re.compile(r"CEF:(\d+)\|((?:\\.|[^|\\])*\|){6}")
_KEY = re.compile(r"(?:^|\s)([A-Za-z0-9_]+)=")
_UNESCAPE = re.compile(r"\\(.)")
DATA_TYPE_LABELS = frozenset({"datatypes", "datatype", "patternname", "pattern", "탐지유형"})
CHANNEL_LABELS = frozenset({"channel", "채널"})
COUNT_LABELS = frozenset({"matchcount", "탐지건수"})
MATCHED_LABELS = frozenset({"matchedtext", "snippet", "탐지내용"})
CHANNELS = {
    "upload": "web",
    "web": "web",
    "web_upload": "web",
    "http": "web",
    "https": "web",
    "saas": "web",
    "email": "email",
    "mail": "email",
    "smtp": "email",
    "usb": "usb",
    "media": "usb",
    "removable": "usb",
    "print": "print",
    "printer": "print",
}


def parse_cef(line: str) -> tuple[list[str], dict[str, str]]:
    """The seven header fields and the extension of a CEF line (syslog prefix ignored)."""
    match = _HEADER.search(line)
    if match is None:
        raise Unmappable("(record)", "not a CEF line")
    header = re.split(r"(?<!\\)\|", line[match.start() + 4 : match.end() - 1])
    header = [_UNESCAPE.sub(r"\1", h) for h in header]
    rest = line[match.end() :]
    keys = list(_KEY.finditer(rest))
    extension = {}
    for i, key in enumerate(keys):
        end = keys[i + 1].start() if i + 1 < len(keys) else len(rest)
        value = rest[key.end() : end].strip()
        extension[key.group(1)] = _UNESCAPE.sub(
            lambda m: "\n" if m.group(1) == "n" else m.group(1), value
        )
    return header, extension


def adapt(record: Any, mapping: VendorMapping) -> Adapted:
    if not isinstance(record, str):
        raise Unmappable("(record)", "a CEF record is a text line")
    header, ext = parse_cef(record)
    labelled = {
        ext[f"{k}Label"].strip().lower(): v
        for k, v in ext.items()
        if re.fullmatch(r"c[sn][0-9]", k) and f"{k}Label" in ext
    }
    names = next((v for k, v in labelled.items() if k in DATA_TYPE_LABELS), None)
    if not names:
        return Skip(f"no data types ({header[4]})")  # a product's own health or audit event
    channel_word = next((v for k, v in labelled.items() if k in CHANNEL_LABELS), "")
    channel = CHANNELS.get(channel_word.strip().lower(), "other")
    host = ext.get("dhost") or _host(ext.get("request"))
    app = mapping.app_of(None, host) if host else None
    if channel == "web" and app:
        channel = "saas_upload"
    count = next((v for k, v in labelled.items() if k in COUNT_LABELS), ext.get("cnt", "1"))
    matched = next((v for k, v in labelled.items() if k in MATCHED_LABELS), None)
    user = ext.get("suser") or ext.get("duser")
    return [
        dlp_alert(
            mapping,
            source=SOURCE,
            event_id=f"{SOURCE}:{ext['externalId']}"
            if ext.get("externalId")
            else derived_id(SOURCE, record),
            timestamp=_time(ext.get("rt"), mapping),
            user_id=user_of(user, "suser"),
            channel=channel,
            saas_app=app if channel == "saas_upload" else None,
            data_types=mapping.data_types_of(re.split(r"\s*[,;]\s*", names)),
            match_count=int(count) if str(count).isdigit() else 1,
            device_id=mapping.device_of(ext.get("shost")),
            object=file_object(ext.get("fname"), ext.get("fileHash"), ext.get("fsize")),
            ip=ext.get("src"),
            matched=[matched] if matched else None,
        )
    ]


def _host(url: str | None) -> str | None:
    if not url:
        return None
    return url.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0] or None


def _time(value: str | None, mapping: VendorMapping) -> str:
    if not value:
        raise Unmappable("rt", "missing")
    if value.isdigit():
        return epoch_time(value, "rt")
    parts = value.split()
    zone = None
    if len(parts) == 5:  # MMM dd yyyy HH:mm:ss zone
        zone = parts.pop()
    text = " ".join(parts)
    for pattern in ("%b %d %Y %H:%M:%S.%f", "%b %d %Y %H:%M:%S"):
        try:
            t = datetime.strptime(text, pattern)
        except ValueError:
            continue
        if zone is not None:
            try:
                return t.replace(tzinfo=ZoneInfo(zone)).isoformat()
            except (KeyError, ValueError):
                raise Unmappable("rt", "unknown time zone") from None
        return t.replace(tzinfo=mapping.timezone_of(SOURCE)).isoformat()
    raise Unmappable("rt", "not epoch milliseconds nor MMM dd yyyy HH:mm:ss")
