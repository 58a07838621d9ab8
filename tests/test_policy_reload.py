"""A policy replaced while running: events from its load on use it, earlier
events (even when they arrive later) keep the old one."""

from __future__ import annotations

import os
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from detectors import Engine
from schemas import EventAdapter, Policy
from schemas.policy_file import PolicyError, PolicyFile, load_policy
from tests import cases

OLD = Policy.model_validate(cases.base_policy())
NEW = Policy.model_validate(
    {
        **cases.base_policy(),
        "registry": [
            *cases.base_policy()["registry"],
            {
                "app_id": "notion",
                "category": "collaboration",
                "evaluated": True,
                "evaluation_valid_from": "2026-04-20",
                "evaluation_valid_until": "2027-04-19",
            },
        ],
    }
)
LOADED = datetime.fromisoformat("2026-06-10T12:00:00+00:00").timestamp()


def _access(event_id: str, at: str) -> Any:
    return EventAdapter.validate_python(
        {
            "stream": "saas_access",
            "event_id": event_id,
            "timestamp": at,
            "entity": "HQ",
            "user_id": "u1",
            "device_id": None,
            "saas_app": "notion",
            "action": "view",
            "network_zone": "internal",
        }
    )


def test_a_new_policy_applies_from_its_load_by_event_time() -> None:
    engine = Engine(OLD, now=lambda: cases.FIXED_NOW)
    found = engine.process(_access("before", "2026-06-10T11:59:00Z"))
    engine.set_policy(NEW, effective_from=LOADED)
    found += engine.process(_access("after", "2026-06-10T12:00:00Z"))
    # Stamped before the load, arriving after it: still the old policy's.
    found += engine.process(_access("late", "2026-06-10T11:59:30Z"))
    found += engine.flush()
    sep001 = sorted(f.evidence_event_ids[0] for f in found if f.rule_id == "SEP-001")
    assert sep001 == ["before", "late"]


def test_without_a_load_time_the_new_policy_is_the_only_one() -> None:
    engine = Engine(OLD, now=lambda: cases.FIXED_NOW)
    engine.set_policy(NEW)
    found = engine.run([_access("a", "2026-06-10T11:00:00Z")])
    assert not [f for f in found if f.rule_id == "SEP-001"]


def test_the_alert_router_takes_the_rules_version_and_keeps_its_routes_if_unusable() -> None:
    """One watcher (streams/topology.py applies each recorded version to the
    rules and to the router alike): a router has no policy file of its own."""
    from schemas.policy import AlertingPolicy, Route
    from streams.alerts.router import AlertRouter
    from streams.settings import ChannelSettings, Settings

    pager = ChannelSettings(kind="pagerduty", url="http://127.0.0.1:9/", routing_key="k" * 32)
    settings = Settings(topic_prefix="r.", channels={"pager": pager})
    first = Policy(alerting=AlertingPolicy(routes=[Route(name="all", channels=["pager"])]))
    router = AlertRouter(settings, first)
    later = Policy(
        alerting=AlertingPolicy(
            routes=[Route(name="high", match={"severity": "high"}, channels=["pager"])]
        )
    )
    router.adopt(later)
    assert [r.name for r in router.policy.alerting.routes] == ["high"]
    unusable = Policy(alerting=AlertingPolicy(routes=[Route(name="x", channels=["sms"])]))
    router.adopt(unusable)
    assert [r.name for r in router.policy.alerting.routes] == ["high"]


def test_a_policy_file_is_read_again_only_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    shutil.copy(Path(__file__).resolve().parents[1] / "deploy/policy/example.yaml", path)
    first = load_policy(path)
    watched = PolicyFile(path, first)
    assert watched.changed() is None and watched.current() is first

    def edit(text: str, at: float) -> None:
        path.write_text(text, encoding="utf-8")
        os.utime(path, (at, at))  # a new modification time, whatever the clock's grain

    good = path.read_text(encoding="utf-8")
    edit(good.replace("\n", "\n\n", 1), 1_000_000_000)
    again = watched.changed()
    assert again is not None and again is not first and watched.current() is again
    assert watched.changed() is None  # unchanged since: not read again

    edit("not: [a, policy", 1_000_000_100)
    with pytest.raises(PolicyError):
        watched.changed()
    with pytest.raises(PolicyError):  # still refused: no policy to show as the file's
        watched.current()
    assert watched.policy is again  # the last one accepted stays

    edit(good, 1_000_000_200)
    assert watched.current() is not again and watched.changed() is None
