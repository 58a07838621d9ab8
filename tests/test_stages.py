"""The streaming topology's split, without Kafka: the three stages, each on
its own partitions, find exactly what one engine finds over everything."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime
from typing import Any

import pytest

from detectors import Engine, Stage, times_only
from schemas import EventAdapter
from schemas.policy_file import load_policy
from simulator.day import simulate
from streams.topics import STAGES, partition_of, stage_keys, stage_partitions
from tests import cases
from tests.vendor_day import day

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


def _events(partial: bool = False) -> list[Any]:
    """Simulated traffic; with `partial`, every other access with a device
    also brings the partial posture an access log carries (as the Okta,
    Entra and Netskope adapters emit it), stamped like the access."""
    start = datetime(2026, 11, 23, tzinfo=UTC)
    out = []
    for i, e in enumerate(
        simulate(
            POLICY,
            users=150,
            devices=160,
            hours=6,
            violation_rate=0.05,
            seed=3,
            start=start,
        )
    ):
        out.append(EventAdapter.validate_python(e))
        if partial and e["stream"] == "saas_access" and e.get("device_id") and i % 2:
            posture = {
                "stream": "device_posture",
                "event_id": f"{e['event_id']}:posture",
                "timestamp": e["timestamp"],
                "entity": e["entity"],
                "device_id": e["device_id"],
                "managed": i % 7 != 1,
                "edr_running": None,
                "disk_encrypted": True,
                "screen_lock": i % 5 != 1,
                "os_patch_age_days": None,
                "jailbroken": None,
            }
            out.append(EventAdapter.validate_python(posture))
    return out


@pytest.mark.parametrize("partial", [False, True], ids=["full postures", "partial postures too"])
@pytest.mark.parametrize("partitions", [1, 4])
def test_stages_on_partitions_find_what_one_engine_finds(partitions: int, partial: bool) -> None:
    events = _events(partial)
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


def test_the_user_stage_given_only_the_time_of_accesses_it_does_not_keep_finds_the_same() -> None:
    """The validator sends the user stage only the time of an access it does
    not keep (times_only): what the stage finds, keeps and counts is unchanged."""
    events = [e for e in _events() if "user" in stage_keys(e)]

    def user_stage() -> Engine:
        return Engine(POLICY, now=lambda: cases.FIXED_NOW, stage="user", external_clock=True)

    whole, timed = user_stage(), user_stage()
    found_whole: list[Any] = []
    found_timed: list[Any] = []
    clock = float("-inf")
    only_times = 0
    for event in events:
        ts = event.timestamp.timestamp()
        clock = max(clock, ts)
        found_whole += whole.process(event) + whole.advance(clock)
        if times_only("user", event):
            only_times += 1
            timed.pass_time(event.stream, ts)
            found_timed += timed.advance(clock)
        else:
            found_timed += timed.process(event) + timed.advance(clock)
    found_whole += whole.flush()
    found_timed += timed.flush()
    assert only_times > len(events) // 3
    assert {f.rule_id for f in found_whole} & {"SEP-003", "SEP-004", "SEP-005"}
    assert [f.model_dump() for f in found_timed] == [f.model_dump() for f in found_whole]
    assert dict(timed.state.accesses) == dict(whole.state.accesses)
    assert timed.stats == whole.stats


def _judged(found: list[Any]) -> list[tuple[Any, ...]]:
    return sorted((f.finding_id, f.status, f.device_id) for f in found)


def _on_partitions(events: list[Any], partitions: int, learned: bool) -> list[Any]:
    # Every partition of every stage, as on the stream: one that no event
    # reaches still tracks the entities it owns (SEP-008).
    engines = {
        (stage, p): Engine(
            POLICY,
            now=lambda: cases.FIXED_NOW,
            stage=stage,
            owns_entity=lambda e, p=p: partition_of(e, partitions) == p,
        )
        for stage in STAGES
        for p in range(partitions)
    }
    found = []
    for event in events:
        for stage, key in stage_keys(event, learned_identity=learned).items():
            for partition in stage_partitions(key, partitions):
                found.extend(engines[stage, partition].process(event))
    last = max(e.timestamp.timestamp() for e in events)
    for engine in engines.values():
        found.extend(engine.flush(until=last))
    return found


def test_the_vendor_day_on_partitions_finds_what_one_engine_finds() -> None:
    """Issue 15: the simulated multi-vendor day (tests/vendor_day.py; that one
    engine finds what the canonical day finds is tests/test_vendor_day.py)
    split as the stream splits it with learned identity: the device stage on
    one partition, each aliased posture on every user partition too, so DLP
    alerts name the devices as one engine names them."""
    vendors = [EventAdapter.validate_python(e) for e in day().adapted]
    whole = _judged(Engine(POLICY, now=lambda: cases.FIXED_NOW).run(vendors))
    assert {r[0][:7] for r in whole} >= {"SEP-003", "SEP-006", "SEP-007"}
    assert _judged(_on_partitions(vendors, 4, learned=True)) == whole
    # Keyed by each product's own id, a partition sees only some of a
    # device's postures: the limit the setting is for.
    assert _judged(_on_partitions(vendors, 4, learned=False)) != whole


def _sessions() -> list[Any]:
    """Simulated sign-ins, a third of them not saying but naming a session;
    for most of those a factor verified in the session (some before, some
    after the sign-in, a few arriving after it), as Okta's records come."""
    out: list[Any] = []
    for i, event in enumerate(_events()):
        e = event.model_dump(mode="json", exclude_none=True)
        if e["stream"] != "saas_access" or e["action"] != "login" or i % 3:
            out.append(event)
            continue
        session = f"s{i}"
        e["auth"] = {"mfa": None, "session": session}
        verify = {
            **e,
            "event_id": f"{e['event_id']}:factor",
            "saas_app": "okta",
            "action": "verify",
            "auth": {"mfa": True, "session": session},
        }
        shift = (-20, -5, 5, None)[i % 4]  # seconds; None: no factor checked
        if shift is not None:
            ts = event.timestamp.timestamp() + shift
            verify["timestamp"] = datetime.fromtimestamp(ts, UTC).isoformat()
        factor = [EventAdapter.validate_python(verify)] if shift is not None else []
        login = [EventAdapter.validate_python(e)]
        out += factor + login if i % 2 else login + factor  # both arrival orders
    return out


@pytest.mark.parametrize("partitions", [1, 4])
def test_sign_ins_meet_their_sessions_factors_on_partitions_as_in_one_engine(
    partitions: int,
) -> None:
    """The device stage counts the sign-ins naming no session, the user
    stage (keyed by user, with only the times of what it does not need)
    joins the others: together they count what one engine counts."""
    events = _sessions()
    whole = Engine(POLICY, now=lambda: cases.FIXED_NOW)
    found_whole = whole.run(events)
    engines: dict[tuple[Stage, int], Engine] = {}
    found: list[Any] = []
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
            if times_only(stage, event):
                engines[slot].pass_time(event.stream, event.timestamp.timestamp())
            else:
                found.extend(engines[slot].process(event))
    last = max(e.timestamp.timestamp() for e in events)
    for engine in engines.values():
        found.extend(engine.flush(until=last))

    def counted(name: str) -> int:
        return sum(e.stats[name] for e in engines.values())

    joined, unsaid = whole.stats["auth.mfa_from_session"], whole.stats["auth.mfa_unknown"]
    assert joined > 10 and unsaid > 10
    assert (counted("auth.mfa_from_session"), counted("auth.mfa_unknown")) == (joined, unsaid)
    assert sorted(f.finding_id for f in found) == sorted(f.finding_id for f in found_whole)
