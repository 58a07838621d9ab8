"""`findings list` at the width of the terminal it prints to."""

from __future__ import annotations

from typing import Any

import pytest
from rich.console import Console

from cli.findings_table import findings_table

FOUND: list[dict[str, Any]] = [
    {
        "timestamp": "2026-11-23T03:12:45+00:00",
        "finding_id": f"SEP-007-0123456789abcdef012{n}",
        "rule_id": "SEP-007",
        "severity": "medium",
        "status": "acknowledged",
        "entity": "BR-SEOUL-GN",
        "user_id": "u-gn-00049-contractor",
        "device_id": "lt-gn-00049",
        "saas_app": "chatgpt-enterprise",
    }
    for n in range(3)
]


def _printed(width: int) -> list[str]:
    console = Console(width=width, record=True)
    console.print(findings_table(FOUND, 120, width))
    return console.export_text().splitlines()


@pytest.mark.parametrize("width", [60, 80, 100, 120])
def test_every_row_fits_and_keeps_its_time_and_id_whole(width: int) -> None:
    lines = _printed(width)
    assert all(len(line.rstrip()) <= width for line in lines)
    header = next(line for line in lines if "time (UTC)" in line)
    rows = [line for line in lines if "SEP-007-" in line]
    assert len(rows) == len(FOUND)
    for row, f in zip(rows, FOUND, strict=True):
        assert f["finding_id"] in row and "2026-11-23 03:12" in row
    # No column shrinks to a letter or two: each shown header is whole.
    cells = header.split()
    assert len(cells) >= 3 and all(len(c) >= 2 or c == "id" for c in cells), header


def test_at_80_columns_the_analysts_columns_come_first_cut_with_an_ellipsis() -> None:
    lines = _printed(80)
    header = next(line for line in lines if "time (UTC)" in line).split()
    assert header[:5] == ["time", "(UTC)", "id", "status", "entity"]
    row = next(line for line in lines if "SEP-007-" in line)
    assert "…" in row  # "acknowledged" and "BR-SEOUL-GN" do not fit whole


def test_a_wide_terminal_shows_everything_whole() -> None:
    lines = _printed(200)
    row = next(line for line in lines if "SEP-007-" in line)
    for value in FOUND[0].values():
        if value != FOUND[0]["timestamp"] and value != FOUND[0]["finding_id"]:
            assert str(value) in row
    assert "…" not in row
