"""Raw records through an adapter: reading vendor files, counting what is
skipped, and dead letters for what cannot be mapped (masked, with the source,
the field and the reason)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Protocol

from pydantic import ValidationError

from adapters.mapping import VendorMapping
from adapters.records import Adapter, CanonicalEvent, Skip, Unmappable, UnrecognisedShape
from adapters.records import field as field_at
from detectors.dead_letters import dead_letter, reason_of
from detectors.masking import mask_text
from schemas import EventAdapter

MAX_RECORD_BYTES = 1 << 20
_NOT_JSON = object()


class LineSink(Protocol):
    """Where dead letters are written, one JSON a line: a file, or a topic."""

    def write(self, text: str, /) -> int: ...


@dataclass
class AdaptCounts:
    records: int = 0
    events: Counter[str] = field(default_factory=Counter)  # by stream
    skipped: Counter[str] = field(default_factory=Counter)  # by vendor event type
    dead_letters: int = 0
    dead_reasons: Counter[str] = field(default_factory=Counter)  # "field: reason", masked

    def dead(self, letter: dict[str, Any]) -> None:
        self.dead_letters += 1
        self.dead_reasons[dead_reason(letter)] += 1


@dataclass(frozen=True)
class RawRecord:
    """One vendor record and where it came from (file line, or topic offset)."""

    value: Any
    raw: bytes
    where: dict[str, Any]


# Shipper envelopes (docs/adapters.md, "Shipping to Kafka"): where a log
# shipper puts the vendor's record. Elastic Agent keeps the original as a
# string in `event.original`; Filebeat, Vector and Elastic Agent put the line
# read in `message`; Fluent Bit's tail input in `log`; Filebeat's `json`
# decoding under `json`. Splunk HEC events (and Zscaler's NSS JSON feed, which
# borrows the format) hold it in `event`, beside HEC metadata.
SHIPPER_TEXT = ("event.original", "message", "log")
HEC_METADATA = frozenset({"time", "host", "source", "sourcetype", "index", "fields"})
MAX_DEPTH = 4  # envelopes inside envelopes: a shipper's message holding a page


def records_of(document: Any, adapter: Adapter, depth: int = 0) -> Iterator[Any]:
    """The records in one parsed document: a record, a JSON array of them, the
    vendor's paging envelope (`{"value": [...]}`, `{"items": [...]}`), an Event
    Hubs batch (`{"records": [...]}`), or a shipper's envelope around any of
    these. A document that is none of them is yielded as it is, for
    `adapt_one` to dead-letter as an unrecognised shape."""
    if isinstance(document, list):
        for item in document:
            yield from records_of(item, adapter, depth)
        return
    if isinstance(document, dict) and depth < MAX_DEPTH:
        for path in adapter.envelopes:
            inner = field_at(document, path)
            if isinstance(inner, list):
                for item in inner:
                    yield from records_of(item, adapter, depth + 1)
                return
        if not adapter.knows(document):
            inner = _unwrapped(document, adapter)
            if inner is not _NOT_JSON:
                yield from records_of(inner, adapter, depth + 1)
                return
    yield document


def _unwrapped(document: dict[str, Any], adapter: Adapter) -> Any:
    """What a shipper's envelope holds, or _NOT_JSON where it is none."""
    if isinstance(document.get("records"), list):  # an Event Hubs batch
        return document["records"]
    for path in SHIPPER_TEXT:
        text = field_at(document, path)
        if isinstance(text, str) and (inner := _text_record(text, adapter)) is not _NOT_JSON:
            return inner
    if isinstance(document.get("json"), dict):
        return document["json"]
    if "event" in document and not HEC_METADATA.isdisjoint(document):
        event = document["event"]
        return _text_record(event, adapter) if isinstance(event, str) else event
    return _NOT_JSON


def _text_record(text: str, adapter: Adapter) -> Any:
    """A shipped line: the JSON it holds, or the line itself for a text source."""
    line = text.strip()
    if line[:1] in ("{", "["):
        try:
            return json.loads(line)
        except ValueError:
            return _NOT_JSON
    return line if adapter.text and line else _NOT_JSON


def read_raw(lines: Iterable[bytes], adapter: Adapter, name: str = "-") -> Iterator[RawRecord]:
    """Records of a file of raw records: JSON lines (each a record or a page),
    one JSON array or envelope (pretty-printed or not), or, for text sources
    (CEF), one record a line. A line that is not JSON is a RawRecord whose
    value is None: the caller dead-letters it."""
    it = iter(lines)
    first = True
    for number, line in enumerate(it, start=1):
        if not line.strip():
            continue
        if adapter.text and line.lstrip()[:1] != b"{":
            yield RawRecord(line.decode("utf-8", "replace").rstrip("\r\n"), line, _at(name, number))
            continue
        try:
            document = json.loads(line)
        except ValueError:
            document = _NOT_JSON
        if document is _NOT_JSON and first and not adapter.text and line.lstrip()[:1] in b"[{":
            # One document over many lines: a pretty-printed array or envelope.
            whole = line + b"".join(it)
            try:
                document = json.loads(whole)
            except ValueError:
                yield RawRecord(None, whole[:MAX_RECORD_BYTES], _at(name, number))
                return
        first = False
        if document is _NOT_JSON:
            yield RawRecord(None, line, _at(name, number))
            continue
        yield from _records(document, adapter, name, number)


def _records(document: Any, adapter: Adapter, name: str, number: int) -> Iterator[RawRecord]:
    for index, record in enumerate(records_of(document, adapter)):
        yield RawRecord(record, _raw_of(record), {**_at(name, number), "record": index})


def _at(name: str, number: int) -> dict[str, Any]:
    return {"file": name, "line": number}


@lru_cache(maxsize=4096)
def _masked_kind(kind: str) -> str:
    return mask_text(kind)[:200]


def skip_kind(skip: Skip) -> str:
    """The kind a skip is counted under: vendor text, so masked and cut
    before it reaches a table or a log line."""
    return _masked_kind(skip.kind)


def adapt_one(adapter: Adapter, record: Any, mapping: VendorMapping) -> list[CanonicalEvent] | Skip:
    """The adapter on one record; any shape it did not expect is Unmappable."""
    if record is None:
        raise Unmappable("(record)", "not JSON")
    if not adapter.knows(record):
        raise UnrecognisedShape(adapter.source, record)
    try:
        return adapter.adapt(record, mapping)
    except Unmappable:
        raise
    except (TypeError, AttributeError, KeyError, ValueError, IndexError) as exc:
        # No message: it may quote the record's values.
        raise Unmappable("(record)", f"unexpected shape ({type(exc).__name__})") from None


def dead_reason(letter: dict[str, Any]) -> str:
    """A dead letter's reason without its source: what a summary groups by."""
    reason = str(letter["reason"])
    source = letter.get("source")
    return reason.removeprefix(f"{source}: ") if source else reason


def unmappable_letter(
    source: str, raw: bytes, exc: Unmappable, where: dict[str, Any]
) -> dict[str, Any]:
    return dead_letter(
        raw,
        f"{source}: {exc.field}: {exc.reason}",
        where={**where, "source": source, "field": exc.field},
    )


def adapt_records(
    adapter: Adapter,
    records: Iterable[RawRecord],
    mapping: VendorMapping,
    counts: AdaptCounts,
    dead_out: LineSink,
    *,
    validate: bool = False,
) -> Iterator[CanonicalEvent]:
    """Canonical events of the records, in order; dead letters written as JSON
    lines to `dead_out`. With `validate`, events are checked against the
    contract here (as `sepwatch adapt` does, for a user checking a mapping)."""
    for item in records:
        counts.records += 1
        try:
            if len(item.raw) > MAX_RECORD_BYTES:
                raise Unmappable("(record)", f"record of {len(item.raw)} bytes is over the limit")
            outcome = adapt_one(adapter, item.value, mapping)
        except Unmappable as exc:
            letter = unmappable_letter(adapter.source, item.raw, exc, item.where)
            _write(dead_out, letter)
            counts.dead(letter)
            continue
        if isinstance(outcome, Skip):
            counts.skipped[skip_kind(outcome)] += 1
            continue
        for event in outcome:
            if validate:
                try:
                    EventAdapter.validate_python(event)
                except ValidationError as exc:
                    reason, errors = reason_of(exc)
                    letter = dead_letter(
                        item.raw,
                        f"{adapter.source}: the canonical event is not valid: {reason}",
                        where={**item.where, "source": adapter.source, "field": "(event)"},
                        errors=errors,
                    )
                    _write(dead_out, letter)
                    counts.dead(letter)
                    continue
            counts.events[event["stream"]] += 1
            yield event


def _write(out: LineSink, record: dict[str, Any]) -> None:
    out.write(json.dumps(record, ensure_ascii=False))
    out.write("\n")


OUTCOMES = ("event", "skipped", "dead")  # of one raw record
MAX_SKIP_KINDS = 50  # skip kinds a source may show as metric labels


class SkipLabels:
    """Skip kinds as metric label values: vendor text, so a source keeps the
    first MAX_SKIP_KINDS it shows and counts the rest as `other`, which keeps
    the label set bounded whatever a feed sends."""

    def __init__(self) -> None:
        self._seen: dict[str, set[str]] = {}

    def label(self, source: str, kind: str) -> str:
        seen = self._seen.setdefault(source, set())
        if kind not in seen and len(seen) >= MAX_SKIP_KINDS:
            return "other"
        seen.add(kind)
        return kind


@dataclass
class MessageOutcome:
    """What one message of a raw topic became; `records` counts its records by
    outcome (event, skipped, dead), as `sepwatch_adapter_records_total` does."""

    events: list[CanonicalEvent] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    records: Counter[str] = field(default_factory=Counter)


def adapt_message(
    adapter: Adapter, value: bytes, mapping: VendorMapping, where: dict[str, Any]
) -> MessageOutcome:
    """One message of PREFIXraw.<source>: a record, or a page of them as some
    connectors deliver (an Event Hubs batch, a Graph page), or either inside a
    shipper's envelope."""
    outcome = MessageOutcome()
    records: list[tuple[Any, bytes]]
    if len(value) > MAX_RECORD_BYTES:
        records = [(None, value[:MAX_RECORD_BYTES])]
    elif adapter.text and value.lstrip()[:1] != b"{":
        records = [(value.decode("utf-8", "replace").strip(), value)]
    else:
        try:
            document = json.loads(value)
        except ValueError:
            records = [(None, value)]
        else:
            found = list(records_of(document, adapter))
            records = (
                [(document, value)]
                if len(found) == 1 and found[0] is document
                else [(r, _raw_of(r)) for r in found]
            )
    for index, (record, raw) in enumerate(records):
        try:
            if record is None and len(value) > MAX_RECORD_BYTES:
                raise Unmappable("(record)", f"record of {len(value)} bytes is over the limit")
            adapted = adapt_one(adapter, record, mapping)
        except Unmappable as exc:
            at = {**where, "record": index} if len(records) > 1 else where
            outcome.dead_letters.append(unmappable_letter(adapter.source, raw, exc, at))
            outcome.records["dead"] += 1
            continue
        if isinstance(adapted, Skip):
            outcome.skipped.append(skip_kind(adapted))
            outcome.records["skipped"] += 1
        else:
            outcome.events.extend(adapted)
            outcome.records["event" if adapted else "skipped"] += 1
    return outcome


def _raw_of(record: Any) -> bytes:
    return (
        record.encode()
        if isinstance(record, str)
        else json.dumps(record, ensure_ascii=False).encode()
    )
