"""Hostile input records (hypothesis strategies), for the unit fuzz of the
validator and the integration fuzz on a real broker.

Each strategy draws `(raw bytes, identifiers planted in it)`: the identifiers
are made-up numbers of RRN shape that must never come out unmasked.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

# Made-up RRN-shaped numbers (never a real person's): YYMMDD, a separator the
# masking recognises, a gender digit, six digits.
SEPARATORS = ["-", "", " - ", ".", " "]


# Digits of other scripts (full-width, Arabic-Indic, Devanagari) and dashes
# other than "-": the same identifier, written otherwise.
ZEROS = [0x30, 0xFF10, 0x660, 0x966]
DASHES = ["-", "\u2010", "\u2212", "\uff0d"]


@st.composite
def rrns(draw: st.DrawFn) -> str:
    yy, mm, dd = draw(st.integers(0, 99)), draw(st.integers(1, 12)), draw(st.integers(1, 28))
    gender = draw(st.integers(1, 8))
    rest = draw(st.integers(0, 999_999))
    sep = draw(st.sampled_from(SEPARATORS))
    text = f"{yy:02d}{mm:02d}{dd:02d}{sep}{gender}{rest:06d}"
    zero = draw(st.sampled_from(ZEROS))
    dash = draw(st.sampled_from(DASHES))
    return "".join(chr(zero + int(c)) if c.isdigit() else dash if c == "-" else c for c in text)


def _digits(text: str) -> str:
    """Decimal digits of any script as ASCII; everything else as it is."""
    return "".join(str(int(c)) if c.isdecimal() else c for c in text)


def leaks(text: str, planted: list[str]) -> list[str]:
    """The planted identifiers that appear whole in `text`, as written, or as
    bare digits of any script."""
    folded = _digits(text)
    return [
        r for r in planted if r in text or "".join(c for c in _digits(r) if c.isdigit()) in folded
    ]


def templates(at: datetime) -> list[dict[str, Any]]:
    """One valid event of each stream, stamped `at`."""
    ts = at.isoformat()
    return [
        {
            "stream": "saas_access",
            "event_id": "fz-a",
            "timestamp": ts,
            "entity": "HQ",
            "user_id": "u-fz",
            "device_id": "d-fz",
            "saas_app": "m365-teams",
            "action": "view",
            "network_zone": "internal",
        },
        {
            "stream": "device_posture",
            "event_id": "fz-p",
            "timestamp": ts,
            "entity": "HQ",
            "device_id": "d-fz",
            "managed": True,
            "edr_running": True,
            "disk_encrypted": True,
            "screen_lock": True,
            "os_patch_age_days": 3,
        },
        {
            "stream": "dlp_alert",
            "event_id": "fz-d",
            "timestamp": ts,
            "entity": "HQ",
            "user_id": "u-fz",
            "channel": "saas_upload",
            "saas_app": "m365-teams",
            "data_types": ["kr_rrn"],
            "match_count": 1,
            "snippet": "주민번호",
        },
        {
            "stream": "control_review",
            "event_id": "fz-r",
            "timestamp": ts,
            "entity": "HQ",
            "completed_at": ts,
            "reviewer": "CISO",
        },
    ]


BASE = datetime(2026, 11, 23, 1, 0, tzinfo=UTC)
TEMPLATES = templates(BASE)

json_leaves = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    json_leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
# Unicode that breaks naive code: NUL, lone surrogates (as JSON escapes, the
# only way they travel in UTF-8 JSON), right-to-left override, combining marks,
# BOM, non-characters, astral plane, full-width digits.
EDGE = [
    "\x00",
    "\\ud800",
    "\\udfff",
    "\\udbff\\udfff",
    "\u202e",
    "\u0301\u0301\u0301",
    "\ufeff",
    "\uffff",
    "\U0001f600",
    "\u200b",
    "Ａ",
    "\u0130",
]


@st.composite
def unicode_edges(draw: st.DrawFn) -> str:
    """A JSON string body (already escaped where needed) full of edge cases."""
    parts = draw(st.lists(st.sampled_from(EDGE) | st.text(max_size=5).map(_escape), max_size=8))
    return "".join(parts)


def _escape(text: str) -> str:
    return json.dumps(text)[1:-1]


def _dump(event: Any) -> bytes:
    return json.dumps(event, ensure_ascii=False).encode("utf-8", "surrogatepass")


def _set_field(event: dict[str, Any], field: str, value: Any) -> dict[str, Any]:
    out = dict(event)
    out[field] = value
    return out


@st.composite
def random_bytes(draw: st.DrawFn) -> tuple[bytes, list[str]]:
    return draw(st.binary(min_size=0, max_size=2048)), []


@st.composite
def huge_strings(draw: st.DrawFn, over_limit: bool = True) -> tuple[bytes, list[str]]:
    """A field hundreds of KiB to over a MiB long, an identifier at its end
    (past what a dead letter keeps) or at its start."""
    event = draw(st.sampled_from(TEMPLATES))
    field = draw(st.sampled_from(sorted(event)))
    rrn = draw(rrns())
    sizes = [5_000, 300_000, 900_000] + ([(1 << 20) + 10] if over_limit else [])
    size = draw(st.sampled_from(sizes))
    body = "x" * size
    value = f"{rrn} {body}" if draw(st.booleans()) else f"{body} {rrn}"
    return _dump(_set_field(event, field, value)), [rrn]


@st.composite
def deep_nesting(draw: st.DrawFn) -> tuple[bytes, list[str]]:
    depth = draw(st.sampled_from([150, 300, 1_000, 50_000]))
    rrn = draw(rrns())
    if draw(st.booleans()):
        core = "[" * depth + json.dumps(rrn) + "]" * depth
    else:
        core = '{"k":' * depth + json.dumps(rrn) + "}" * depth
    event = draw(st.sampled_from(TEMPLATES))
    field = draw(st.sampled_from(sorted(event)))
    text = _dump(event).decode()
    # The nested value replaces one field (or is the whole record).
    if draw(st.booleans()):
        return core.encode(), [rrn]
    key = json.dumps(field)
    start = text.index(key + ": ") + len(key) + 2
    end = start + len(json.dumps(event[field], ensure_ascii=False))
    return (text[:start] + core + text[end:]).encode(), [rrn]


@st.composite
def wrong_types(draw: st.DrawFn) -> tuple[bytes, list[str]]:
    event = draw(st.sampled_from(TEMPLATES))
    field = draw(st.sampled_from(sorted(event)))
    rrn = draw(rrns())
    # An object where every template field takes a scalar or a list, with an
    # identifier as its key or in its value.
    value = {rrn: draw(json_values)} if draw(st.booleans()) else {"v": [draw(json_values), rrn]}
    return _dump(_set_field(event, field, value)), [rrn]


MIN_OFFSET = timezone(timedelta(hours=-14))
MAX_OFFSET = timezone(timedelta(hours=14))


@st.composite
def far_times(draw: st.DrawFn) -> tuple[bytes, list[str]]:
    """A valid event stamped far in the past or the future (year 1 to 9999,
    offsets to +-14 h), or a review completed or reported then."""
    event = dict(draw(st.sampled_from(TEMPLATES)))
    when = draw(
        st.sampled_from(
            [
                datetime(1, 1, 1, tzinfo=MAX_OFFSET),
                datetime(9999, 12, 31, 23, 59, tzinfo=MIN_OFFSET),
                datetime(1969, 12, 31, 23, 59, tzinfo=UTC),
                datetime(2100, 1, 1, tzinfo=UTC),
            ]
        )
        | st.datetimes(
            min_value=datetime(1, 1, 2),
            max_value=datetime(1969, 12, 31),
            timezones=st.just(UTC),
        )
        | st.datetimes(
            min_value=datetime(2100, 1, 2),
            max_value=datetime(9999, 12, 30),
            timezones=st.sampled_from([UTC, MIN_OFFSET, MAX_OFFSET]),
        )
        | st.datetimes(  # ahead of now by more than clock skew, but still "valid"
            min_value=datetime(2027, 1, 1),
            max_value=datetime(2099, 12, 31),
            timezones=st.just(UTC),
        )
    )
    fields = ["timestamp"]
    if event["stream"] == "control_review":
        fields += ["completed_at", "reported_to_committee_at"]
    event[draw(st.sampled_from(fields))] = when.isoformat()
    rrn = draw(rrns())
    event["event_id"] = f"far-{rrn}"
    return _dump(event), [rrn]


@st.composite
def unicode_fields(draw: st.DrawFn) -> tuple[bytes, list[str]]:
    """Unicode edge cases around an identifier in a field that cannot take them
    (an enum, a bounded or required field), so the record is refused."""
    event = draw(st.sampled_from(TEMPLATES))
    rrn = draw(rrns())
    body = draw(unicode_edges()) + rrn + draw(unicode_edges())
    text = _dump(_set_field(event, "stream", "@@")).decode()
    text = text.replace('"@@"', json.dumps(f"\u202e{rrn}")[:-1] + body + '"')
    return text.encode("utf-8", "surrogatepass"), [rrn]


@st.composite
def missing_or_garbled(draw: st.DrawFn) -> tuple[bytes, list[str]]:
    """A valid event cut short, missing a required field, or with an
    identifier as its stream tag or timestamp."""
    event = dict(draw(st.sampled_from(TEMPLATES)))
    rrn = draw(rrns())
    how = draw(st.sampled_from(["cut", "drop", "stream", "timestamp", "naive"]))
    if how == "cut":
        raw = _dump(_set_field(event, "entity", rrn))
        return raw[: draw(st.integers(1, len(raw) - 1))], [rrn]
    if how == "drop":
        event.pop(draw(st.sampled_from(["timestamp", "event_id", "entity"])))
        event["user_id"] = rrn if event["stream"] != "control_review" else 1
        event["event_id" if "event_id" in event else "entity"] = {"rrn": rrn}
        return _dump(event), [rrn]
    if how == "stream":
        return _dump(_set_field(event, "stream", rrn)), [rrn]
    if how == "timestamp":
        # Not the bare digits: pydantic reads a number as epoch seconds or ms.
        return _dump(_set_field(event, "timestamp", f"RRN {rrn}")), [rrn]
    return _dump(_set_field(event, "timestamp", f"2026-11-23T01:00:00 {rrn}")), [rrn]


# Every kind of hostile record: each is refused by the validator.
hostile_records = st.one_of(
    random_bytes(),
    huge_strings(),
    deep_nesting(),
    wrong_types(),
    far_times(),
    unicode_fields(),
    missing_or_garbled(),
)
# The same within what a broker takes by default (message.max.bytes, 1 MiB).
broker_hostile_records = st.one_of(
    random_bytes(),
    huge_strings(over_limit=False),
    deep_nesting(),
    wrong_types(),
    far_times(),
    unicode_fields(),
    missing_or_garbled(),
)
