"""Reading the rule cases that live beside the rules (detectors/rules/cases)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

import detectors.rules
from detectors import Engine
from schemas import EventAdapter, Finding, Policy

CASES_DIR = Path(detectors.rules.__file__).parent / "cases"
FIXED_NOW = datetime(2030, 1, 1, tzinfo=UTC)

# What a case's event does not say. Shorthand keeps each case to the fields
# that matter to it, as Panther's and Elastic's rule tests do.
DEFAULTS: dict[str, dict[str, Any]] = {
    "saas_access": {
        "entity": "HQ",
        "user_id": "u1",
        "device_id": "d1",
        "action": "view",
        "network_zone": "internal",
        "source": "test",
    },
    "device_posture": {
        "entity": "HQ",
        "device_id": "d1",
        "managed": True,
        "edr_running": True,
        "disk_encrypted": True,
        "screen_lock": True,
        "os_patch_age_days": 3,
        "source": "test",
    },
    "dlp_alert": {
        "entity": "HQ",
        "user_id": "u1",
        "device_id": "d1",
        "channel": "web",
        "match_count": 1,
        "source": "test",
    },
    "control_review": {"entity": "HQ", "reviewer": "ISO team", "source": "test"},
}


def base_policy() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((CASES_DIR / "_policy.yaml").read_text())
    return data


def policy_for(case: dict[str, Any]) -> Policy:
    return Policy.model_validate({**base_policy(), **case.get("policy", {})})


def event(raw: dict[str, Any]) -> Any:
    return EventAdapter.validate_python({**DEFAULTS[raw["stream"]], **raw})


def load() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(CASES_DIR.glob("SEP-*.yaml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert doc["rule"] == path.stem, f"{path}: rule id and file name differ"
        out.extend((doc["rule"], case) for case in doc["cases"])
    return out


def run(case: dict[str, Any]) -> list[Finding]:
    return run_counting(case)[0]


def run_counting(case: dict[str, Any]) -> tuple[list[Finding], dict[str, int]]:
    """The findings, and what the engine counted (a case's `counts:`: what
    it judged without a finding, as sign-ins that do not say their factors)."""
    engine = Engine(policy_for(case), now=lambda: FIXED_NOW)
    found = engine.run(event(e) for e in case["events"])
    return found, dict(engine.stats)


def mismatch(expected: dict[str, Any], got: Finding) -> str | None:
    """What differs between one expected finding and one found, or None."""
    for key, want in expected.items():
        if key == "evidence":
            have: Any = got.evidence_event_ids
        elif key == "details":
            have = {k: got.details.get(k) for k in want}
        elif key == "waiver":
            have = (
                None
                if got.waiver is None or want is None
                else {k: getattr(got.waiver, k) for k in want}
            )
        elif key == "timestamp":
            have = got.timestamp.isoformat()
        else:
            have = getattr(got, key)
        if have != want:
            return f"{key}: expected {want!r}, found {have!r}"
    return None
