"""Replay and the stream agree, late data included (issue 16): the stream on
the real broker finds what `replay --partitions` finds from the same file,
for the issue's own example and for random days with out-of-order and late
arrivals across users, devices and entities.

SEPWATCH_LATE_DATA_EXAMPLES sets how many random runs (2 here; the benchmark
run, bench/late_data.py, asks for more)."""

from __future__ import annotations

import io
import json
import os
import random
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from bench.harness import wait_for
from streams.kafka_io import ensure_topics, export_findings, produce
from streams.topics import Topics
from tests.integration.conftest import MARKER_KEY, Worker
from tests.integration.settle import settled
from tests.test_partition_clock import issue_example, random_day, replayed

PARTITIONS = 4
EXAMPLES = int(os.environ.get("SEPWATCH_LATE_DATA_EXAMPLES", "2"))
DAYS = 5


def _exported(broker: str, topics: Topics) -> dict[str, dict[str, Any]]:
    sink = io.StringIO()
    export_findings(broker, topics, sink)
    return {f["finding_id"]: f for f in map(json.loads, sink.getvalue().splitlines())}


def _streamed(broker: str, lines: list[bytes], state: Path, want: int) -> set[str]:
    """Every finding of a worker over `produce` of the file, once it has settled."""
    topics = Topics(f"t{uuid.uuid4().hex[:8]}.")
    ensure_topics(broker, topics, PARTITIONS, retention_ms=3_600_000)
    worker = Worker(broker, topics.prefix, state / topics.prefix, state / f"{topics.prefix}log")
    try:
        worker.wait_ready()
        produce(lines, broker, topics, end_of_input=True, marker_key=MARKER_KEY)
        wait_for(lambda: len(_exported(broker, topics)) >= want, timeout=120)
        settled(broker, topics)  # a duplicate or an extra is on the topic by now
        return set(_exported(broker, topics))
    finally:
        worker.stop()


def _diff(want: set[str], got: set[str]) -> str:
    return f"missing {sorted(want - got)[:5]}, extra {sorted(got - want)[:5]}"


def test_the_issue_example_gives_in_the_stream_what_replay_gives(
    broker: str, tmp_path: Path
) -> None:
    """An access at 12:00 with no posture, events to 13:00, then a posture
    stamped 11:59, later than the lateness: replay decided SEP-007 before
    it, the stream used it and found nothing (issue 16)."""
    lines = issue_example()
    want = set(replayed(lines, PARTITIONS))
    assert any(f.startswith("SEP-007-") for f in want)
    got = _streamed(broker, lines, tmp_path, len(want))
    assert got == want, _diff(want, got)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(st.integers(min_value=0, max_value=2**32))
def test_random_days_with_late_data_give_in_the_stream_what_replay_gives(
    broker: str, tmp_path: Path, seed: int
) -> None:
    rnd = random.Random(seed)
    lines: list[bytes] = []
    for day in range(DAYS):
        lines += [_shifted(raw, day) for raw in random_day(rnd)]
    want = set(replayed(lines, PARTITIONS))
    got = _streamed(broker, lines, tmp_path, len(want))
    assert got == want, _diff(want, got)


def _shifted(raw: bytes, days: int) -> bytes:
    """The same day `days` later, with its own event ids, users and devices."""
    from datetime import datetime

    event = json.loads(raw)
    at = datetime.fromisoformat(event["timestamp"]) + timedelta(days=days)
    event["timestamp"] = at.isoformat()
    event["event_id"] = f"{event['event_id']}-{days}"
    for name in ("user_id", "device_id"):
        if event.get(name):
            event[name] = f"{event[name]}-{days}"
    return json.dumps(event).encode()
