"""The streaming topology's split, without Kafka: the three stages, each on
its own partitions, find exactly what one engine finds over everything."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime
from typing import Any

import pytest

from detectors import Engine, Stage
from schemas import EventAdapter
from streams.policy_file import load_policy
from streams.simulate import simulate
from streams.topics import partition_of, stage_keys
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


@pytest.mark.parametrize("partitions", [1, 4])
def test_stages_on_partitions_find_what_one_engine_finds(partitions: int) -> None:
    events = _events()
    whole = Engine(POLICY, now=lambda: cases.FIXED_NOW).run(events)
    engines: dict[tuple[Stage, int], Engine] = defaultdict()
    found = []
    for event in events:
        for stage, key in stage_keys(event).items():
            slot = (stage, partition_of(key, partitions))
            if slot not in engines:
                engines[slot] = Engine(
                    POLICY,
                    now=lambda: cases.FIXED_NOW,
                    stage=stage,
                    owns_entity=lambda e, p=slot[1]: partition_of(e, partitions) == p,
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
