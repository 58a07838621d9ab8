"""Policy versions: digest, the diff of waivers and registry, which versions
are in force, where each waiver came from, and a replay that judges each
event by the version in force at its time."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from typer.testing import CliRunner

from cli.main import app
from schemas import Policy
from schemas.policy_file import load_policy
from streams.policy_history import changes, digest_of, in_force, new_version, waiver_versions
from tests.integration.conftest import POLICY

WHO = {"os_user": "svc-sepwatch", "host": "w1", "kafka_principal": "ANONYMOUS"}
T1 = datetime(2026, 11, 23, 0, 0, tzinfo=UTC)
T2 = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)


def _with_notion(policy: Policy) -> Policy:
    data = policy.model_dump(mode="json")
    data["registry"].append(
        {
            "app_id": "notion",
            "category": "collaboration",
            "evaluated": True,
            "evaluation_valid_from": "2026-04-20",
            "evaluation_valid_until": "2027-12-31",
        }
    )
    data["waivers"][0]["reason"] = "extended: MDM enrolment slipped"
    data["waivers"].append({**data["waivers"][0], "id": "WV-NEW"})
    return Policy.model_validate(data)


def notion_access(event_id: str, at: datetime) -> str:
    """An internal access to an app the older policy lacks (SEP-001 under it)."""
    return json.dumps(
        {
            "stream": "saas_access",
            "event_id": event_id,
            "entity": "HQ",
            "timestamp": at.isoformat(),
            "user_id": "u1",
            "device_id": None,
            "saas_app": "notion",
            "action": "view",
            "network_zone": "internal",
            "source": "test",
        }
    )


def test_a_version_records_its_digest_and_what_changed_in_waivers_and_registry() -> None:
    before = load_policy(POLICY)
    after = _with_notion(before)
    assert digest_of(before) == digest_of(load_policy(POLICY))  # the same rules, the same digest
    assert digest_of(after) != digest_of(before)
    first = new_version(before, None, at=T1, loaded_by=WHO, source="p.yaml")
    assert first.changes["waivers"]["added"] == sorted(w.name for w in before.waivers)
    second = new_version(after, first, at=T2, loaded_by=WHO, source="p.yaml")
    assert second.changes["registry"] == {"added": ["notion"], "removed": [], "changed": []}
    assert second.changes["waivers"] == {
        "added": ["WV-NEW"],
        "removed": [],
        "changed": [before.waivers[0].name],
    }
    assert changes(after, before)["waivers"]["removed"] == ["WV-NEW"]
    assert second.version > first.version and second.parsed() == after


def test_the_same_policy_recorded_twice_is_one_version_and_the_first_stands() -> None:
    policy = load_policy(POLICY)
    a = new_version(policy, None, at=T1, loaded_by=WHO, source="w1")
    again = new_version(policy, a, at=T1 + timedelta(seconds=3), loaded_by=WHO, source="w2")
    b = new_version(_with_notion(policy), a, at=T2, loaded_by=WHO, source="w1")
    assert in_force([b, again, a]) == [a, b]


def test_each_waiver_cites_the_version_it_came_from() -> None:
    before = load_policy(POLICY)
    after = _with_notion(before)
    a = new_version(before, None, at=T1, loaded_by=WHO, source="p")
    b = new_version(after, a, at=T2, loaded_by=WHO, source="p")
    cited = waiver_versions([a, b], after)
    assert cited["WV-NEW"] == b.version
    assert cited[before.waivers[0].name] == b.version  # changed in b: from b on
    unchanged = [w.name for w in before.waivers[1:]]
    assert unchanged and all(cited[n] == a.version for n in unchanged)


def test_replay_judges_each_event_by_the_version_in_force_at_its_time(tmp_path: Path) -> None:
    before = load_policy(POLICY)
    a = new_version(before, None, at=T1, loaded_by=WHO, source="p")
    b = new_version(_with_notion(before), a, at=T2, loaded_by=WHO, source="p")
    history = tmp_path / "history.jsonl"
    history.write_text(a.model_dump_json() + "\n" + b.model_dump_json() + "\n")

    events = tmp_path / "events.jsonl"
    events.write_text(
        notion_access("before", T2 - timedelta(hours=1))
        + "\n"
        + notion_access("after", T2 + timedelta(hours=1))
    )
    out = tmp_path / "f.jsonl"
    args = ["replay", "-q", "-e", str(events), "-o", str(out)]
    done = CliRunner().invoke(app, [*args, "--policy-history", str(history)])
    assert done.exit_code == 0, done.output
    sep001 = [json.loads(x) for x in out.read_text().splitlines()]
    assert [f["evidence_event_ids"] for f in sep001 if f["rule_id"] == "SEP-001"] == [["before"]]
    # With today's file alone, the earlier access would be judged by the newer registry.
    today = tmp_path / "today.yaml"
    today.write_text(
        POLICY.read_text().replace(
            "registry:\n",
            "registry:\n  - {app_id: notion, category: collaboration, evaluated: true, "
            "evaluation_valid_from: 2026-04-20, evaluation_valid_until: 2027-12-31}\n",
            1,
        )
    )
    assert CliRunner().invoke(app, [*args, "-p", str(today)]).exit_code == 0
    assert not [x for x in out.read_text().splitlines() if '"SEP-001"' in x]
    bad = CliRunner().invoke(app, [*args, "--policy-history", str(events)])
    assert bad.exit_code == 2 and "not a policy history" in " ".join(bad.output.split())
