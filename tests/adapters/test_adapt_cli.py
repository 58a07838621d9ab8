"""`sepwatch adapt`, `sepwatch replay --format` and the mapping's refusal."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from typer.testing import CliRunner

from adapters.mapping import configured_mapping, load_mapping
from cli.main import app
from schemas.policy_file import parse_policy
from streams.settings import Settings
from tests.adapters.conftest import MAPPING, POLICY, VENDORS

runner = CliRunner()


def test_adapt_writes_canonical_events_and_masked_dead_letters(tmp_path: Path) -> None:
    out = tmp_path / "canonical.jsonl"
    result = runner.invoke(
        app,
        ["adapt", "--format", "m365", "--in", str(VENDORS / "m365-content-blob.json"),
         "--out", str(out), "--mapping", str(MAPPING), "--policy", str(POLICY)],
    )  # fmt: skip
    assert result.exit_code == 1, result.output  # two records dead-lettered
    events = [json.loads(line) for line in out.read_text().splitlines()]
    assert {e["stream"] for e in events} == {"saas_access", "dlp_alert"}
    assert len(events) == 7
    dead = Path(f"{out}.dead.jsonl").read_text()
    assert len(dead.splitlines()) == 2 and "1234568" not in dead
    assert "1234568" not in out.read_text()
    assert "AzureActiveDirectory UserLoggedIn" in result.output  # the skipped count


def test_adapt_refuses_an_unknown_format_and_a_bad_mapping(tmp_path: Path) -> None:
    raw = str(VENDORS / "okta-logs-page.json")
    unknown = runner.invoke(app, ["adapt", "--format", "splunk", "--in", raw])
    assert unknown.exit_code == 2 and "okta" in unknown.output
    bad = tmp_path / "m.yaml"
    bad.write_text("egress_proxies:\n  - {ip: 300.1.1.1, entity: HQ}\nextra: 1\n")
    refused = runner.invoke(app, ["adapt", "--format", "okta", "--in", raw, "--mapping", str(bad)])
    assert refused.exit_code == 2
    assert "2 problem(s)" in refused.output
    assert "egress_proxies[0].ip" in refused.output and "extra" in refused.output


def test_replay_with_format_judges_raw_records(tmp_path: Path) -> None:
    findings = tmp_path / "findings.jsonl"
    result = runner.invoke(
        app,
        ["replay", "--format", "okta", "-e", str(VENDORS / "okta-logs-page.json"),
         "-o", str(findings), "-p", str(POLICY), "--mapping", str(MAPPING)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    found = [json.loads(line) for line in findings.read_text().splitlines()]
    sep001 = {f["evidence_event_ids"][0] for f in found if f["rule_id"] == "SEP-001"}
    assert sep001 == {"c9a2d3e5-5e6f-11f0-9a1b-0242ac120002"}  # notion, from a branch
    # SharePoint from HQ with no posture for the device: SEP-007, not SEP-001.
    assert any(
        f["rule_id"] == "SEP-007"
        and f["evidence_event_ids"][0] == "b8f1c2d4-5e6f-11f0-9a1b-0242ac120002"
        for f in found
    )
    dead = Path(f"{findings}.dead.jsonl").read_text().splitlines()
    assert [json.loads(d)["field"] for d in dead] == ["client.ipAddress"]


def test_the_worker_refuses_a_malformed_mapping_before_it_reaches_kafka(tmp_path: Path) -> None:
    bad = tmp_path / "m.yaml"
    bad.write_text("apps:\n  - {app_id: box, colour: blue}\n")
    result = runner.invoke(
        app,
        ["worker", "--broker", "127.0.0.1:1", "--policy", str(POLICY)],
        env={"SEPWATCH_MAPPING": str(bad)},
    )
    assert result.exit_code == 2
    assert "mapping refused" in result.output and "apps[0].colour" in result.output


def test_adapt_exits_1_when_records_are_dead_lettered_and_lists_the_reasons(
    tmp_path: Path,
) -> None:
    out = tmp_path / "okta.jsonl"
    result = runner.invoke(
        app,
        ["adapt", "--format", "okta", "--in", str(VENDORS / "okta-misrouted-slack-audit.log"),
         "--out", str(out), "--mapping", str(MAPPING), "--policy", str(POLICY)],
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert out.read_text() == ""
    assert len(Path(f"{out}.dead.jsonl").read_text().splitlines()) == 2
    assert "unrecognised shape for okta" in result.output  # the reason, in the table


def test_adapt_to_stdout_puts_dead_letters_on_stderr_not_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(
        app,
        ["adapt", "--format", "m365", "--in", str(VENDORS / "m365-shipped-lookalike.jsonl"),
         "--out", "-", "--mapping", str(MAPPING), "--policy", str(POLICY), "--quiet"],
    )  # fmt: skip
    assert result.exit_code == 1
    assert list(tmp_path.iterdir()) == []
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(events) == 7 and {e["stream"] for e in events} == {"dlp_alert"}  # an undo too
    [letter] = [json.loads(line) for line in result.stderr.splitlines()]
    assert letter["source"] == "m365" and "unrecognised shape" in letter["reason"]


def test_adapt_writes_dead_letters_where_told_and_exits_0_when_all_map(tmp_path: Path) -> None:
    dead = tmp_path / "letters" / "okta.dead.jsonl"
    dead.parent.mkdir()
    result = runner.invoke(
        app,
        ["adapt", "--format", "netskope", "--in", str(VENDORS / "netskope-alerts-v2-elastic.jsonl"),
         "--out", str(tmp_path / "n.jsonl"), "--dead-letter", str(dead),
         "--mapping", str(MAPPING), "--policy", str(POLICY)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert dead.read_text() == "" and not Path(f"{tmp_path / 'n.jsonl'}.dead.jsonl").exists()
    assert "alert quarantine" in result.output and "dlp_alert" in result.output


def test_adapt_exits_2_for_input_or_output_it_cannot_use(tmp_path: Path) -> None:
    args = ["--mapping", str(MAPPING), "--policy", str(POLICY)]
    missing = runner.invoke(
        app, ["adapt", "-f", "okta", "--in", str(tmp_path / "none.json"), "-o", "-", *args]
    )
    assert missing.exit_code == 2 and "cannot read" in missing.output
    broken = tmp_path / "okta.json.gz"
    broken.write_bytes(b"\x1f\x8b\x08\x00 not gzip")
    truncated = runner.invoke(app, ["adapt", "-f", "okta", "--in", str(broken), "-o", "-", *args])
    assert truncated.exit_code == 2 and "cannot read" in truncated.output
    unwritable = runner.invoke(
        app,
        ["adapt", "-f", "okta", "--in", str(VENDORS / "okta-logs-page.json"),
         "-o", str(tmp_path / "no" / "dir.jsonl"), *args],
    )  # fmt: skip
    assert unwritable.exit_code == 2 and "cannot write" in unwritable.output


def test_the_worker_reads_no_mapping_unless_one_is_configured(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A bank's own policy lacks the apps of the shipped example mapping: the
    # worker used to load that mapping anyway and refuse to start.
    monkeypatch.delenv("SEPWATCH_MAPPING", raising=False)
    own = parse_policy("version: 1\nregistry: []\n")
    assert Settings().mapping is None
    assert configured_mapping(None, own) is None
    caplog.set_level(logging.INFO, logger="sepwatch")
    assert configured_mapping(MAPPING, own) is None  # only the raw intake stays off
    refused = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(refused) == 1
    for app_id in {a.app_id for a in load_mapping(MAPPING).apps}:
        assert f"{app_id!r} is not in the policy registry" in refused[0], app_id
