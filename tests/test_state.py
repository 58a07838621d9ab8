"""The engine's state: recoverable from a JSON changelog, and bounded."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from detectors import Engine, EngineState
from schemas import EventAdapter, Policy
from tests import cases

# Reviews judged after one day, so that SEP-009 decisions span a restart too.
POLICY = Policy.model_validate({**cases.base_policy(), "review": {"report_within_days": 1}})
START = datetime(2026, 6, 1, tzinfo=UTC)


def traffic(days: int, devices: int, seed: int = 3, partial: bool = False) -> Iterator[Any]:
    """Steady traffic from a fixed fleet: hourly postures, accesses, DLP alerts
    and a review a month, in time order with a little jitter. With `partial`,
    every access also brings the partial posture an access log carries (as
    Okta's device assurance does), and every third device has no other."""
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    for minute in range(0, days * 24 * 60, 10):
        t = START + timedelta(minutes=minute)
        for d in rng.sample(range(devices), k=max(1, devices // 6)):
            at = (t + timedelta(seconds=rng.randint(0, 599))).isoformat()
            if partial:
                out.append(
                    {
                        "stream": "device_posture",
                        "event_id": f"a-{minute}-{d}:posture",
                        "timestamp": at,
                        "entity": "HQ",
                        "device_id": f"d{d}",
                        "managed": True,
                        "edr_running": None,
                        "disk_encrypted": rng.random() > 0.05,
                        "screen_lock": True,
                        "jailbroken": None,
                        "os_patch_age_days": None,
                    }
                )
                if d % 3 == 0:
                    out.append(_access(minute, d, at, rng))
                    continue
            out.append(
                {
                    "stream": "device_posture",
                    "event_id": f"p-{minute}-{d}",
                    "timestamp": at,
                    "entity": "HQ",
                    "device_id": f"d{d}",
                    "managed": True,
                    "edr_running": rng.random() > 0.05,
                    "disk_encrypted": True,
                    "screen_lock": True,
                    "os_patch_age_days": rng.randint(0, 35),
                }
            )
            out.append(_access(minute, d, at, rng))
        if minute % 60 == 0:
            out.append(
                {
                    "stream": "dlp_alert",
                    "event_id": f"dl-{minute}",
                    "timestamp": t.isoformat(),
                    "entity": "HQ",
                    "user_id": f"u{rng.randrange(devices)}",
                    "channel": "web",
                    "data_types": ["kr_rrn"],
                    "match_count": 1,
                    "snippet": "900101-1234568",
                }
            )
        if minute % (30 * 24 * 60) == 0:
            out.append(
                {
                    "stream": "control_review",
                    "event_id": f"r-{minute}",
                    "timestamp": t.isoformat(),
                    "entity": "HQ",
                    "completed_at": t.isoformat(),
                    "reviewer": "ISO",
                }
            )
    out.sort(key=lambda e: e["timestamp"])
    for e in out:
        yield EventAdapter.validate_python(e)


def _access(minute: int, d: int, at: str, rng: random.Random) -> dict[str, Any]:
    return {
        "stream": "saas_access",
        "event_id": f"a-{minute}-{d}",
        "timestamp": at,
        "entity": "HQ",
        "user_id": f"u{d}",
        "device_id": f"d{d}",
        "saas_app": rng.choice(["docs", "chat", "crm", "notion"]),
        "action": rng.choice(["view", "upload", "share"]),
        "network_zone": "internal",
    }


def _ids(findings: list[Any]) -> list[tuple[str, tuple[str, ...]]]:
    return sorted((f.finding_id, tuple(f.evidence_event_ids)) for f in findings)


def _through_json(state: EngineState) -> EngineState:
    """What a Faust table gives back after a restart: its changelog, JSON."""

    def copy(store: Any) -> dict[str, Any]:
        return {k: json.loads(json.dumps(v)) for k, v in store.items()}

    return EngineState(**{f.name: copy(getattr(state, f.name)) for f in fields(EngineState)})


@pytest.mark.parametrize("partial", [False, True], ids=["full postures", "partial postures too"])
def test_a_restart_from_the_changelog_yields_the_same_findings(partial: bool) -> None:
    events = list(traffic(days=3, devices=12, partial=partial))
    whole = Engine(POLICY, now=lambda: cases.FIXED_NOW).run(events)
    assert {f.rule_id for f in whole} >= {"SEP-001", "SEP-002", "SEP-003", "SEP-006", "SEP-009"}
    if partial:
        assert any(f.details.get("reason") == "unknown_controls" for f in whole)

    for cut in (1, len(events) // 3, len(events) // 2 + 7, len(events) - 1):
        first = Engine(POLICY, now=lambda: cases.FIXED_NOW)
        before = [f for e in events[:cut] for f in first.process(e)]
        second = Engine(POLICY, now=lambda: cases.FIXED_NOW, state=_through_json(first.state))
        after = second.run(events[cut:])
        assert _ids(before + after) == _ids(whole), f"cut at {cut}"


def test_a_restart_resumes_a_stage_clock_where_it_was() -> None:
    """A stage's engine (external clock) restored from its changelog judges
    an event late, or not, exactly as it would have before the crash (issue
    19: its clock was kept once a minute of event time)."""
    t0 = START.timestamp() + 10
    first = Engine(POLICY, now=lambda: cases.FIXED_NOW, stage="device", external_clock=True)
    first.advance(t0)
    first.advance(t0 + 40)  # the same minute
    second = Engine(
        POLICY,
        now=lambda: cases.FIXED_NOW,
        state=_through_json(first.state),
        stage="device",
        external_clock=True,
    )
    assert second.watermark == first.watermark
    lateness = POLICY.allowed_lateness.total_seconds()
    at = datetime.fromtimestamp(t0 + 40 - lateness - 5, UTC)
    late_ish = cases.event(
        {"stream": "device_posture", "event_id": "p1", "timestamp": at.isoformat()}
    )
    first.process(late_ish)
    second.process(late_ish)
    assert first.stats["events.late"] == second.stats["events.late"] == 1


def _size(state: EngineState) -> int:
    return sum(len(json.dumps(list(s.items()))) for s in vars(state).values())


@pytest.mark.parametrize("partial", [False, True], ids=["full postures", "partial postures too"])
def test_state_stays_flat_as_history_lengthens(partial: bool) -> None:
    engine = Engine(POLICY, now=lambda: cases.FIXED_NOW)
    sizes = {}
    for n, event in enumerate(traffic(days=12, devices=30, partial=partial)):
        engine.process(event)
        if n % 2000 == 0:
            sizes[event.timestamp.date()] = _size(engine.state)
    postures = engine.state.postures.values()
    # The as-of posture at the watermark (with partial postures, the latest
    # to assert each control: two here) and the few after it, never history.
    assert max(len(entries) for _, entries in postures) <= (5 if partial else 4)
    assert engine.pending_count < 200
    days = sorted(sizes)
    early = max(sizes[d] for d in days[2:4])
    late = max(sizes[d] for d in days[-3:])
    assert late < early * 1.3, sizes


def test_idle_devices_are_forgotten() -> None:
    engine = Engine(POLICY, now=lambda: cases.FIXED_NOW)
    for event in traffic(days=1, devices=5):
        engine.process(event)
    assert len(engine.state.postures) == 5
    later = (START + timedelta(days=9)).isoformat()
    engine.process(
        EventAdapter.validate_python(
            {
                "stream": "device_posture",
                "event_id": "x",
                "timestamp": later,
                "entity": "HQ",
                "device_id": "new",
                "managed": True,
                "edr_running": True,
                "disk_encrypted": True,
                "screen_lock": True,
                "os_patch_age_days": 1,
            }
        )
    )
    engine.process(
        EventAdapter.validate_python(
            {
                "stream": "device_posture",
                "event_id": "y",
                "timestamp": (START + timedelta(days=9, hours=2)).isoformat(),
                "entity": "HQ",
                "device_id": "new",
                "managed": True,
                "edr_running": True,
                "disk_encrypted": True,
                "screen_lock": True,
                "os_patch_age_days": 1,
            }
        )
    )
    assert set(engine.state.postures) == {"new"}
    assert engine.stats["state.devices_evicted"] == 5


def test_state_written_before_partial_postures_is_read_as_full_postures() -> None:
    """A changelog from before partial postures: (evicted flag, views of four fields)."""
    t = START.timestamp()
    state = EngineState(
        postures={
            "d1": [True, [[t, "p-old", 1 | 2 | 4 | 8, 3]]],  # every control passing
            "d2": [False, [[t, "p-bad", 1 | 4 | 8, 3]]],  # EDR not running
        },
        meta={"max_ts": t},
    )
    engine = Engine(POLICY, now=lambda: cases.FIXED_NOW, state=state)
    late = engine.process(
        EventAdapter.validate_python(
            {**ACCESS, "event_id": "a0", "timestamp": START - timedelta(hours=1)}
        )
    )
    found = engine.run(
        EventAdapter.validate_python(
            {
                **ACCESS,
                "event_id": f"a-{d}",
                "device_id": d,
                "timestamp": START + timedelta(minutes=5),
            }
        )
        for d in ("d1", "d2")
    )
    assert late == [] and engine.stats["decisions.posture_unknowable"] == 1
    assert [(f.rule_id, f.device_id, f.evidence_event_ids) for f in found] == [
        ("SEP-006", "d2", ["a-d2", "p-bad"])
    ]


ACCESS = {
    "stream": "saas_access",
    "entity": "HQ",
    "user_id": "u1",
    "device_id": "d1",
    "saas_app": "chat",
    "action": "view",
    "network_zone": "internal",
}
