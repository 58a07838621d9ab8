"""Reading a policy file (contract.md, "Policy file"): a policy that does not
validate is refused with every problem listed (file, path, line, reason)."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from cli.main import app
from schemas import format_duration, parse_duration
from schemas.policy_file import PolicyError, Problem, load_policy, parse_policy

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "deploy" / "policy" / "example.yaml"


def line_of(text: str, needle: str) -> int:
    """1-based number of the one line of `text` that contains `needle`."""
    hits = [n for n, line in enumerate(text.splitlines(), start=1) if needle in line]
    assert len(hits) == 1, f"{needle!r} is on lines {hits}"
    return hits[0]


def problems_of(text: str, file: str = "p.yaml") -> list[Problem]:
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, file)
    problems = caught.value.problems
    assert problems, "a refused policy must say why"
    return problems


def flat(text: str) -> str:
    """Undo the console's line wrapping."""
    return " ".join(text.split())


# -- the example ---------------------------------------------------------------------


def test_example_policy_loads() -> None:
    policy = load_policy(EXAMPLE)
    raw = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    assert [a.app_id for a in policy.registry] == [a["app_id"] for a in raw["registry"]]
    assert [w.id for w in policy.waivers] == [w["id"] for w in raw["waivers"]]
    assert [p.effective_from for p in policy.permitted_categories] == [
        p["effective_from"] for p in raw["permitted_categories"]
    ]
    assert policy.allowed_lateness == timedelta(seconds=60)
    assert policy.posture.max_age == timedelta(hours=24)
    assert policy.dlp.correlation_window == timedelta(minutes=10)
    assert policy.alerting.group_window == timedelta(minutes=15)
    assert policy.review.baseline == date(2026, 4, 20)
    box = next(a for a in policy.registry if a.app_id == "box")
    assert box.evaluation_valid_until == date(2026, 9, 30)


def test_policy_from_the_contract_loads() -> None:
    # The sample in contract.md, "Policy file", verbatim but for comments.
    text = """\
version: 1
allowed_lateness: 60s
registry:
  - app_id: m365-sharepoint
    name: Microsoft SharePoint Online
    category: document
    evaluated: true
    evaluation_valid_from: 2026-04-20
    evaluation_valid_until: 2027-04-19
    pseudonymous_designated: false
permitted_categories:
  - effective_from: 2026-04-20
    categories: [collaboration, document, scheduling, meeting, messaging, project_management]
posture:
  max_age: 24h
  require: {managed: true, edr_running: true, disk_encrypted: true, screen_lock: true,
            jailbroken: false, os_patch_age_days_max: 30}
dlp:
  correlation_window: 10m
  unique_identification: [kr_rrn, kr_passport, kr_driver_license, kr_alien_registration]
  personal_credit: [personal_credit_info]
  pseudonymous: [pseudonymized]
review:
  baseline: 2026-04-20
  interval_months: 6
  report_within_days: 30
authentication:
  require_mfa: true
  exempt_apps: []
sharing:
  external: forbid
  partner_domains: []
  internal_domains: [bank.example]
waivers: []
alerting:
  group_window: 15m
"""
    policy = parse_policy(text)
    assert policy.registry[0].app_id == "m365-sharepoint"
    assert policy.authentication is not None and policy.authentication.require_mfa
    assert policy.sharing is not None and policy.sharing.internal_domains == ["bank.example"]
    assert policy.posture.require.os_patch_age_days_max == 30
    assert policy.review.report_within_days == 30


def test_sections_for_sep010_and_sep011_are_optional() -> None:
    policy = parse_policy("version: 1\n")
    assert policy.authentication is None and policy.sharing is None


@pytest.mark.parametrize(
    ("sharing", "reason"),
    [
        ("{external: forbid, partner_domains: [p.example]}", "only with external: partners_only"),
        ("{external: partners_only}", "needs at least one partner_domains"),
        (
            "{external: partners_only, partner_domains: [b.example], "
            "internal_domains: [B.example]}",
            "both internal and a partner: b.example",
        ),
        ("{external: allow}", "'forbid' or 'partners_only'"),
    ],
)
def test_sharing_section_problems(sharing: str, reason: str) -> None:
    problems = problems_of(f"version: 1\nsharing: {sharing}\n")
    assert any(p.path.startswith("sharing") and reason in p.reason for p in problems), problems


# -- every problem at once -----------------------------------------------------------

BAD = """\
version: 1
allowed_lateness: soon
registry:
  - app_id: docs
    category: document
    evaluated: false
  - app_id: wiki
    category: document
    evaluated: maybe
  - app_id: chat
    category: messaging
    evaluated: true
  - app_id: docs
    category: document
    evaluated: false
posture:
  max_age: 24h
  colour: blue
waivers:
  - rule_id: SEP-042
    valid_from: 2026-05-01
    valid_until: 2026-06-01
    approved_by: CISO Kim
    reason: unknown rule
  - rule_id: SEP-001
    valid_from: 2026-07-01
    valid_until: 2026-06-01
    approved_by: CISO Kim
    reason: backwards dates
"""


def test_every_problem_is_reported_with_path_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD, encoding="utf-8")
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    got = {p.path: p for p in caught.value.problems}
    # path -> (line, a word the reason must contain)
    expected = {
        "allowed_lateness": (line_of(BAD, "allowed_lateness: soon"), "duration"),
        "registry[1].evaluated": (line_of(BAD, "evaluated: maybe"), "bool"),
        "registry[2]": (line_of(BAD, "app_id: chat"), "evaluation_valid_from"),
        "posture.colour": (line_of(BAD, "colour: blue"), "xtra"),
        "waivers[0].rule_id": (line_of(BAD, "SEP-042"), "SEP-001"),
        "waivers[1]": (line_of(BAD, "rule_id: SEP-001"), "valid_from"),
    }
    wrong = []
    for where, (line, word) in expected.items():
        problem = got.get(where)
        if problem is None:
            wrong.append(f"{where}: not reported")
            continue
        if problem.line != line:
            wrong.append(f"{where}: line {problem.line}, expected {line}")
        if word not in problem.reason:
            wrong.append(f"{where}: reason {problem.reason!r} does not mention {word!r}")
    # The duplicate app_id (registry[0] and registry[3] are both `docs` from
    # the same day) is a problem of the list as a whole.
    dup = got.get("registry")
    if dup is None:
        wrong.append("registry: duplicate app_id 'docs' not reported")
    else:
        if "docs" not in dup.reason:
            wrong.append(f"registry: reason {dup.reason!r} does not name the app")
        first, last = line_of(BAD, "registry:"), line_of(BAD, "posture:")
        if dup.line is None or not first <= dup.line <= last:
            wrong.append(f"registry: line {dup.line}, expected within {first}..{last}")
    assert not wrong, "\n".join(wrong)
    assert all(p.file == str(path) for p in caught.value.problems)
    assert all(p.reason.strip() for p in caught.value.problems)


def test_duplicate_app_id_alone_is_reported() -> None:
    text = """\
registry:
  - app_id: docs
    category: document
    evaluated: false
  - app_id: docs
    category: document
    evaluated: false
"""
    [problem] = problems_of(text)
    assert problem.path == "registry"
    assert "docs" in problem.reason
    assert problem.line in (1, 2)


def test_same_app_id_on_different_dates_is_allowed() -> None:
    text = """\
registry:
  - app_id: docs
    category: document
    evaluated: false
  - app_id: docs
    category: document
    evaluated: true
    evaluation_valid_from: 2026-05-01
    evaluation_valid_until: 2027-04-30
    effective_from: 2026-05-01
"""
    policy = parse_policy(text)
    assert [a.evaluated for a in policy.registry] == [False, True]


def test_evaluated_app_without_validity_dates() -> None:
    text = "registry:\n  - app_id: chat\n    category: messaging\n    evaluated: true\n"
    [problem] = problems_of(text)
    assert problem.path == "registry[0]"
    assert problem.line == 2
    assert "evaluation_valid_until" in problem.reason


def test_evaluation_dates_backwards() -> None:
    text = """\
registry:
  - app_id: chat
    category: messaging
    evaluated: true
    evaluation_valid_from: 2027-01-01
    evaluation_valid_until: 2026-01-01
"""
    [problem] = problems_of(text)
    assert problem.path == "registry[0]"
    assert "after" in problem.reason


def test_unknown_top_level_key() -> None:
    text = "version: 1\nalowed_lateness: 60s\n"
    [problem] = problems_of(text)
    assert problem.path == "alowed_lateness"
    assert problem.line == 2


def test_misspelt_section_reports_the_line_of_its_key() -> None:
    # The mistake is the key `postur`; its settings below it are fine.
    text = "version: 1\npostur:\n  max_age: 24h\n  require: {managed: true}\n"
    [problem] = problems_of(text)
    assert problem.path == "postur"
    assert problem.line == line_of(text, "postur:")


def test_unknown_rule_id_in_a_waiver() -> None:
    text = """\
waivers:
  - rule_id: SEP-012
    valid_from: 2026-05-01
    valid_until: 2026-06-01
    approved_by: CISO Kim
    reason: no such rule
"""
    [problem] = problems_of(text)
    assert problem.path == "waivers[0].rule_id"
    assert problem.line == 2


def test_duplicate_permitted_categories_date() -> None:
    text = """\
permitted_categories:
  - effective_from: 2026-04-20
    categories: [document]
  - effective_from: 2026-04-20
    categories: [document, meeting]
"""
    [problem] = problems_of(text)
    assert problem.path == "permitted_categories"
    assert "2026-04-20" in problem.reason


def test_problem_prints_file_line_path_and_reason() -> None:
    [problem] = problems_of("version: 1\nallowed_lateness: soon\n", file="x/p.yaml")
    text = str(problem)
    assert text.startswith("x/p.yaml:2: allowed_lateness: ")
    assert problem.reason in text


# -- not a policy at all -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "lines"),
    [
        ("version: 1\nregistry: [docs, chat\nposture: {}\n", {2, 3}),
        ("version: 1\n\tallowed_lateness: 60s\n", {2}),
        ("version: 1\nposture:\n  max_age: 24h\n   require: {}\n", {3, 4}),
        ('version: 1\nalerting: {group_window: "15m}\n', {2, 3}),
    ],
    ids=["unclosed-list", "tab", "bad-indent", "unclosed-quote"],
)
def test_invalid_yaml_reports_a_line(text: str, lines: set[int]) -> None:
    [problem] = problems_of(text)
    assert problem.line in lines
    assert "YAML" in problem.reason
    assert problem.file == "p.yaml"


@pytest.mark.parametrize("text", ["- a\n- b\n", "just words\n", "42\n", "", "~\n"])
def test_top_level_must_be_a_mapping(text: str) -> None:
    [problem] = problems_of(text)
    assert "mapping" in problem.reason
    assert problem.path == ""


def test_unreadable_file_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(PolicyError) as caught:
        load_policy(missing)
    [problem] = caught.value.problems
    assert problem.file == str(missing)
    assert "read" in problem.reason


# -- durations -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("10m", 600),
        ("24h", 86_400),
        ("7d", 604_800),
        ("1h30m", 5_400),
        ("1d2h3m4s", 93_784),
        ("0s", 0),
        (90, 90),
        (0, 0),
    ],
)
def test_durations_parse(text: str | int, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)
    value = text if isinstance(text, int) else f'"{text}"'
    policy = parse_policy(f"allowed_lateness: {value}\nposture: {{max_age: {value}}}\n")
    assert policy.allowed_lateness == timedelta(seconds=seconds)
    assert policy.posture.max_age == timedelta(seconds=seconds)


@pytest.mark.parametrize(
    "value",
    ["soon", "", "10", "10x", "h", "-5s", "1.5h", "10 m", -1, -0.5, True, None, [1]],
)
def test_durations_reject_garbage_and_negatives(value: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)


@pytest.mark.parametrize("value", ["soon", "-5s", "-30", "10x", "true", "[1m]"])
def test_bad_duration_in_a_policy_is_a_problem(value: str) -> None:
    text = f"version: 1\ndlp:\n  correlation_window: {value}\n"
    [problem] = problems_of(text)
    assert problem.path == "dlp.correlation_window"
    assert problem.line == 3


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 400 * 86_400))
def test_property_duration_text_round_trips(seconds: int) -> None:
    text = format_duration(timedelta(seconds=seconds))
    assert parse_duration(text) == timedelta(seconds=seconds)


# -- `sepwatch policy check` ---------------------------------------------------------


def test_policy_check_accepts_the_example() -> None:
    result = CliRunner().invoke(app, ["policy", "check", str(EXAMPLE)])
    assert result.exit_code == 0, result.output
    assert "ok" in result.output


CLI_BAD = """\
version: 1
allowed_lateness: soon
registry:
  - app_id: wiki
    category: document
    evaluated: maybe
  - app_id: chat
    category: messaging
    evaluated: true
posture:
  colour: blue
waivers:
  - rule_id: SEP-001
    valid_from: 2026-07-01
    valid_until: 2026-06-01
    approved_by: CISO Kim
    reason: backwards dates
"""


def test_policy_check_lists_every_problem_and_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("bad.yaml").write_text(CLI_BAD, encoding="utf-8")
    result = CliRunner().invoke(app, ["policy", "check", "bad.yaml"])
    assert result.exit_code == 2
    printed = flat(result.output)
    expected = [
        (line_of(CLI_BAD, "allowed_lateness: soon"), "allowed_lateness"),
        (line_of(CLI_BAD, "evaluated: maybe"), "registry[0].evaluated"),
        (line_of(CLI_BAD, "app_id: chat"), "registry[1]"),
        (line_of(CLI_BAD, "colour: blue"), "posture.colour"),
        (line_of(CLI_BAD, "rule_id: SEP-001"), "waivers[0]"),
    ]
    for line, where in expected:
        assert f"bad.yaml:{line}: {where}: " in printed, (where, printed)
    assert f"{len(expected)} problem(s)" in printed


def test_policy_check_on_invalid_yaml_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("version: 1\nregistry: [a, b\nposture: {}\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["policy", "check", str(path)])
    assert result.exit_code == 2
    assert "YAML" in result.output


def test_policy_check_on_missing_file_exits_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["policy", "check", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert "cannot read" in flat(result.output)


IMPOSSIBLE_DATES = """\
version: 1
registry:
  - app_id: box
    category: document
    evaluated: true
    evaluation_valid_from: 2026-02-30
    evaluation_valid_until: 2026-13-01
"""


@pytest.mark.parametrize(
    "command", [["policy", "check"], ["replay", "-e", "-", "-o", "f.jsonl", "-p"]]
)
def test_an_impossible_unquoted_date_is_a_problem_at_its_line(
    tmp_path: Path, command: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # YAML parses unquoted dates while loading, so `2026-02-30` was a traceback (exit 1).
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "dates.yaml"
    path.write_text(IMPOSSIBLE_DATES, encoding="utf-8")
    result = CliRunner().invoke(app, [*command, str(path)], input="")
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    printed = flat(result.output)
    for key in ("evaluation_valid_from", "evaluation_valid_until"):
        line = line_of(IMPOSSIBLE_DATES, key)
        assert f"dates.yaml:{line}: registry[0].{key}: " in printed, printed


def test_an_unknown_time_zone_is_a_problem_at_its_line() -> None:
    text = "version: 1\ntimezone: Asia/Busan\n"
    [problem] = problems_of(text)
    assert (problem.path, problem.line) == ("timezone", 2)
    assert "IANA time zone" in problem.reason
    assert parse_policy("version: 1\ntimezone: Asia/Seoul\n").timezone == "Asia/Seoul"
    assert parse_policy("version: 1\n").timezone == "UTC"  # absent: UTC, as before
