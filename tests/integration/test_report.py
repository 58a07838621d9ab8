"""The semiannual review on real servers: reviews recorded on Kafka, the
report built from findings in a real Elasticsearch."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from typer.testing import CliRunner

from schemas.policy import ReviewPolicy
from streams.cli import app as cli
from streams.policy_file import load_policy
from streams.replay import replay
from streams.report.reviews import merge, read_reviews
from streams.topics import Topics
from tests.integration.conftest import POLICY

pytestmark = pytest.mark.integration
runner = CliRunner()


def _sep008(policy: Any, lines: list[bytes]) -> list[dict[str, Any]]:
    out = io.StringIO()
    replay(policy, lines, out, io.StringIO())
    found = [json.loads(x) for x in out.getvalue().splitlines()]
    return [f for f in found if f["rule_id"] == "SEP-008"]


def test_a_recorded_review_is_on_the_topic_listed_with_its_next_due_date_and_resets_sep008(
    broker: str, prefix: str
) -> None:
    env = {"SEPWATCH_BROKER": broker, "SEPWATCH_TOPIC_PREFIX": prefix, "COLUMNS": "220"}
    now = datetime.now(UTC)
    completed = (now - timedelta(days=1)).replace(microsecond=0)
    args = ["review", "record", "--entity", "HQ", "--reviewer", "정보보호부 김OO"]
    done = runner.invoke(
        cli,
        [*args, "--completed-at", completed.isoformat(), "--controls", "SEP-001, SEP-006"],
        env=env,
    )
    assert done.exit_code == 0, done.output
    # The report to the committee, recorded afterwards for the same review.
    reported = completed + timedelta(hours=5)
    again = runner.invoke(
        cli,
        [
            *args,
            "--completed-at",
            completed.isoformat(),
            "--reported-at",
            reported.isoformat(),
            "--controls",
            "SEP-008",
        ],
        env=env,
    )
    assert again.exit_code == 0, again.output

    records, skipped = read_reviews(broker, Topics(prefix))
    assert (len(records), skipped) == (2, 0)
    [review] = merge(records)
    assert review.reported_at == reported and review.controls == ("SEP-001", "SEP-006", "SEP-008")

    listed = runner.invoke(cli, ["review", "list", "--entity", "HQ"], env=env)
    assert listed.exit_code == 0, listed.output
    assert completed.strftime("%Y-%m-%d %H:%M") in listed.output
    # Next due: six calendar months after the review (181 to 184 days, by the months).
    assert any(
        (completed.date() + timedelta(days=d)).isoformat() in listed.output for d in range(181, 185)
    ), listed.output
    assert "on time" in listed.output  # reported within 30 days

    # What the engine makes of it: an entity whose baseline was five months
    # ago misses its due date a month from now, unless this review counts.
    base = load_policy(POLICY)
    policy = base.model_copy(
        update={"review": ReviewPolicy(baseline=(now - timedelta(days=150)).date())}
    )
    later = (now + timedelta(days=60)).isoformat()
    access = json.dumps(
        {
            "stream": "saas_access",
            "event_id": "a-1",
            "timestamp": later,
            "entity": "HQ",
            "user_id": "u-1",
            "device_id": "d-1",
            "saas_app": "m365-teams",
            "action": "view",
            "network_zone": "external",
        }
    ).encode()
    without = _sep008(policy, [access])
    assert [f["entity"] for f in without] == ["HQ"]
    reviews = [r.model_dump_json().encode() for r in records]
    assert _sep008(policy, [*reviews, access]) == []
    refused = runner.invoke(
        cli,
        [*args, "--completed-at", "2026-10-15T17:00:00", "--controls", "SEP-001"],
        env=env,
    )
    assert refused.exit_code == 2 and "offset" in refused.output
