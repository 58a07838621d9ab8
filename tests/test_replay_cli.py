"""`sepwatch replay` over a file (contract.md, "The replay command")."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from cli.main import app

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "deploy" / "policy" / "example.yaml"
RRN = "900101-1234568"  # made up; its hidden part is "234568"
HIDDEN = "1234568"


def access(event_id: str, ts: str, app_id: str, **over: Any) -> dict[str, Any]:
    return {
        "stream": "saas_access",
        "event_id": event_id,
        "timestamp": ts,
        "entity": "HQ",
        "user_id": "u1",
        "device_id": "d1",
        "saas_app": app_id,
        "action": "view",
        "network_zone": "internal",
        "source": "test",
        **over,
    }


GOOD_POSTURE = {
    "stream": "device_posture",
    "event_id": "p1",
    "timestamp": "2026-06-10T09:00:00+09:00",
    "entity": "HQ",
    "device_id": "d1",
    "managed": True,
    "edr_running": True,
    "disk_encrypted": True,
    "screen_lock": True,
    "os_patch_age_days": 3,
    "source": "test",
}
DLP = {
    "stream": "dlp_alert",
    "event_id": "x1",
    "timestamp": "2026-06-10T10:10:00+09:00",
    "entity": "HQ",
    "user_id": "u1",
    "device_id": "d1",
    "channel": "saas_upload",
    "saas_app": "m365-sharepoint",
    "data_types": ["kr_rrn"],
    "match_count": 1,
    "snippet": f"고객 주민등록번호 {RRN} 확인",
    "source": "test",
}


def j(obj: dict[str, Any]) -> str:
    return json.dumps(obj, ensure_ascii=False)


# (line text, what it is). Line numbers are 1-based positions in this list.
LINES: list[tuple[str, str]] = [
    (j(GOOD_POSTURE), "ok"),
    # An unregistered app from the internal network, with a field the
    # contract does not name: accepted, and SEP-001.
    (j(access("a1", "2026-06-10T10:00:00+09:00", "notion", ticket="CHG-7")), "ok"),
    (j(access("a2", "2026-06-10T10:01:00+09:00", "m365-sharepoint")), "ok"),
    ('{"stream": "saas_access", "event_id": "broken"', "dead"),
    (j(access("a4", "2026-06-10T10:02:00", "m365-sharepoint")), "dead"),  # naive time
    (j({**access("a5", "2026-06-10T10:03:00+09:00", "zoom"), "stream": "printer_log"}), "dead"),
    ("", "blank"),
    (j({**DLP, "event_id": "x0", "match_count": "many"}), "dead"),  # raw RRN in snippet
    # No device named: SEP-007.
    (j(access("a3", "2026-06-10T10:05:00+09:00", "m365-teams", device_id=None)), "ok"),
    (j(DLP), "ok"),  # to SharePoint with an RRN: SEP-003
    (j(access("a6", "2026-06-10T10:20:00+09:00", "notion", network_zone="external")), "ok"),
    ("   ", "blank"),
]
DEAD_LINES = [n for n, (_, kind) in enumerate(LINES, start=1) if kind == "dead"]
EXPECTED = {("SEP-001", ("a1",)), ("SEP-007", ("a3",)), ("SEP-003", ("x1",))}


def write_events(tmp_path: Path) -> Path:
    path = tmp_path / "events.jsonl"
    path.write_text("".join(text + "\n" for text, _ in LINES), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def found(path: Path) -> set[tuple[str, tuple[str, ...]]]:
    return {(f["rule_id"], tuple(f["evidence_event_ids"])) for f in read_jsonl(path)}


def run(*args: str, **kwargs: Any) -> Result:
    return CliRunner().invoke(app, ["replay", *args], **kwargs)


def check_dead_letters(path: Path) -> list[dict[str, Any]]:
    records = read_jsonl(path)
    assert [r["line"] for r in records] == DEAD_LINES
    for record in records:
        assert isinstance(record["reason"], str) and record["reason"].strip(), record
    by_line = {r["line"]: r for r in records}
    assert "JSON" in by_line[DEAD_LINES[0]]["reason"]
    assert "timestamp" in by_line[DEAD_LINES[1]]["reason"]
    assert "stream" in by_line[DEAD_LINES[2]]["reason"]
    assert "match_count" in by_line[DEAD_LINES[3]]["reason"]
    text = path.read_text(encoding="utf-8")
    assert HIDDEN not in text
    assert "900101-1******" in text  # masked, not dropped: the analyst sees the shape
    return records


def test_replay_findings_and_default_dead_letter_file(tmp_path: Path) -> None:
    events = write_events(tmp_path)
    out = tmp_path / "findings.jsonl"
    result = run("--policy", str(EXAMPLE), "--events", str(events), "--out", str(out))
    assert result.exit_code == 0, result.output
    findings = read_jsonl(out)
    assert found(out) == EXPECTED
    assert len(findings) == len(EXPECTED)  # one finding per trigger, no copies
    for f in findings:
        assert f["finding_id"] and f["status"] == "open"
        assert f["summary"] and f["regulation"]
        assert f["timestamp"].endswith(("Z", "+00:00"))
    sep001 = next(f for f in findings if f["rule_id"] == "SEP-001")
    assert (sep001["user_id"], sep001["saas_app"], sep001["entity"]) == ("u1", "notion", "HQ")
    # Nothing raw leaves the engine: not in findings either.
    assert HIDDEN not in out.read_text(encoding="utf-8")
    check_dead_letters(Path(f"{out}.dead.jsonl"))


def test_replay_explicit_dead_letter_path(tmp_path: Path) -> None:
    events = write_events(tmp_path)
    out = tmp_path / "findings.jsonl"
    dead = tmp_path / "elsewhere" / "bad-lines.jsonl"
    dead.parent.mkdir()
    result = run(
        "-p", str(EXAMPLE), "-e", str(events), "-o", str(out), "--dead-letter", str(dead), "-q"
    )
    assert result.exit_code == 0, result.output
    assert found(out) == EXPECTED
    check_dead_letters(dead)
    assert not Path(f"{out}.dead.jsonl").exists()


def test_replay_reads_stdin(tmp_path: Path) -> None:
    data = "".join(text + "\n" for text, _ in LINES).encode("utf-8")
    out = tmp_path / "findings.jsonl"
    result = run("-p", str(EXAMPLE), "-e", "-", "-o", str(out), input=data)
    assert result.exit_code == 0, result.output
    assert found(out) == EXPECTED
    check_dead_letters(Path(f"{out}.dead.jsonl"))


def test_replay_reads_gzip(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl.gz"
    events.write_bytes(gzip.compress(write_events(tmp_path).read_bytes()))
    out = tmp_path / "findings.jsonl"
    result = run("-p", str(EXAMPLE), "-e", str(events), "-o", str(out))
    assert result.exit_code == 0, result.output
    assert found(out) == EXPECTED


def test_replay_twice_gives_the_same_finding_ids(tmp_path: Path) -> None:
    events = write_events(tmp_path)
    ids = []
    for n in (1, 2):
        out = tmp_path / f"run{n}.jsonl"
        result = run("-p", str(EXAMPLE), "-e", str(events), "-o", str(out), "-q")
        assert result.exit_code == 0, result.output
        ids.append([f["finding_id"] for f in read_jsonl(out)])
    assert ids[0] == ids[1]
    assert len(set(ids[0])) == len(EXPECTED)


def test_replay_missing_events_file_exits_2(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-events.jsonl"
    result = run("-p", str(EXAMPLE), "-e", str(missing), "-o", str(tmp_path / "f.jsonl"))
    assert result.exit_code == 2
    assert "no-such-events.jsonl" in "".join(result.output.split())
    assert "cannot read" in result.output


def test_replay_bad_policy_exits_2(tmp_path: Path) -> None:
    policy = tmp_path / "bad.yaml"
    policy.write_text("version: 1\nallowed_lateness: soon\n", encoding="utf-8")
    events = write_events(tmp_path)
    result = run("-p", str(policy), "-e", str(events), "-o", str(tmp_path / "f.jsonl"))
    assert result.exit_code == 2
    assert "allowed_lateness" in result.output


def test_replay_missing_policy_exits_2(tmp_path: Path) -> None:
    events = write_events(tmp_path)
    result = run(
        "-p", str(tmp_path / "nope.yaml"), "-e", str(events), "-o", str(tmp_path / "f.jsonl")
    )
    assert result.exit_code == 2
    assert "cannot read" in " ".join(result.output.split())


@pytest.mark.parametrize(
    "stream",
    [RRN, "9001011234568"],
    ids=["dash", "no-dash"],
)
def test_dead_letter_masks_identifier_in_an_unknown_stream_value(
    tmp_path: Path, stream: str
) -> None:
    # A mis-mapped adapter put a customer's number where the stream name goes.
    events = tmp_path / "events.jsonl"
    events.write_text(j({"stream": stream, "event_id": "z1"}) + "\n", encoding="utf-8")
    out = tmp_path / "findings.jsonl"
    result = run("-p", str(EXAMPLE), "-e", str(events), "-o", str(out), "-q")
    assert result.exit_code == 0, result.output
    dead = Path(f"{out}.dead.jsonl")
    [record] = read_jsonl(dead)
    assert record["line"] == 1 and record["reason"]
    assert HIDDEN not in dead.read_text(encoding="utf-8")


def test_console_entry_runs_replay(tmp_path: Path) -> None:
    events = write_events(tmp_path)
    out = tmp_path / "findings.jsonl"
    command = [sys.executable, "-m", "cli.main", "replay", "-q", "-p", str(EXAMPLE)]
    proc = subprocess.run(
        [*command, "-e", str(events), "-o", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert found(out) == EXPECTED
    assert [r["line"] for r in read_jsonl(Path(f"{out}.dead.jsonl"))] == DEAD_LINES


def test_long_lived_state_collects_less_often_and_restores_the_collector() -> None:
    import gc

    from streams.collector import long_lived_state

    before = gc.get_threshold()
    kept = [object() for _ in range(10)]
    with long_lived_state():
        assert gc.get_threshold()[0] >= 10_000
        assert gc.get_freeze_count() >= len(kept)
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_replay_counts_sign_ins_that_do_not_say_whether_multi_factor(tmp_path: Path) -> None:
    events = tmp_path / "signins.jsonl"
    lines = [
        access("l1", "2026-06-10T09:00:00+09:00", "m365-sharepoint", action="login"),
        access("l2", "2026-06-10T09:01:00+09:00", "m365-sharepoint", action="login",
               auth={"mfa": None}),
        access("l3", "2026-06-10T09:02:00+09:00", "m365-sharepoint", action="login",
               auth={"mfa": False, "method": "password"}),
        GOOD_POSTURE,
    ]  # fmt: skip
    events.write_text("".join(json.dumps(e) + "\n" for e in lines), encoding="utf-8")
    out = tmp_path / "findings.jsonl"
    result = run("--policy", str(EXAMPLE), "--events", str(events), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "multi-factor 2" in " ".join(result.output.split())
    assert {f["evidence_event_ids"][0] for f in read_jsonl(out) if f["rule_id"] == "SEP-010"} == {
        "l3"
    }


def test_partitions_decide_with_each_input_partitions_clock_as_the_stream_does(
    tmp_path: Path,
) -> None:
    """A posture 69 s behind the file's time is late against one clock for the
    whole file (SEP-007 was decided before it), not against its own
    partition's clock, which produce's marks keep at 12:00:00: the stream
    waits for it and uses it (docs/lateness.md)."""
    lines = [
        access("a1", "2026-06-10T11:59:27+09:00", "m365-sharepoint"),
        access("e1", "2026-06-10T12:00:29+09:00", "m365-sharepoint", user_id="u2", device_id="d2"),
        {**GOOD_POSTURE, "timestamp": "2026-06-10T11:59:20+09:00"},
    ]
    events = tmp_path / "day.jsonl"
    events.write_text("".join(json.dumps(e) + "\n" for e in lines))
    found = {}
    for flag in ([], ["--partitions", "4"], ["--partitions", "0"]):
        out = tmp_path / "findings.jsonl"
        result = CliRunner().invoke(
            app, ["replay", "-p", str(EXAMPLE), "-e", str(events), "-o", str(out), "-q", *flag]
        )
        assert result.exit_code == 0, result.output
        rows = [json.loads(x) for x in out.read_text().splitlines()]
        found[" ".join(flag)] = any(
            f["rule_id"] == "SEP-007" and f["evidence_event_ids"] == ["a1"] for f in rows
        )
    assert found == {"": False, "--partitions 4": False, "--partitions 0": True}
