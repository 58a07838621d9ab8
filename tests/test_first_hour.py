"""What a new user meets in the first hour: help texts, refusals, the demo's
last words, the samples' description, a clean install."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from typer.testing import CliRunner

from cli.demo import afterwards
from cli.main import app

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


def test_help_paragraphs_flow_to_the_terminal_width() -> None:
    # typer's rich help kept the docstring's hard line breaks: ragged at any width.
    shown = runner.invoke(app, ["worker", "--help"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0
    lines = [" ".join(line.split()) for line in shown.output.splitlines()]
    assert any(
        "would break co-partitioning), then validates and routes every event" in line
        for line in lines
    ), shown.output
    # Example command lines stay lines of their own.
    listed = runner.invoke(app, ["findings", "list", "--help"], env={"COLUMNS": "200"})
    assert any(
        line.strip() == "sepwatch findings list --status open --rule SEP-003 --since 24h"
        for line in listed.output.splitlines()
    ), listed.output


def test_an_unknown_rule_is_refused_like_an_unknown_status() -> None:
    env = {"SEPWATCH_ES_URL": "http://127.0.0.1:9", "COLUMNS": "200"}
    for flag, value in (("--rule", "SEP-999"), ("--status", "closed")):
        result = runner.invoke(app, ["findings", "list", flag, value], env=env)
        assert result.exit_code == 2, result.output
        assert f"{flag} {value}" in result.output and "one of" in result.output
        assert "unreachable" not in result.output  # refused before asking Elasticsearch
    listed = runner.invoke(app, ["findings", "list", "--rule", "SEP-999"], env=env).output
    assert "SEP-001" in listed and "SEP-009" in listed


def test_the_demo_says_where_its_findings_stay() -> None:
    # It used to say "run findings list", then stop Elasticsearch and delete its data.
    index = "demo-1733000000-findings"
    said = afterwards("http://127.0.0.1:9200", index, es_stopped=True)
    assert index in said and "deploy/local/elasticsearch.sh up" in said
    assert f"SEPWATCH_ES_INDEX={index}" in said and "sepwatch findings list" in said
    running = afterwards("http://127.0.0.1:9200", index, es_stopped=False)
    assert index in running and "elasticsearch.sh up" not in running
    demo = (ROOT / "cli" / "demo.py").read_text(encoding="utf-8")
    assert '"SEPWATCH_ES_KEEP_DATA": "1"' in demo
    script = (ROOT / "deploy" / "local" / "elasticsearch.sh").read_text(encoding="utf-8")
    assert re.search(r'SEPWATCH_ES_KEEP_DATA:-0}" == 1 \]\] \|\| rm -rf "\$RUN/data"', script)


def test_the_samples_readme_says_what_make_demo_runs() -> None:
    readme = (ROOT / "deploy" / "samples" / "README.md").read_text(encoding="utf-8")
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    demo_target = makefile.split("\ndemo:")[1].split("\n\n")[0]
    assert "sepwatch demo" in demo_target and "replay" not in demo_target
    said = " ".join(readme.split("`make demo`")[1].split("\n\n")[0].split())
    assert said.startswith("streams it through a local Kafka broker and a worker"), said
    assert "sepwatch demo" in said


def test_the_licence_is_an_spdx_string_the_build_backend_accepts() -> None:
    # The `{text = ...}` table makes setuptools print a deprecation warning on every install.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["project"]["license"] == "Apache-2.0"
    [setuptools] = [r for r in project["build-system"]["requires"] if r.startswith("setuptools")]
    minimum = tuple(int(x) for x in setuptools.split(">=")[1].split("."))
    assert minimum >= (77,)  # the first setuptools that reads PEP 639's string


def test_the_demo_shows_finding_times_on_the_banks_clock() -> None:
    from collections import Counter, deque
    from zoneinfo import ZoneInfo

    from rich.console import Console

    from cli.demo import _view

    finding = {"timestamp": "2026-11-23T03:12:45+00:00", "rule_id": "SEP-007", "entity": "HQ"}
    console = Console(width=120, record=True)
    console.print(
        _view(Counter(), deque([{**finding, "summary": "s"}]), "", ZoneInfo("Asia/Seoul"))
    )
    shown = console.export_text()
    assert "time (Asia/Seoul)" in shown and "12:12:45" in shown and "03:12:45" not in shown
