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

import operator
import re
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from adapters.canonical import dlp_alert, file_object, user_of
from adapters.mapping import VendorMapping
from adapters.records import MONTHS, Adapted, Skip, Unmappable, derived_id, epoch_time

SOURCE = "cef-dlp"
ENVELOPES = ()
TEXT = True  # a CEF line, not JSON

# A "|" not after a backslash; the look-behind after the "|", so the engine
# looks only at pipes (a leading look-behind is tried at every position).
_PIPE = re.compile(r"\|(?<!\\\|)")
_NEXT_KEY = re.compile(r" (?=[A-Za-z0-9_]+=)")  # "=" inside a value is escaped: \=
_UNESCAPE = re.compile(r"\\(.)")
_ESCAPED = operator.itemgetter(1)  # r"\1", without the Python a template costs a match
_LIST = re.compile(r"[,;]")  # data_types_of strips each name
_ZONES: dict[str, tzinfo] = {"UTC": UTC, "GMT": UTC, "Z": UTC}
# csNLabel / cnNLabel -> the key of the value it labels.
_LABEL_KEYS = {f"c{kind}{n}Label": f"c{kind}{n}" for kind in "sn" for n in range(1, 7)}
DATA_TYPE_LABELS = frozenset({"datatypes", "datatype", "patternname", "pattern", "탐지유형"})
CHANNEL_LABELS = frozenset({"channel", "채널"})
COUNT_LABELS = frozenset({"matchcount", "탐지건수"})
MATCHED_LABELS = frozenset({"matchedtext", "snippet", "탐지내용"})
_MEANINGS = {
    **dict.fromkeys(DATA_TYPE_LABELS, "names"),
    **dict.fromkeys(CHANNEL_LABELS, "channel"),
    **dict.fromkeys(COUNT_LABELS, "count"),
    **dict.fromkeys(MATCHED_LABELS, "matched"),
}
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
    at = line.find("CEF:")
    body = line[at + 4 :] if at >= 0 else ""
    parts = body.split("|", 7)
    if "\\" in body[: len(body) - len(parts[-1])]:  # escapes in the header: split again
        parts = _PIPE.split(body, 7)
        parts[:7] = [_UNESCAPE.sub(_ESCAPED, p) if "\\" in p else p for p in parts[:7]]
    if len(parts) < 8 or not parts[0].isdigit():
        raise Unmappable("(record)", "not a CEF line")
    extension = _extension(parts[7])
    if "\\" in parts[7]:
        for key, value in extension.items():
            if "\\" in value:  # with no "\\n", each escape is just the character after it
                extension[key] = _UNESCAPE.sub(_unescaped if "\\n" in value else _ESCAPED, value)
    return parts[:7], extension


def _extension(text: str) -> dict[str, str]:
    """`key=value` pairs: " key=" starts a pair (an "=" inside a value is
    escaped). Split on every "=" first (one C call): where each piece ends in
    " key", that is the next key and the rest the value before it. A line
    where some "=" does not follow a space and a key (an escaped or unescaped
    "=" inside a value) is read by `_extension_by_key`, which gives the same
    pairs for the lines this reads."""
    if "\\=" in text:  # an escaped "=" in a value
        return _extension_by_key(text)
    pieces = text.strip().split("=")
    key = pieces[0]
    pairs: dict[str, str] = {}
    for piece in pieces[1:-1]:
        value, space, next_key = piece.rpartition(" ")
        if not space:
            return _extension_by_key(text)
        pairs[key] = value.strip()
        key = next_key
    if len(pieces) > 1:
        pairs[key] = pieces[-1].strip()
    keys = "".join(pairs).replace("_", "")
    if "" in pairs or " " in pieces[0] or not (keys.isascii() and keys.isalnum()):
        return _extension_by_key(text)
    return pairs


def _extension_by_key(text: str) -> dict[str, str]:
    """The pairs of any extension: split where a space is followed by `key=`."""
    pairs: dict[str, str] = {}
    for pair in _NEXT_KEY.split(text.strip()):
        key, equals, value = pair.partition("=")
        if equals:
            pairs[key] = value.strip()
    return pairs


def _unescaped(match: re.Match[str]) -> str:
    return "\n" if match.group(1) == "n" else match.group(1)


def adapt(record: Any, mapping: VendorMapping) -> Adapted:
    if not isinstance(record, str):
        raise Unmappable("(record)", "a CEF record is a text line")
    header, ext = parse_cef(record)
    found: dict[str, str] = {}  # what the labelled custom fields hold, by meaning
    for label_key in _LABEL_KEYS:  # cs1..cs6, then cn1..cn6: a later label wins
        if label_key not in ext:
            continue
        value = ext.get(_LABEL_KEYS[label_key])
        meaning = _MEANINGS.get(ext[label_key].strip().lower())
        if value is not None and meaning is not None:
            found[meaning] = value
    names = found.get("names")
    channel_word = found.get("channel")
    count = found.get("count")
    matched = found.get("matched")
    if not names:
        return Skip(f"no data types ({header[4]})")  # a product's own health or audit event
    channel = CHANNELS.get((channel_word or "").strip().lower(), "other")
    host = ext.get("dhost") or _host(ext.get("request"))
    app = mapping.app_of(None, host) if host else None
    if channel == "web" and app:
        channel = "saas_upload"
    count = count or ext.get("cnt", "1")
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
            data_types=mapping.data_types_of(_LIST.split(names)),
            match_count=int(count) if str(count).isdigit() else 1,
            device_id=mapping.device_of(ext.get("shost")),
            object=file_object(ext.get("fname"), ext.get("fileHash"), ext.get("fsize")),
            ip=ext.get("src"),
            ip_path="src",
            matched=[matched] if matched else None,
        )
    ]


def _host(url: str | None) -> str | None:
    if not url:
        return None
    return url.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0] or None


def _time(value: str | None, mapping: VendorMapping) -> str:
    """`rt`: epoch milliseconds, or `MMM dd yyyy HH:mm:ss[.SSS] [zone]`."""
    if not value:
        raise Unmappable("rt", "missing")
    if value.isdigit():
        return epoch_time(value, "rt")
    try:
        month, day, year, clock, *zone = value.split()
        hms, _, fraction = clock.partition(".")
        hh, mm, ss = hms.split(":")
        tz = (_ZONES.get(zone[0]) or ZoneInfo(zone[0])) if zone else mapping.timezone_of(SOURCE)
        micro = int((fraction + "000000")[:6]) if fraction else 0
        t = datetime(int(year), MONTHS[month], int(day), int(hh), int(mm), int(ss), micro, tz)
    except (ValueError, KeyError, IndexError):
        raise Unmappable("rt", "not epoch milliseconds nor MMM dd yyyy HH:mm:ss [zone]") from None
    return t.isoformat()
