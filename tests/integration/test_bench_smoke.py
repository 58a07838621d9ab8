"""`python -m bench` runs end to end: a tiny run of its latency section on the
session's broker, so a benchmark broken by a change (or by the calendar, as
on the Sunday of issue 20) fails the suite rather than the next full run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import ES_PORT, PORT, ROOT

pytestmark = pytest.mark.integration
BENCH = [sys.executable, "-m", "bench"]


def test_the_benchmark_harness_runs_end_to_end(broker: str, tmp_path: Path) -> None:
    report = tmp_path / "BENCHMARKS.md"
    run = subprocess.run(
        [*BENCH, "--smoke", "--sections", "latency", "--reuse-servers", "--out", str(report)],
        cwd=ROOT,
        env={**os.environ, "SEPWATCH_BENCH_KAFKA_PORT": PORT},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    written = report.read_text(encoding="utf-8")
    assert "| latency | 300 events/s offered" in written, written
    assert "section failed" not in written


def test_the_guarantee_section_measures_both_guarantees_and_the_floor(
    broker: str, elasticsearch: str, tmp_path: Path
) -> None:
    """Issue 19's cost of exactly once: the same worker under each guarantee,
    to Elasticsearch, and the Faust read-only agent, each measured."""
    report = tmp_path / "BENCHMARKS.md"
    run = subprocess.run(
        [*BENCH, "--smoke", "--sections", "guarantee", "--reuse-servers", "--out", str(report)],
        cwd=ROOT,
        env={**os.environ, "SEPWATCH_BENCH_KAFKA_PORT": PORT, "SEPWATCH_BENCH_ES_PORT": ES_PORT},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    written = report.read_text(encoding="utf-8")
    assert "section failed" not in written
    for figure in (
        "one worker, exactly_once, to Elasticsearch",
        "one worker, at_least_once, to Elasticsearch",
        "Faust agent that only reads the same inputs",
        "exactly_once / at_least_once, run by run",
        "exactly_once / Faust read-only agent, medians",
    ):
        row = next((line for line in written.splitlines() if figure in line), "")
        assert row and "n/a" not in row and "nan" not in row, (figure, written)
