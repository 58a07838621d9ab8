"""End-of-input markers (streams/end_of_input.py, issue 19): honoured only
when signed with the workers' key, sent recently and not a copy; every other
is ignored and counted, and the validator passes no marker on for it."""

from __future__ import annotations

import asyncio
import json

from prometheus_client import REGISTRY
from pydantic import SecretStr

from detectors.pseudonyms import Pseudonymiser
from streams.end_of_input import MAX_MARKER_AGE_S, MarkerCheck, signed_marker
from streams.settings import Settings
from streams.validator import END_OF_INPUT, InputValidator
from tests.test_validator import APPENDED_MS, Broker, Record

KEY = SecretStr("workers-key")
TOPIC, PARTITION = "m.saas-access", 2
NOW = APPENDED_MS / 1000


def test_a_marker_signed_with_the_key_is_honoured_once_at_its_offset() -> None:
    check = MarkerCheck(KEY)
    marker = signed_marker(KEY, TOPIC, PARTITION, 1_000.0, NOW - 1)
    assert check.judge(TOPIC, PARTITION, 7, marker, NOW) is None
    # The same record read again (its batch was not delivered) is still honoured.
    assert check.judge(TOPIC, PARTITION, 7, marker, NOW) is None
    # A copy written again at another offset is not.
    assert check.judge(TOPIC, PARTITION, 9, marker, NOW + 5) == "replayed"


def test_markers_anyone_could_write_are_refused_with_the_reason() -> None:
    check = MarkerCheck(KEY)
    assert check.judge(TOPIC, PARTITION, 1, b'{"max_ts": 1000}', NOW) == "unsigned"
    assert check.judge(TOPIC, PARTITION, 1, b"not json", NOW) == "unsigned"
    forged = signed_marker(SecretStr("guessed"), TOPIC, PARTITION, 1_000.0, NOW)
    assert check.judge(TOPIC, PARTITION, 1, forged, NOW) == "bad_signature"
    # Signed for another partition, or with the claimed end changed.
    elsewhere = signed_marker(KEY, TOPIC, PARTITION + 1, 1_000.0, NOW)
    assert check.judge(TOPIC, PARTITION, 1, elsewhere, NOW) == "bad_signature"
    changed = json.loads(signed_marker(KEY, TOPIC, PARTITION, 1_000.0, NOW))
    changed["max_ts"] = 9_000.0
    assert check.judge(TOPIC, PARTITION, 1, json.dumps(changed).encode(), NOW) == "bad_signature"
    old = signed_marker(KEY, TOPIC, PARTITION, 1_000.0, NOW - MAX_MARKER_AGE_S - 1)
    assert check.judge(TOPIC, PARTITION, 1, old, NOW) == "stale"
    assert MarkerCheck(None).judge(TOPIC, PARTITION, 1, forged, NOW) == "no_key"


def _ignored(reason: str) -> float:
    value = REGISTRY.get_sample_value("sepwatch_end_of_input_ignored_total", {"reason": reason})
    return value or 0.0


def test_the_validator_passes_no_forged_marker_on_and_counts_it() -> None:
    broker = Broker()
    validator = InputValidator(
        Settings(topic_prefix="m.", end_of_input_key=KEY),
        partitions=4,
        pseudonyms=Pseudonymiser(b"end-of-input-test-key"),
    )
    validator._producer = broker  # type: ignore[assignment]
    before = _ignored("unsigned"), _ignored("bad_signature")
    forged = [
        Record(TOPIC, PARTITION, 1, END_OF_INPUT, b'{"max_ts": 1000}'),
        Record(TOPIC, PARTITION, 2, END_OF_INPUT, signed_marker(SecretStr("x"), TOPIC, 2, 1, NOW)),
    ]
    asyncio.run(validator.route(forged))
    assert not [s for s in broker.sent if s.key == END_OF_INPUT]
    assert (_ignored("unsigned"), _ignored("bad_signature")) == (before[0] + 1, before[1] + 1)
    signed = signed_marker(KEY, TOPIC, PARTITION, 1_000.0, NOW)
    asyncio.run(validator.route([Record(TOPIC, PARTITION, 3, END_OF_INPUT, signed)]))
    # One marker for every stage partition (3 stages x 4 partitions).
    assert len([s for s in broker.sent if s.key == END_OF_INPUT]) == 12
