"""Every case beside every rule: events in, the rule's findings out."""

from __future__ import annotations

from typing import Any

import pytest

from tests import cases

ALL = cases.load()


def _check(rule: str, expected: list[dict[str, Any]], found: list[Any]) -> None:
    got = [f for f in found if f.rule_id == rule]
    summary = [(f.rule_id, f.evidence_event_ids, f.details) for f in got]
    assert len(got) == len(expected), f"{rule}: expected {len(expected)}, found {summary}"
    for want, have in zip(expected, got, strict=True):
        problem = cases.mismatch(want, have)
        assert problem is None, f"{rule}: {problem}"


@pytest.mark.parametrize(("rule", "case"), ALL, ids=[f"{r}: {c['name']}" for r, c in ALL])
def test_case(rule: str, case: dict[str, Any]) -> None:
    found, counted = cases.run_counting(case)
    _check(rule, case["expect"], found)
    want = case.get("counts", {})
    assert {k: counted.get(k, 0) for k in want} == want, f"{rule}: counts"
    for other in case.get("also", []):
        _check(other["rule_id"], [{k: v for k, v in other.items() if k != "rule_id"}], found)


@pytest.mark.parametrize(("rule", "case"), ALL, ids=[f"{r}: {c['name']}" for r, c in ALL])
def test_case_is_deterministic(rule: str, case: dict[str, Any]) -> None:
    first = [f.model_dump() for f in cases.run(case)]
    assert first == [f.model_dump() for f in cases.run(case)]
