"""The simulator: deterministic, valid, in arrival order within the lateness,
quiet at violation rate 0 and covering every rule above it."""

from __future__ import annotations

import itertools
import json
import re
import tracemalloc
from collections import Counter
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from detectors import Engine
from schemas import EventAdapter, Finding, Policy
from schemas.policy_file import load_policy
from simulator.day import simulate

POLICY = load_policy("deploy/policy/example.yaml")
KST = ZoneInfo("Asia/Seoul")
MONDAY = datetime(2026, 11, 23, tzinfo=KST)
FIXED_NOW = datetime(2030, 1, 1, tzinfo=UTC)

# Every field the contract names, per stream (contract.md, "Input events").
CONTRACT_FIELDS = {
    "saas_access": {"event_id", "timestamp", "entity", "user_id", "device_id", "saas_app",
                    "action", "network_zone", "src_ip", "object", "auth", "share_target",
                    "shared_with_domain", "source"},
    "device_posture": {"event_id", "timestamp", "entity", "device_id", "user_id", "managed",
                       "edr_running", "disk_encrypted", "screen_lock", "os_patch_age_days",
                       "jailbroken", "source"},
    "dlp_alert": {"event_id", "timestamp", "entity", "user_id", "device_id", "channel",
                  "saas_app", "data_types", "match_count", "object", "snippet", "source"},
    "control_review": {"event_id", "timestamp", "entity", "completed_at",
                       "reported_to_committee_at", "reviewer", "controls_reviewed", "source"},
}  # fmt: skip


def events(
    *,
    users: int = 120,
    devices: int = 130,
    hours: float = 24,
    rate: float = 0.0,
    seed: int = 1,
    start: datetime = MONDAY,
    policy: Policy = POLICY,
) -> list[dict[str, Any]]:
    return list(
        simulate(
            policy,
            users=users,
            devices=devices,
            hours=hours,
            violation_rate=rate,
            seed=seed,
            start=start,
        )
    )


def findings(evs: list[dict[str, Any]], policy: Policy = POLICY) -> list[Finding]:
    engine = Engine(policy, now=lambda: FIXED_NOW)
    return engine.run(EventAdapter.validate_python(e) for e in evs)


def lines(evs: list[dict[str, Any]]) -> list[str]:
    return [json.dumps(e, ensure_ascii=False) for e in evs]


@pytest.fixture(scope="module")
def day() -> list[dict[str, Any]]:
    """A weekday of a small bank, with violations."""
    return events(rate=0.02, seed=7)


def test_same_seed_same_bytes_other_seed_other_events() -> None:
    first = lines(events(hours=6, rate=0.05, seed=3))
    assert first == lines(events(hours=6, rate=0.05, seed=3))
    assert first != lines(events(hours=6, rate=0.05, seed=4))


def test_every_event_validates_with_every_contract_field(day: list[dict[str, Any]]) -> None:
    ids: Counter[tuple[str, str]] = Counter()
    for e in day:
        parsed = EventAdapter.validate_json(json.dumps(e, ensure_ascii=False))
        assert parsed == EventAdapter.validate_python(e)
        assert parsed.extra == {}, "the simulator invents no fields"
        assert set(e) == CONTRACT_FIELDS[e["stream"]] | {"stream"}
        assert re.search(r"(Z|[+-]\d\d:\d\d)$", e["timestamp"])
        ids[(e["source"], e["event_id"])] += 1
    assert max(ids.values()) == 1, "event ids are unique per source"
    assert {s for s, _ in ids} == {
        "okta",
        "m365",
        "netskope",
        "intune",
        "osquery",
        "purview",
        "grc",
    }
    zones = Counter(e["timestamp"][-1] == "Z" for e in day)
    assert zones[True] and zones[False], "offsets are mixed: Z and local"
    assert Counter(e["stream"] for e in day).keys() == CONTRACT_FIELDS.keys()


def test_arrival_disorder_stays_within_allowed_lateness(day: list[dict[str, Any]]) -> None:
    newest, worst, late = float("-inf"), 0.0, 0
    for e in day:
        ts = EventAdapter.validate_python(e).timestamp.timestamp()
        if ts < newest:
            late += 1
            worst = max(worst, newest - ts)
        newest = max(newest, ts)
    assert late > 0, "some events arrive after later ones, as on a real stream"
    assert worst < POLICY.allowed_lateness.total_seconds()


def test_population_matches_the_arguments() -> None:
    evs = events(users=100, devices=120)
    people = {e["user_id"] for e in evs if e["stream"] == "saas_access"}
    fleet = {e["device_id"] for e in evs if e["stream"] == "device_posture"}
    named = len(POLICY.waivers)  # the waived user and kiosk exist on top
    assert 100 <= len(people) <= 100 + named
    assert 120 <= len(fleet) <= 120 + named
    assert "u-hq-00042" in people and "lt-hq-00042" in fleet
    by_entity = Counter(u.split("-")[1] for u in people)
    assert by_entity["hq"] > by_entity["gn"] > by_entity["vn"] > 0
    accesses = [e for e in evs if e["stream"] == "saas_access"]
    internal = sum(e["network_zone"] == "internal" for e in accesses) / len(accesses)
    assert 0.75 < internal < 0.95
    by_hour = Counter(int(e["timestamp"][11:13]) for e in accesses if e["source"] == "m365")
    assert by_hour[10] > 10 * by_hour[3], "working hours are busy, nights quiet"


def test_snippets_carry_well_formed_made_up_identifiers(day: list[dict[str, Any]]) -> None:
    weights = (2, 3, 4, 5, 6, 7, 8, 9, 2, 3, 4, 5)
    rrns = [
        m.group(1) + m.group(2)
        for e in day
        if e["stream"] == "dlp_alert"
        for m in re.finditer(r"(\d{6})-(\d{7})", e["snippet"] or "")
    ]
    assert rrns
    for rrn in rrns:
        digits = [int(c) for c in rrn]
        check = (11 - sum(d * w for d, w in zip(digits, weights, strict=False)) % 11) % 10
        assert digits[12] == check, rrn


def test_rate_zero_gives_no_findings_on_a_working_day() -> None:
    evs = events(users=250, devices=270, seed=11)
    assert findings(evs) == []


def test_rate_zero_follows_the_registry_across_an_evaluation_lapse() -> None:
    # box's evaluation ends 2026-09-30 (KST, the policy's zone): used from inside until then.
    evs = events(hours=24, seed=5, start=datetime(2026, 9, 30, 20, tzinfo=KST))
    box = [
        EventAdapter.validate_python(e).timestamp
        for e in evs
        if e["stream"] == "saas_access" and e["saas_app"] == "box"
        if e["network_zone"] == "internal"
    ]
    assert box and max(box) < datetime(2026, 10, 1, tzinfo=KST)
    assert findings(evs) == []


def test_rate_zero_gives_no_findings_with_a_tight_policy() -> None:
    # No lateness at all, short posture age, quarterly reviews reported the same day.
    data = POLICY.model_dump()
    data["allowed_lateness"] = "0s"
    data["posture"]["max_age"] = "2h"
    data["review"] |= {"interval_months": 3, "report_within_days": 0}
    policy = Policy.model_validate(data)
    evs = events(users=60, devices=70, hours=12, seed=2, policy=policy)
    assert findings(evs, policy) == []


def test_every_rule_fires_at_a_moderate_rate() -> None:
    # A morning after HQ's first due date (baseline 2026-04-20 + 6 months).
    evs = events(users=250, devices=275, hours=4, rate=0.05, seed=1,
                 start=datetime(2026, 11, 20, 9, tzinfo=KST))  # fmt: skip
    found = findings(evs)
    assert {f.rule_id for f in found} == {f"SEP-{i:03d}" for i in range(1, 12)}
    waived = {(f.rule_id, f.waiver.id) for f in found if f.waiver is not None}
    assert waived and waived <= {("SEP-007", "WV-2026-014"), ("SEP-002", "WV-2026-021")}
    by_rule = Counter(f.rule_id for f in found)
    assert by_rule["SEP-008"] == 1 and by_rule["SEP-009"] == 1


def test_planted_sign_ins_and_shares_are_exactly_what_sep010_and_sep011_find() -> None:
    evs = events(users=200, devices=220, hours=8, rate=0.05, seed=4, start=MONDAY.replace(hour=9))
    auth, sharing = POLICY.authentication, POLICY.sharing
    assert auth is not None and sharing is not None
    registered = {a.app_id for a in POLICY.registry}
    single_factor = {
        e["event_id"]
        for e in evs
        if e["stream"] == "saas_access" and e["action"] == "login"
        if e["network_zone"] == "internal" and e["saas_app"] in registered
        if e["saas_app"] not in auth.exempt_apps and e["auth"]["mfa"] is False
    }
    outside = set(sharing.partner_domains) | set(sharing.internal_domains)
    overshared = {
        e["event_id"]
        for e in evs
        if e["stream"] == "saas_access" and e["action"] == "share"
        if e["share_target"] == "public"
        or (e["share_target"] == "external" and e["shared_with_domain"] not in outside)
    }
    partners = [e for e in evs if e.get("shared_with_domain") in sharing.partner_domains]
    unsaid = [e for e in evs if e.get("auth") and e["auth"]["mfa"] is None]
    assert single_factor and overshared and partners and unsaid
    found = findings(evs)
    assert {f.evidence_event_ids[0] for f in found if f.rule_id == "SEP-010"} == single_factor
    assert {f.evidence_event_ids[0] for f in found if f.rule_id == "SEP-011"} == overshared


def test_generation_is_lazy() -> None:
    """The first events come before the day is generated: taking 1,000 of a
    day of 4,000 users (about 124,000 events, some 100 MB held at once) holds
    what the population needs, not the day. Memory, not time: a count of
    allocations does not depend on the machine's load."""
    tracemalloc.start()
    try:
        stream = simulate(POLICY, users=4_000, devices=5_000, hours=24, violation_rate=0.02,
                          seed=1, start=MONDAY)  # fmt: skip
        assert len(list(itertools.islice(stream, 1000))) == 1000
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20, peak


def test_start_needs_an_offset() -> None:
    with pytest.raises(ValueError, match="offset"):
        events(start=datetime(2026, 11, 23))
