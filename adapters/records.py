"""What every adapter speaks: the outcome of one raw record, vendor times, ids.

An adapter is a pure function from one raw record (and the mapping) to zero or
more canonical events, as plain dicts with their `stream` field. It returns
`Skip(kind)` for a vendor event type that carries no access, posture or DLP
meaning (counted, never dead-lettered), and raises `Unmappable(field, reason)`
for a record it cannot map (dead-lettered with the source, field and reason).

A source declares the shapes of its records (`Adapter.shapes`: the paths a
record always carries); a record with none of them is not that source's
(another source's feed on its topic, or an envelope nobody unwrapped) and is
dead-lettered as `UnrecognisedShape`, never skipped. An adapter that tells
shapes apart in its own way raises `UnrecognisedShape` itself.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from functools import cached_property
from typing import TYPE_CHECKING, Any

from detectors.masking import mask_text

if TYPE_CHECKING:
    from adapters.mapping import VendorMapping

CanonicalEvent = dict[str, Any]


@dataclass(frozen=True)
class Skip:
    """A vendor event type with no meaning for the rules, e.g. an Okta group change."""

    kind: str


class Unmappable(ValueError):
    """A record the adapter cannot map; `field` is the vendor's field path."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class UnrecognisedShape(Unmappable):
    """A record that is none of the shapes its source knows: named by its
    top-level keys (masked with the dead letter), never by its values."""

    def __init__(self, source: str, record: Any) -> None:
        if isinstance(record, dict):
            keys = sorted(str(k)[:40] for k in record)
            what = "top-level keys " + (", ".join(keys[:12]) or "none")
            what += f" and {len(keys) - 12} more" if len(keys) > 12 else ""
        else:
            what = f"a JSON {type(record).__name__}, not an object"
        super().__init__("(record)", f"unrecognised shape for {source}: {what}")


# Every identifier mask_text hides has six digits each at most one character
# apart; text without such a run is left as it is without the three passes.
_MAYBE_IDENTIFIER = re.compile(r"(?:[0-9][^0-9]?){6}")


def masked(text: str) -> str:
    """`mask_text`, skipped for text with no identifier-shaped digit run."""
    return mask_text(text) if _MAYBE_IDENTIFIER.search(text) else text


Adapted = list[CanonicalEvent] | Skip
AdaptFunction = Callable[[Any, "VendorMapping"], Adapted]


Shape = tuple[str, ...]
"""Dotted paths that a record of one documented shape always carries."""


@dataclass(frozen=True)
class Adapter:
    """One source: its id, its function, where its records sit in a page,
    and the shapes its records come in.

    `envelopes` are the keys of the vendor's paging envelope that hold the
    records (`value` for Microsoft Graph, `items` for Google's Reports API);
    `text` marks a source whose records are text lines (CEF), not JSON.
    `shapes`: a record is this source's when it carries every path of one of
    them (`(("eventType", "uuid"),)` for Okta); anything else is an
    envelope to unwrap or a dead letter. No shapes: every JSON object is
    taken as a record, and the adapter must raise `UnrecognisedShape` itself.
    """

    source: str
    adapt: AdaptFunction
    envelopes: tuple[str, ...] = ()
    text: bool = False
    shapes: tuple[Shape, ...] = ()

    def knows(self, record: Any) -> bool:
        """Whether `record` is one of this source's records (not an envelope
        or another source's): a string for a text source, else an object of
        one of its shapes."""
        if self.text:
            return isinstance(record, str)
        if not isinstance(record, dict):
            return False
        keys = record.keys()
        for top, nested in self._shape_checks:
            if keys >= top and (not nested or all(_present(record, p) for p in nested)):
                return True
        return not self.shapes

    @cached_property
    def _shape_checks(self) -> tuple[tuple[frozenset[str], tuple[str, ...]], ...]:
        # Top-level keys as one set comparison: this runs on every record.
        return tuple(
            (frozenset(p for p in shape if "." not in p), tuple(p for p in shape if "." in p))
            for shape in self.shapes
        )


def _present(record: dict[str, Any], path: str) -> bool:
    # The key, not its value: an empty value is the adapter's to report by name.
    return field(record, path) is not None


def field(record: dict[str, Any], path: str) -> Any:
    """The value at a dotted path, or None where any step is missing."""
    if "." not in path:  # most paths: one step, without the loop
        return record.get(path) if isinstance(record, dict) else None
    value: Any = record
    for step in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(step)
    return value


def required(record: dict[str, Any], path: str) -> Any:
    value = field(record, path)
    if value is None or value == "":
        raise Unmappable(path, "missing")
    return value


def text_of(record: dict[str, Any], path: str) -> str:
    value = required(record, path)
    if not isinstance(value, str | int):
        raise Unmappable(path, f"expected a string, got {type(value).__name__}")
    return str(value).strip()


def derived_id(source: str, *parts: object) -> str:
    """A deterministic event id for a vendor record that has none of its own:
    the same record always gets the same id, so a replay never doubles it."""
    # A list, not a generator: join makes one from a generator first anyway.
    joined = "\x1f".join(["" if p is None else str(p) for p in parts])
    digest = hashlib.blake2b(joined.encode(), digest_size=12).hexdigest()
    return f"{source}:{digest}"


# -- vendor times -> RFC 3339 with an offset -----------------------------------


def iso_time(value: Any, path: str, assume: tzinfo = UTC) -> str:
    """ISO 8601 with or without a zone. A zone-less time is read in `assume`:
    the zone the vendor documents for that field (Microsoft's `CreationTime`
    is UTC) or the one the mapping sets for the source."""
    if not isinstance(value, str) or not value:
        raise Unmappable(path, "missing" if value in (None, "") else "not a time string")
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        raise Unmappable(path, "not an ISO 8601 time") from None
    if (value[-1] == "Z" or (t.tzinfo is None and assume is UTC)) and _calendar_form(value):
        # In UTC: what isoformat() gives, read off the text (formatting a
        # datetime costs several times what parsing it does).
        fraction = f".{t.microsecond:06d}" if t.microsecond else ""
        return f"{value[:10]}T{value[11:19]}{fraction}+00:00"
    if t.tzinfo is None:
        t = t.replace(tzinfo=assume)
    return t.isoformat()


def _calendar_form(value: str) -> bool:
    """`YYYY-MM-DD?HH:MM:SS...`, for a text `fromisoformat` read: the date and
    clock as isoformat() writes them (not a week or ordinal date, nor hour 24)."""
    return (
        len(value) >= 19
        and value[4] == "-"
        and value[7] == "-"
        and value[13] == ":"
        and value[16] == ":"
        and value[11:13] < "24"
    )


def epoch_time(value: Any, path: str) -> str:
    """Epoch seconds or milliseconds (as a number or a numeric string)."""
    try:
        n = float(value)
    except (TypeError, ValueError):
        raise Unmappable(path, "not an epoch time") from None
    if n > 1e11:  # milliseconds: 1e11 s is the year 5138
        n /= 1000.0
    if not 0 < n < 1e11:
        raise Unmappable(path, "epoch time out of range")
    return datetime.fromtimestamp(n, UTC).isoformat()


MONTHS = {
    m: i
    for i, m in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}


def ctime_time(value: Any, path: str, assume: tzinfo = UTC) -> str:
    """A ctime string, `Fri Dec 31 07:07:07 2021`, with an optional trailing
    `UTC`/`GMT` (osquery's calendarTime) or a numeric offset (`+0900`)."""
    parts = value.split() if isinstance(value, str) else []
    try:
        _, month, day, clock, year, *zone = parts
        hh, mm, ss = clock.split(":")
        zone_of = _zone(zone[0]) if zone else assume
        t = datetime(int(year), MONTHS[month], int(day), int(hh), int(mm), int(ss), 0, zone_of)
    except (ValueError, KeyError, IndexError):
        raise Unmappable(path, "not a ctime string") from None
    return t.isoformat()


def _zone(text: str) -> tzinfo:
    if text in ("UTC", "GMT", "Z"):
        return UTC
    sign = -1 if text[0] == "-" else 1
    digits = text.lstrip("+-").replace(":", "")
    if len(digits) != 4 or not digits.isdigit() or text[0] not in "+-":
        raise ValueError(text)
    return timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))
