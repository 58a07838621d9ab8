"""The simulated multi-vendor day (`sepwatch simulate --vendors`): no
hand-written device entry, every product naming devices its own way, and
replay finds exactly what it finds on the same day in canonical form."""

from __future__ import annotations

import io
import json
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from adapters.mapping import DEFAULT_MAPPING, load_mapping
from cli.main import app
from schemas.policy_file import load_policy
from simulator.vendors import CANONICAL, VENDOR_SOURCES, Builds, lines, names_of
from streams.replay import replay
from tests.vendor_day import POLICY, START, canonical_lines, day, judged, vendor_lines


def _replayed(events: list[bytes]) -> list[dict[str, Any]]:
    out, dead = io.StringIO(), io.StringIO()
    replay(load_policy(POLICY), events, out, dead)
    assert dead.getvalue() == ""
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_every_product_names_devices_its_own_way_and_no_entry_is_hand_written() -> None:
    d = day()
    sources = Counter(a.source for a in d.arrivals)
    assert set(sources) == {CANONICAL, *VENDOR_SOURCES}
    device = next(e["device_id"] for e in d.canonical if e["stream"] == "device_posture")
    n = names_of(device)
    named = {
        json.dumps(a.record) for a in d.arrivals if a.source != CANONICAL
    }  # the canonical id appears in no vendor record, in any case
    assert not any(device.lower() in r.lower() for r in named)
    assert len({n.entra, n.intune, n.falcon, n.serial, n.hostname.lower()}) == 5
    postures = [e for e in d.adapted if e["stream"] == "device_posture"]
    assert all(
        e["device_aliases"] and e["device_aliases"][0]["kind"] != "mapping" for e in postures
    )
    assert {e["source"] for e in postures} == {"intune", "crowdstrike"}


@pytest.mark.parametrize("size", [(60, 12, 6), (300, 24, 2)], ids=["small", "whole-day"])
def test_replay_finds_on_the_vendor_day_exactly_what_it_finds_on_the_canonical_day(
    size: tuple[int, float, int],
) -> None:
    d = day(*size)
    want = judged(_replayed(canonical_lines(d)), d)
    got = judged(_replayed(vendor_lines(d)), d)
    assert got == want
    rules = Counter(rule for rule, _, _ in want)
    assert rules["SEP-006"] > 5 and rules["SEP-007"] > 5  # a day that could show a miss


def test_without_the_learned_aliases_the_vendor_day_floods_with_sep_007() -> None:
    d = day()
    bare = [{k: v for k, v in e.items() if k != "device_aliases"} for e in d.adapted]
    want = judged(_replayed(canonical_lines(d)), d)
    got = judged(_replayed(lines(bare)), d)
    extra = Counter(rule for rule, _, _ in got - want)
    missed = Counter(rule for rule, _, _ in want - got)
    assert extra["SEP-007"] > 10 and missed["SEP-006"] > 0  # what the test above rules out


def test_a_day_outside_the_release_table_is_refused_with_the_reason() -> None:
    mapping = load_mapping(DEFAULT_MAPPING)
    with pytest.raises(ValueError, match=r"os_releases .* from 2025-01-01 to 2025-01-02"):
        Builds.of(mapping, date(2025, 1, 1), date(2025, 1, 2), 30)
    first = START.date()
    assert Builds.of(mapping, first, first, 30).passing == "10.0.26100.7309"
    with pytest.raises(ValueError, match="from 2026-11-23 to 2026-12-31"):
        Builds.of(mapping, first, date(2026, 12, 31), 30)  # 7309 would age past 30 days


def test_simulate_vendors_writes_each_products_file_and_the_truth(tmp_path: Path) -> None:
    out = tmp_path / "day"
    args = ["simulate", "--vendors", str(out), "--users", "20", "--hours", "3", "-p", POLICY]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    written = {p.name: p.read_bytes().splitlines() for p in out.iterdir()}
    assert set(written) == {
        f"{name}.jsonl" for name in (*VENDOR_SOURCES, CANONICAL, "day", "one-id", "devices")
    }
    intune = json.loads(written["intune.jsonl"][0])
    truth = {json.loads(line)["entra"]: json.loads(line) for line in written["devices.jsonl"]}
    assert intune["properties"]["ReferenceId"] in truth
    replayed = CliRunner().invoke(
        app,
        [
            "replay",
            "-q",
            "-e",
            str(out / "day.jsonl"),
            "-o",
            str(tmp_path / "f.jsonl"),
            "-p",
            POLICY,
        ],
    )
    assert replayed.exit_code == 0, replayed.output
    assert (tmp_path / "f.jsonl.dead.jsonl").read_text() == ""


def test_simulate_vendors_on_a_day_outside_the_release_table_exits_2(tmp_path: Path) -> None:
    args = ["simulate", "--vendors", str(tmp_path / "d"), "--start", "2025-01-01T00:00:00+09:00"]
    result = CliRunner().invoke(app, [*args, "--hours", "1", "-p", POLICY])
    assert result.exit_code == 2
    assert "os_releases" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "d").exists()
