"""`sepwatch devices show|conflicts`, from the graph a replay builds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from cli.main import app


def _posture(event_id: str, at: str, device: str, aliases: list[tuple[str, str]]) -> dict[str, Any]:
    return {
        "stream": "device_posture",
        "event_id": event_id,
        "timestamp": at,
        "entity": "HQ",
        "device_id": device,
        "managed": True,
        "edr_running": True,
        "disk_encrypted": True,
        "screen_lock": True,
        "os_patch_age_days": 1,
        "source": event_id.split("-")[0],
        "device_aliases": [{"kind": k, "value": v} for k, v in aliases],
    }


def _events(tmp_path: Path) -> str:
    lines = [
        _posture(
            "intune-1",
            "2026-06-01T00:00:00Z",
            "e-1",
            [("entra_device_id", "e-1"), ("serial", "SN1"), ("hostname", "pc-1")],
        ),
        _posture(
            "crowdstrike-1",
            "2026-06-01T01:00:00Z",
            "aid-1",
            [("falcon_aid", "aid-1"), ("serial", "SN1")],
        ),
        # A new laptop given the old one's name.
        _posture(
            "intune-2",
            "2026-06-01T02:00:00Z",
            "e-2",
            [("entra_device_id", "e-2"), ("serial", "SN2"), ("hostname", "pc-1")],
        ),
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in lines))
    return str(path)


def test_show_names_the_device_and_every_alias_with_its_source(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["devices", "show", "AID-1", "-e", _events(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "device e-1" in result.output
    for alias, source in (("sn1", "crowdstrike"), ("aid-1", "crowdstrike"), ("e-1", "intune")):
        assert any(alias in line and source in line for line in result.output.splitlines())
    assert "pc-1" not in result.output  # the hostname went to the newer laptop


def test_show_of_an_alias_no_posture_named_exits_1(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["devices", "show", "nobody", "-e", _events(tmp_path)])
    assert result.exit_code == 1
    assert "no posture named" in result.output


def test_conflicts_lists_the_reused_hostname(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["devices", "conflicts", "-e", _events(tmp_path)])
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if "pc-1" in line)
    assert "hostname" in row and "e-1" in row and "e-2" in row


def test_a_missing_events_file_is_exit_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["devices", "conflicts", "-e", str(tmp_path / "none")])
    assert result.exit_code == 2
