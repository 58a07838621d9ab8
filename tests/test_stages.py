"""The streaming topology's split, without Kafka: the three stages, each on
its own partitions, find exactly what one engine finds over everything."""

from __future__ import annotations

import zlib
from collections import defaultdict
from datetime import UTC, date, datetime
from typing import Any

import pytest

from detectors import Engine, Stage
from schemas import EventAdapter
from streams.policy_file import load_policy
from streams.simulate import simulate
from tests import cases

_BASE = load_policy("deploy/policy/example.yaml")
# An entity named only by the policy (it sends no event): exactly one
# partition may track it, or its SEP-008 would be found once per partition.
POLICY = _BASE.model_copy(
    update={
        "review": _BASE.review.model_copy(
            update={
                "entity_baselines": {**_BASE.review.entity_baselines, "SUB-US": date(2026, 5, 1)}
            }
        )
    }
)


def _events() -> list[Any]:
    start = datetime(2026, 11, 23, tzinfo=UTC)
    return [
        EventAdapter.validate_python(e)
        for e in simulate(
            POLICY,
            users=150,
            devices=160,
            hours=6,
            violation_rate=0.05,
            seed=3,
            start=start,
        )
    ]


def stage_keys(event: Any) -> dict[Stage, str]:
    """Which stage sees an event, under which key (architecture.md)."""
    keys: dict[Stage, str] = {"review": event.entity}
    if event.stream in ("saas_access", "device_posture"):
        keys["device"] = event.device_id or f"user:{event.user_id}"
    if event.stream in ("saas_access", "dlp_alert"):
        keys["user"] = event.user_id
    return keys


@pytest.mark.parametrize("partitions", [1, 4])
def test_stages_on_partitions_find_what_one_engine_finds(partitions: int) -> None:
    events = _events()
    whole = Engine(POLICY, now=lambda: cases.FIXED_NOW).run(events)
    engines: dict[tuple[Stage, int], Engine] = defaultdict()
    found = []
    for event in events:
        for stage, key in stage_keys(event).items():
            slot = (stage, zlib.crc32(key.encode()) % partitions)
            if slot not in engines:
                engines[slot] = Engine(
                    POLICY,
                    now=lambda: cases.FIXED_NOW,
                    stage=stage,
                    owns_entity=lambda e, p=slot[1]: zlib.crc32(e.encode()) % partitions == p,
                )
            found.extend(engines[slot].process(event))
    last = max(e.timestamp.timestamp() for e in events)
    for engine in engines.values():
        found.extend(engine.flush(until=last))

    def key(fs: list[Any]) -> list[tuple[Any, ...]]:
        return sorted((f.finding_id, tuple(f.evidence_event_ids), f.status) for f in fs)

    assert {f.rule_id for f in whole} >= {"SEP-001", "SEP-003", "SEP-006", "SEP-007", "SEP-008"}
    assert any(f.rule_id == "SEP-008" and f.entity == "SUB-US" for f in whole)
    assert key(found) == key(whole)
