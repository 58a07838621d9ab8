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

from detectors.masking import mask_text
from schemas import EventAdapter
from streams.adapters.mapping import VendorMapping
from streams.adapters.records import Adapter, CanonicalEvent, Skip, Unmappable
from streams.adapters.records import field as field_at
from streams.dead_letters import dead_letter, reason_of

MAX_RECORD_BYTES = 1 << 20


class LineSink(Protocol):
    """Where dead letters are written, one JSON a line: a file, or a topic."""

    def write(self, text: str, /) -> int: ...


@dataclass
class AdaptCounts:
    records: int = 0
    events: Counter[str] = field(default_factory=Counter)  # by stream
    skipped: Counter[str] = field(default_factory=Counter)  # by vendor event type
    dead_letters: int = 0


@dataclass(frozen=True)
class RawRecord:
    """One vendor record and where it came from (file line, or topic offset)."""

    value: Any
    raw: bytes
    where: dict[str, Any]


def records_of(document: Any, adapter: Adapter) -> Iterator[Any]:
    """The records in one parsed document: a record, a JSON array of them, or
    the vendor's paging envelope (`{"value": [...]}`, `{"items": [...]}`)."""
    if isinstance(document, list):
        for item in document:
            yield from records_of(item, adapter)
        return
    if isinstance(document, dict):
        for path in adapter.envelopes:
            inner = field_at(document, path)
            if isinstance(inner, list):
                yield from inner
                return
    yield document


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
        if adapter.text:
            yield RawRecord(line.decode("utf-8", "replace").rstrip("\r\n"), line, _at(name, number))
            continue
        try:
            document = json.loads(line)
        except ValueError:
            document = _NOT_JSON
        if document is _NOT_JSON and first and line.lstrip()[:1] in (b"[", b"{"):
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


_NOT_JSON = object()


def _records(document: Any, adapter: Adapter, name: str, number: int) -> Iterator[RawRecord]:
    for index, record in enumerate(records_of(document, adapter)):
        raw = json.dumps(record, ensure_ascii=False).encode()
        yield RawRecord(record, raw, {**_at(name, number), "record": index})


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
    if not adapter.text and not isinstance(record, dict):
        raise Unmappable("(record)", f"expected a JSON object, got {type(record).__name__}")
    try:
        return adapter.adapt(record, mapping)
    except Unmappable:
        raise
    except (TypeError, AttributeError, KeyError, ValueError, IndexError) as exc:
        # No message: it may quote the record's values.
        raise Unmappable("(record)", f"unexpected shape ({type(exc).__name__})") from None


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
            _write(dead_out, unmappable_letter(adapter.source, item.raw, exc, item.where))
            counts.dead_letters += 1
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
                    counts.dead_letters += 1
                    continue
            counts.events[event["stream"]] += 1
            yield event


def _write(out: LineSink, record: dict[str, Any]) -> None:
    out.write(json.dumps(record, ensure_ascii=False))
    out.write("\n")


@dataclass
class MessageOutcome:
    """What one message of a raw topic became."""

    events: list[CanonicalEvent] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)


def adapt_message(
    adapter: Adapter, value: bytes, mapping: VendorMapping, where: dict[str, Any]
) -> MessageOutcome:
    """One message of PREFIXraw.<source>: a record, or a page of them as some
    connectors deliver (an Event Hubs batch, a Graph page)."""
    outcome = MessageOutcome()
    records: list[tuple[Any, bytes]]
    if len(value) > MAX_RECORD_BYTES:
        records = [(None, value[:MAX_RECORD_BYTES])]
    elif adapter.text:
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
                else [(r, json.dumps(r, ensure_ascii=False).encode()) for r in found]
            )
    for index, (record, raw) in enumerate(records):
        try:
            if record is None and len(value) > MAX_RECORD_BYTES:
                raise Unmappable("(record)", f"record of {len(value)} bytes is over the limit")
            adapted = adapt_one(adapter, record, mapping)
        except Unmappable as exc:
            at = {**where, "record": index} if len(records) > 1 else where
            outcome.dead_letters.append(unmappable_letter(adapter.source, raw, exc, at))
            continue
        if isinstance(adapted, Skip):
            outcome.skipped.append(skip_kind(adapted))
        else:
            outcome.events.extend(adapted)
    return outcome
