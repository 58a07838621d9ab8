"""Admission of one input record: the validator's decision, without I/O.

The worker's validator (streams/validator.py) and `sepwatch replay` ask the
same question of every record: route it to the rules, or dead-letter it with
which reason (and which metric label). Keeping the answer a pure function lets
the tests throw hostile input at exactly the code the worker runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from detectors.dead_letters import dead_letter, reason_of
from detectors.pseudonyms import Pseudonymiser
from schemas import ControlReview, DevicePosture, DlpAlert, SaasAccess

AnyEvent = SaasAccess | DevicePosture | DlpAlert | ControlReview

MAX_LINE_BYTES = 1 << 20  # a canonical event is a few hundred bytes; 1 MiB is hostile

# Event times the rules can compute with. Before the Unix epoch is a zeroed or
# broken clock, not an event. The ceiling bounds the work one event can cause:
# SEP-008 decides every missed six-month review up to the watermark (a year-2500
# event makes ~1,900 findings per entity, year 9999 overflows the calendar).
EARLIEST_EVENT = datetime(1970, 1, 1, tzinfo=UTC).timestamp()
LATEST_EVENT = datetime(2100, 1, 1, tzinfo=UTC).timestamp()
TIME_FIELDS = ("timestamp", "completed_at", "reported_to_committee_at")


@dataclass(frozen=True)
class Admitted:
    event: AnyEvent  # as admitted: identifiers in its fields pseudonymised
    record: bytes  # what goes on: the bytes read, or the event re-encoded if it changed
    pseudonymised: tuple[str, ...] = ()  # fields that held an identifier (metric labels)


@dataclass(frozen=True)
class Refused:
    label: str  # the `kind` of sepwatch_dead_letters_total
    letter: dict[str, Any]  # the dead letter, masked

    @property
    def reason(self) -> str:
        return str(self.letter["reason"])


def admit(
    raw: bytes,
    *,
    where: dict[str, Any],
    topic_of: Callable[[str], str] | None = None,
    topic: str | None = None,
    appended_at: float | None = None,
    max_ahead_s: float | None = None,
    pseudonyms: Pseudonymiser,
) -> Admitted | Refused:
    """Validate one record. `topic_of(stream)` and `topic` check that an event
    came on its own topic; `appended_at` (epoch seconds, the broker's append
    time) and `max_ahead_s` refuse events stamped further ahead of it than
    clock skew explains: one such event would move the watermark and release
    every decision still waiting for events that have not arrived. An
    identifier in any field is replaced by its pseudonym (`pseudonymise`)."""
    if len(raw) > MAX_LINE_BYTES:
        reason = f"record of {len(raw)} bytes is over the {MAX_LINE_BYTES}-byte limit"
        return Refused("too_large", dead_letter(raw, reason, where=where))
    try:
        event, clean = pseudonyms.validate_json(raw)
    except ValidationError as exc:
        reason, errors = reason_of(exc)
        return Refused("invalid_event", dead_letter(raw, reason, where=where, errors=errors))
    times = _times(event)
    bad_time = _outside(times)
    if bad_time is not None:
        return Refused("out_of_range", dead_letter(raw, bad_time, where=where))
    if topic_of is not None and topic is not None:
        expected = topic_of(event.stream)
        if expected != topic:
            reason = f"a {event.stream} event on {topic}; it belongs on {expected}"
            return Refused("wrong_topic", dead_letter(raw, reason, where=where))
    if appended_at is not None and appended_at > 0 and max_ahead_s is not None:
        # A review's completion and report dates too: one forged years ahead
        # would hold off SEP-008 for its entity until then.
        for name, value, ts in times:
            ahead = ts - appended_at
            if ahead > max_ahead_s:
                reason = (
                    f"{name} {value.isoformat()} is {ahead:.0f} s ahead of "
                    f"the broker's append time {_iso(appended_at)}; at most "
                    f"{max_ahead_s:.0f} s is accepted (max_event_ahead_s)"
                )
                return Refused("too_far_ahead", dead_letter(raw, reason, where=where))
    if clean:  # its strings were checked as they were parsed
        return Admitted(event, raw)
    return pseudonymise(event, raw, pseudonyms, where=where)


def pseudonymise(
    event: AnyEvent, raw: bytes, pseudonyms: Pseudonymiser, *, where: dict[str, Any]
) -> Admitted | Refused:
    """The event with every identifier in its fields (a user id that is an
    RRN, a card number as a device id) replaced by its keyed pseudonym, so
    nothing raw goes further while the same person still joins across events.
    Refused if a pseudonym makes a field longer than the contract allows."""
    try:
        admitted, fields = pseudonyms.event(event)
    except ValidationError as exc:
        return Refused("invalid_event", too_long(raw, exc, where))
    if not fields:
        return Admitted(event, raw)
    return Admitted(admitted, admitted.model_dump_json().encode(), fields)


def too_long(raw: bytes, exc: ValidationError, where: dict[str, Any]) -> dict[str, Any]:
    """The dead letter of an event a pseudonym made longer than a field allows."""
    reason, errors = reason_of(exc)
    return dead_letter(
        raw, f"once its identifiers are pseudonymised: {reason}", where=where, errors=errors
    )


def capped_end(max_ts: Any, appended_at: float | None, max_ahead_s: float) -> float:
    """The last event time an end-of-input marker may claim: a producer counts
    every line, also those the validator refuses, and a marker is as forgeable
    as an event. Garbage reads as 0 (the end waits for the events' own clock)."""
    try:
        value = float(max_ts)
    except (TypeError, ValueError, OverflowError):
        return 0.0
    if value != value:  # NaN
        return 0.0
    ceiling = LATEST_EVENT
    if appended_at is not None and appended_at > 0:
        ceiling = min(ceiling, appended_at + max_ahead_s)
    return max(0.0, min(value, ceiling))


def out_of_range(event: AnyEvent) -> str | None:
    """Why one of the event's times is one the rules cannot compute with (a
    review's completion and report dates too), or None."""
    return _outside(_times(event))


def _outside(times: list[tuple[str, datetime, float]]) -> str | None:
    for name, value, ts in times:
        if not EARLIEST_EVENT <= ts < LATEST_EVENT:
            return (
                f"{name} {value.isoformat()} is outside the range the rules compute "
                f"with ({_iso(EARLIEST_EVENT)} to {_iso(LATEST_EVENT)})"
            )
    return None


_TIMES_OF: dict[type[Any], tuple[str, ...]] = {}


def _times(event: AnyEvent) -> list[tuple[str, datetime, float]]:
    """The event's own time fields that are set, with their epoch seconds.
    Only those its stream declares: an unknown field of the same name is kept
    as sent (`extra`), a string, not a time; and asking pydantic for a field
    the model lacks costs an exception each time."""
    names = _TIMES_OF.get(type(event))
    if names is None:
        declared = type(event).model_fields
        names = _TIMES_OF[type(event)] = tuple(n for n in TIME_FIELDS if n in declared)
    out = []
    for name in names:
        value = getattr(event, name)
        if value is not None:
            out.append((name, value, value.timestamp()))
    return out


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")
