"""Hostile input against the validator's decision (streams/admission.py), the
pure function the worker's validator and replay call: whatever comes in, the
answer is "route" or "dead letter with a reason", never an exception, and no
identifier comes out unmasked."""

from __future__ import annotations

import io
import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from detectors import Engine
from detectors.dead_letters import RAW_KEEP
from detectors.masking import mask_text
from detectors.pseudonyms import Pseudonymiser
from schemas import EventAdapter
from schemas.policy_file import load_policy
from streams.admission import (
    LATEST_EVENT,
    MAX_LINE_BYTES,
    Admitted,
    Refused,
    admit,
    capped_end,
)
from streams.replay import replay
from streams.topics import STORES, Topics
from tests.hostile import (
    BASE,
    TEMPLATES,
    hostile_records,
    json_values,
    leaks,
    rrns,
    templates,
)

TOPICS = Topics("fz.")
APPENDED = BASE.timestamp() + 30  # the broker appended the record 30 s after BASE
MAX_AHEAD = 300.0
LABELS = {"too_large", "invalid_event", "out_of_range", "wrong_topic", "too_far_ahead"}
WHERE = {"topic": "fz.saas-access", "partition": 0, "offset": 7}
KEYED = Pseudonymiser(b"test pseudonym key")
FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def decide(raw: bytes, topic: str | None = None) -> Admitted | Refused:
    return admit(
        raw,
        where=WHERE,
        topic_of=TOPICS.input if topic else None,
        topic=topic,
        appended_at=APPENDED,
        max_ahead_s=MAX_AHEAD,
        pseudonyms=KEYED,
    )


def assert_clean_letter(decision: Refused, planted: list[str]) -> None:
    assert decision.label in LABELS
    assert decision.reason.strip()
    text = json.dumps(decision.letter, ensure_ascii=False)
    assert leaks(text, planted) == [], text[:500]
    assert len(decision.letter["raw_masked"]) <= RAW_KEEP


@FUZZ
@given(record=hostile_records)
def test_every_hostile_record_is_a_dead_letter_with_a_reason_and_no_raw_identifier(
    record: tuple[bytes, list[str]],
) -> None:
    raw, planted = record
    logged = io.StringIO()
    handler = logging.StreamHandler(logged)
    root = logging.getLogger()
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.DEBUG)
    try:
        decision = decide(raw)
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    assert isinstance(decision, Refused), raw[:300]
    assert_clean_letter(decision, planted)
    assert leaks(logged.getvalue(), planted) == []


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=4096), st.sampled_from([None, *TOPICS.inputs]))
def test_any_bytes_on_any_topic_are_decided_without_raising(raw: bytes, topic: str | None) -> None:
    decision = decide(raw, topic)
    if isinstance(decision, Refused):
        assert decision.label in LABELS and decision.reason.strip()


@FUZZ
@given(
    st.sampled_from(TEMPLATES),
    st.dictionaries(st.sampled_from(["completed_at", "reported_to_committee_at"]), json_values),
)
def test_an_unknown_field_named_like_another_streams_time_is_kept_not_read_as_a_time(
    template: dict[str, Any], extra: dict[str, Any]
) -> None:
    """An access with a `completed_at` of "soon" once stopped the validator:
    the time checks read it as the review's date."""
    event = {**template, "timestamp": BASE.isoformat(), **extra}
    if template["stream"] == "control_review":
        event.update(completed_at=BASE.isoformat(), reported_to_committee_at=None)
    decision = decide(json.dumps(event).encode(), TOPICS.input(event["stream"]))
    assert isinstance(decision, Admitted)
    if template["stream"] != "control_review":
        # Compared as JSON: a NaN is kept too, and NaN != NaN.
        assert json.dumps(decision.event.extra, sort_keys=True) == json.dumps(extra, sort_keys=True)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(TEMPLATES),
    st.integers(min_value=-10 * 365 * 86400, max_value=10 * 365 * 86400)
    | st.integers(min_value=int(MAX_AHEAD) - 3, max_value=int(MAX_AHEAD) + 3),
)
def test_an_event_is_refused_exactly_when_it_is_stamped_beyond_the_cap(
    template: dict[str, Any], ahead: int
) -> None:
    at = datetime.fromtimestamp(APPENDED + ahead, UTC)
    event = {**template, "timestamp": at.isoformat()}
    if "completed_at" in event:
        event["completed_at"] = min(at, datetime.fromtimestamp(APPENDED, UTC)).isoformat()
    decision = decide(json.dumps(event).encode(), TOPICS.input(event["stream"]))
    if ahead > MAX_AHEAD:
        assert isinstance(decision, Refused) and decision.label == "too_far_ahead"
        assert "ahead of the broker's append time" in decision.reason
        assert "max_event_ahead_s" in decision.reason
    else:
        assert isinstance(decision, Admitted)
        assert decision.event.timestamp == at


@pytest.mark.parametrize("field", ["completed_at", "reported_to_committee_at"])
def test_a_review_completed_or_reported_beyond_the_cap_is_refused(field: str) -> None:
    review = {**TEMPLATES[3], "timestamp": BASE.isoformat()}
    review[field] = (BASE + timedelta(days=400)).isoformat()
    decision = decide(json.dumps(review).encode(), TOPICS.input("control_review"))
    assert isinstance(decision, Refused) and decision.label == "too_far_ahead"
    assert decision.reason.startswith(field)


@pytest.mark.parametrize(
    "stamp",
    [
        "0001-01-01T00:00:00+14:00",  # year 0 in UTC: the engine's date arithmetic raised
        "9999-12-31T23:59:59-14:00",  # year 10000 in UTC
        "1969-12-31T23:59:59+00:00",
        "2100-01-01T00:00:00+00:00",
    ],
)
def test_times_the_rules_cannot_compute_with_are_refused_also_without_a_broker(
    stamp: str,
) -> None:
    for template in TEMPLATES:
        event = {**template, "timestamp": stamp}
        decision = admit(json.dumps(event).encode(), where=WHERE, pseudonyms=KEYED)
        assert isinstance(decision, Refused) and decision.label == "out_of_range", stamp
        assert stamp in decision.reason


def test_a_wrong_topic_is_refused_with_where_it_belongs() -> None:
    decision = decide(json.dumps(TEMPLATES[0]).encode(), TOPICS.input("dlp_alert"))
    assert isinstance(decision, Refused) and decision.label == "wrong_topic"
    assert "fz.saas-access" in decision.reason


@pytest.mark.parametrize("depth", [200, 1_000, 100_000])
def test_deep_nesting_is_a_validation_error_not_a_recursion_error(depth: int) -> None:
    # pydantic-core's JSON parser stops at its own depth limit: a RecursionError
    # or ValueError here would stop the validator's agent.
    for raw in (b"[" * depth + b"]" * depth, b'{"a":' * depth + b"1" + b"}" * depth):
        with pytest.raises(ValidationError):
            EventAdapter.validator.validate_json(raw)
        decision = decide(raw)
        assert isinstance(decision, Refused) and decision.label == "invalid_event"
        assert "recursion limit" in decision.reason or depth < 256


def test_a_record_over_the_limit_is_refused_before_parsing_and_masked() -> None:
    raw = b'{"snippet": "900101-1234567 ' + b"x" * MAX_LINE_BYTES + b'"}'
    decision = decide(raw)
    assert isinstance(decision, Refused) and decision.label == "too_large"
    assert decision.letter["raw_truncated"] and decision.letter["raw_bytes"] == len(raw)
    assert "900101-1234567" not in decision.letter["raw_masked"]


@settings(max_examples=300, deadline=None)
@given(json_values | st.floats(allow_nan=True, allow_infinity=True))
def test_an_end_marker_claims_no_time_beyond_the_cap(claimed: Any) -> None:
    end = capped_end(claimed, APPENDED, MAX_AHEAD)
    assert 0.0 <= end <= APPENDED + MAX_AHEAD
    assert capped_end(claimed, None, MAX_AHEAD) <= LATEST_EVENT


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.data_too_large])
@given(st.lists(hostile_records, min_size=1, max_size=12), rrns())
def test_replay_goes_on_through_hostile_lines_and_masks_its_dead_letters(
    records: list[tuple[bytes, list[str]]], rrn: str
) -> None:
    valid = json.dumps({**TEMPLATES[2], "snippet": f"주민번호 {rrn}"}).encode()
    lines = [valid, *(raw for raw, _ in records), valid]
    planted = [rrn, *(r for _, p in records for r in p)]
    findings, dead = io.StringIO(), io.StringIO()
    summary = replay(load_policy("deploy/policy/example.yaml"), lines, findings, dead)
    assert summary.events >= 2  # the valid alerts on both sides were judged
    # Lines end at "\n" only: str.splitlines would also cut at U+0085 or U+2028 inside one.
    letters = [json.loads(x) for x in dead.getvalue().split("\n") if x]
    assert all(letter["reason"].strip() for letter in letters)
    assert leaks(dead.getvalue(), planted) == []
    assert leaks(findings.getvalue(), [rrn]) == []  # the snippet is masked in findings


def test_far_past_events_are_decided_at_once_and_hold_no_state() -> None:
    """The validator lets events from 1970 on through: late beyond the
    lateness, they must not pile up in the engine (issue 7: memory bounded)."""
    engine = Engine(load_policy("deploy/policy/example.yaml"), now=lambda: datetime.now(UTC))
    for event in templates(BASE):
        engine.process(EventAdapter.validate_python(event))
    before = {name: len(getattr(engine.state, name)) for name in STORES}
    for i in range(500):
        at = datetime(1971, 1, 1, tzinfo=UTC) + timedelta(days=7 * i)
        for event in templates(at):
            event = {**event, "event_id": f"{event['event_id']}-{i}"}
            engine.process(EventAdapter.validate_python(event))
    assert engine.stats["events.late"] == 4 * 500
    # (A posture of a device never seen before is kept, one per device, as at
    # any time: bounded by the devices, not by the events.)
    after = {name: len(getattr(engine.state, name)) for name in STORES}
    assert after == before


@pytest.mark.parametrize(
    "written",
    [
        "９００１０１－１２３４５６７",  # full-width
        "900101\u20101234567",  # hyphen
        "900101 \u2212 1234567",  # minus sign
        "٩٠٠١٠١-١٢٣٤٥٦٧",  # Arabic-Indic digits
    ],
)
def test_an_rrn_in_other_digits_or_dashes_is_masked(written: str) -> None:
    masked = mask_text(f"주민번호 {written} 끝")
    assert masked == "주민번호 900101-1****** 끝"


def test_a_dead_letter_stays_small_whatever_the_record_holds() -> None:
    """An unknown `stream` tag of 900 KB is quoted in pydantic's message, and a
    list of thousands of wrong items gives thousands of errors: the dead letter
    of either stays a few KiB (the worker once could not send one, 1.8 MB)."""
    rrn = "900101-1234567"
    tag = (
        b'{"stream": "' + rrn.encode() + b"x" * 900_000 + b'", "timestamp": "2026-11-23T00:00:00Z"}'
    )
    many = (
        b'{"stream": "saas_access", "timestamp": "2026-11-23T00:00:00Z", "user": ['
        + b",".join([b"{}"] * 50_000)
        + b"]}"
    )
    for raw in (tag, many):
        decision = admit(raw, where={"topic": "t", "partition": 0, "offset": 1}, pseudonyms=KEYED)
        assert isinstance(decision, Refused)
        letter = json.dumps(decision.letter, ensure_ascii=False)
        assert len(letter) < 64_000, len(letter)
        assert rrn not in letter
        assert decision.letter["reason"]
