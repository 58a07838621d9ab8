"""The engines' late and unknowable counts reach /metrics (issue 19: they
were counted in the engine and never exported)."""

from __future__ import annotations

from datetime import UTC, datetime

from prometheus_client import REGISTRY

from detectors import Engine
from schemas.policy_file import load_policy
from streams.stages.runner import StageRunner
from tests import cases
from tests.integration.conftest import POLICY


def _late(stage: str) -> float:
    value = REGISTRY.get_sample_value("sepwatch_late_events_total", {"stage": stage})
    return value or 0.0


def _posture(event_id: str, ts: float) -> object:
    at = datetime.fromtimestamp(ts, UTC).isoformat()
    return cases.event({"stream": "device_posture", "event_id": event_id, "timestamp": at})


def test_late_events_are_exported_once_each_also_from_an_engine_given_up() -> None:
    policy = load_policy(POLICY)
    runner = StageRunner("device", {}, policy, 4, ["posture:0"])
    t = datetime(2026, 6, 1, tzinfo=UTC).timestamp()
    before = _late("device")
    for p in (0, 1):
        engine = runner.engines[p] = Engine(
            policy, now=lambda: cases.FIXED_NOW, stage="device", external_clock=True
        )
        engine.advance(t)
        engine.process(_posture(f"late-{p}", t - 3600))  # type: ignore[arg-type]
    runner.export_counts()
    assert _late("device") == before + 2
    runner.export_counts()  # nothing new: nothing added
    assert _late("device") == before + 2
    runner.engines[1].process(_posture("late-again", t - 3600))  # type: ignore[arg-type]
    runner.forget({1})  # partition taken away before the next report
    assert _late("device") == before + 3


def _claim(event_id: str, ts: float, device: str, serial: str) -> object:
    at = datetime.fromtimestamp(ts, UTC).isoformat()
    aliases = [{"kind": "hostname", "value": "shared-pc"}, {"kind": "serial", "value": serial}]
    return cases.event(
        {
            "stream": "device_posture",
            "event_id": event_id,
            "timestamp": at,
            "device_id": device,
            "device_aliases": aliases,
        }
    )


def test_identity_conflicts_are_exported() -> None:
    policy = load_policy(POLICY)
    runner = StageRunner("device", {}, policy, 4, ["posture:0"])
    t = datetime(2026, 6, 1, tzinfo=UTC).timestamp()
    sample = {"stage": "device"}
    before = REGISTRY.get_sample_value("sepwatch_identity_conflicts_total", sample) or 0.0
    engine = runner.engines[0] = Engine(
        policy, now=lambda: cases.FIXED_NOW, stage="device", external_clock=True
    )
    engine.process(_claim("a", t, "pc-a", "sn-a"))  # type: ignore[arg-type]
    engine.process(_claim("b", t + 60, "pc-b", "sn-b"))  # type: ignore[arg-type]
    runner.export_counts()
    after = REGISTRY.get_sample_value("sepwatch_identity_conflicts_total", sample)
    assert after == before + 1
