"""Lateness per input partition (streams/partition_clock.py): whatever order
the stream reads its partitions in, it finds what `replay --partitions`
finds (issue 16)."""

from __future__ import annotations

import io
import json
import os
import random
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from detectors import Engine, Stage
from schemas import EventAdapter
from schemas.policy_file import load_policy
from streams.partition_clock import (
    GRID_SECONDS,
    InputClocks,
    LearnedClocks,
    ProducerClock,
    StreamEmulation,
    event_key,
    placed,
)
from streams.replay import replay
from streams.topics import partition_of
from tests.cases import DEFAULTS
from tests.integration.conftest import POLICY

NOON = datetime(2026, 11, 23, 3, 0, tzinfo=UTC)  # 12:00 in Seoul
APP = "m365-sharepoint"


def line(stream: str, event_id: str, at: datetime, **fields: Any) -> bytes:
    body = {**DEFAULTS[stream], "stream": stream, "event_id": event_id, **fields}
    return json.dumps({**body, "timestamp": at.isoformat()}).encode()


def issue_example() -> list[bytes]:
    """An access at 12:00 with no posture, later events up to 13:00, then a
    posture stamped 11:59 for its device, later than the allowed lateness."""
    lines = [line("saas_access", "a-noon", NOON, saas_app=APP)]
    for m in range(5, 61, 5):
        at = NOON + timedelta(minutes=m)
        lines.append(
            line("saas_access", f"a-{m}", at, user_id=f"u{m}", device_id=f"d{m}", saas_app=APP)
        )
        lines.append(line("device_posture", f"p-{m}", at, device_id=f"d{m}"))
    lines.append(line("device_posture", "p-late", NOON - timedelta(minutes=1)))
    return lines


def replayed(lines: list[bytes], partitions: int) -> dict[str, dict[str, Any]]:
    out = io.StringIO()
    replay(load_policy(POLICY), lines, out, io.StringIO(), partitions=partitions)
    return {f["finding_id"]: f for f in map(json.loads, out.getvalue().splitlines())}


def test_the_issue_example_is_judged_alike_with_one_clock_and_with_partition_clocks() -> None:
    """The posture is late against its own partition's clock (produce's marks
    carry the file's 13:00 into it): it joins nothing, and SEP-007 stands."""
    for partitions in (0, 1, 4):
        found = replayed(issue_example(), partitions)
        assert [f["evidence_event_ids"] for f in found.values() if f["rule_id"] == "SEP-007"] == [
            ["a-noon"]
        ], partitions


def test_a_late_event_joins_nothing_and_a_late_access_waits_for_no_posture() -> None:
    policy = load_policy(POLICY)
    engine = Engine(policy, now=lambda: NOON, stage="device", external_clock=True)
    posture = EventAdapter.validate_json(line("device_posture", "p1", NOON))
    access = EventAdapter.validate_json(line("saas_access", "a1", NOON, saas_app=APP))
    assert engine.process(posture, late=True) == []
    assert engine.state.postures.get("d1") is None  # not kept for any join
    assert engine.process(access, late=True) == []
    assert engine.pending_count == 0
    assert engine.stats["decisions.late_unjoined"] == 1
    assert engine.stats["events.late"] == 2


def test_the_clocks_that_make_marks_and_learn_them() -> None:
    producer = ProducerClock()
    assert producer.see(65.0) == 60.0
    assert producer.see(70.0) is None
    assert producer.see(10.0) is None  # out of order: the file's clock stays
    assert producer.see(GRID_SECONDS * 3) == 90.0
    inputs = InputClocks()
    assert inputs.event("a:0", 65.0) == 60.0
    assert inputs.event("a:0", 80.0) is None
    inputs.mark("a:0", 120.0)
    assert inputs.event("a:0", 125.0) is None
    learned = LearnedClocks(frozenset({"a:0", "b:0"}))
    assert learned.see("a:0", 100.0) == float("-inf")  # b:0 not yet heard from
    assert learned.see("b:0", 50.0) == 50.0
    assert learned.late("b:0", 30.0, 10.0) and not learned.late("a:0", 30.0, 100.0)
    assert learned.see("b:0", 40.0) == 50.0  # never back


def _topic(stream: str) -> str:
    from streams.topics import INPUT_STREAMS

    return INPUT_STREAMS[stream]


def _engines(policy: Any, partitions: int) -> Any:
    def engine_for(stage: Stage, p: int) -> Engine:
        return Engine(
            policy,
            now=lambda: NOON,
            stage=stage,
            owns_entity=lambda e: partition_of(e, partitions) == p,
            external_clock=True,
        )

    return engine_for


def random_day(rnd: random.Random, events: int = 60) -> list[bytes]:
    """A few users, devices and entities; times drift forward with jitter,
    some events far behind (later than the lateness), some postures and
    accesses of one device close together, DLP alerts near accesses."""
    users = [f"u{i}" for i in range(rnd.randint(2, 6))]
    devices = [f"d{i}" for i in range(rnd.randint(2, 6))]
    entities = ["HQ", "BR1", "BR2"][: rnd.randint(1, 3)]
    clock = NOON
    out: list[bytes] = []
    for n in range(events):
        clock += timedelta(seconds=rnd.choice([0, 5, 20, 45, 90, 300]))
        at = clock - timedelta(seconds=rnd.choice([0, 0, 0, 10, 50, 70, 200, 900]))
        user, device, entity = rnd.choice(users), rnd.choice(devices), rnd.choice(entities)
        kind = rnd.choice(["access", "access", "posture", "posture", "dlp", "review"])
        eid = f"e{n}"
        if kind == "access":
            out.append(
                line(
                    "saas_access",
                    eid,
                    at,
                    entity=entity,
                    user_id=user,
                    device_id=rnd.choice([device, device, None]),
                    saas_app=rnd.choice([APP, APP, "unknown-app"]),
                    action=rnd.choice(["view", "upload", "share", "login"]),
                )
            )
        elif kind == "posture":
            out.append(
                line(
                    "device_posture",
                    eid,
                    at,
                    entity=entity,
                    device_id=device,
                    managed=rnd.choice([True, True, False]),
                    edr_running=rnd.choice([True, True, None]),
                )
            )
        elif kind == "dlp":
            out.append(
                line(
                    "dlp_alert",
                    eid,
                    at,
                    entity=entity,
                    user_id=user,
                    device_id=device,
                    data_types=[rnd.choice(["KR_RRN", "CREDIT_CARD", "EMAIL"])],
                    channel=rnd.choice(["web", "saas_upload"]),
                    saas_app=APP,
                )
            )
        else:
            # Completed within the review interval: a review recorded after the
            # due date it leads to is judged as it arrives (docs/lateness.md).
            done = at - timedelta(days=rnd.choice([1, 40, 100]))
            out.append(
                line(
                    "control_review",
                    eid,
                    at,
                    entity=entity,
                    completed_at=done.isoformat(),
                    reported_to_committee_at=rnd.choice(
                        [None, (done + timedelta(days=rnd.choice([3, 45]))).isoformat()]
                    ),
                )
            )
    return out


def stream_reading(lines: list[bytes], partitions: int, rnd: random.Random) -> set[str]:
    """What the stream finds from `produce` of the file, reading its input
    partitions in a random interleaving (each partition in its own order)."""
    policy = load_policy(POLICY)
    events = [EventAdapter.validate_json(raw) for raw in lines]
    records = placed(((e, event_key(e)) for e in events), partitions)
    emulation = StreamEmulation(_engines(policy, partitions), partitions)
    found = []
    queues = {s: list(rs) for s, rs in records.items() if rs}
    while queues:
        source = rnd.choice(sorted(queues))
        for _ in range(rnd.choice([1, 1, 3, 20])):  # a batch read from one partition
            if not queues.get(source):
                break
            found += emulation.route(source, queues[source].pop(0))
        if not queues[source]:
            del queues[source]
    found += emulation.flush(max(e.timestamp.timestamp() for e in events))
    return {f.finding_id for f in found}


# 60 here; `python -m bench.late_data` asks for more.
EXAMPLES = int(os.environ.get("SEPWATCH_LATE_DATA_REPLAY_EXAMPLES", "60"))


@settings(
    max_examples=EXAMPLES, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate]
)
@given(st.randoms(use_true_random=False), st.sampled_from([1, 2, 4]))
def test_any_reading_order_of_the_partitions_finds_what_replay_finds(
    rnd: random.Random, partitions: int
) -> None:
    lines = random_day(rnd)
    want = set(replayed(lines, partitions))
    assert stream_reading(lines, partitions, rnd) == want
