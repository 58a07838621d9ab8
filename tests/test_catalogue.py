"""The rule catalogue's metadata, checked the way Elastic's detection-rules
checks its TOML, and the Panther rule that every rule has a case that fires
and one that does not (shared/design/style.md)."""

from __future__ import annotations

import importlib
import pkgutil
import re
from types import ModuleType

import pytest
from typer.testing import CliRunner

import detectors.rules
from cli.main import app
from detectors import CATALOGUE
from schemas import RULE_IDS, SEVERITIES, STREAMS
from tests import cases

# shared/design/rules.md, "Rules".
SEVERITY_TABLE = {
    "SEP-001": "high",
    "SEP-002": "medium",
    "SEP-003": "critical",
    "SEP-004": "critical",
    "SEP-005": "high",
    "SEP-006": "high",
    "SEP-007": "medium",
    "SEP-008": "high",
    "SEP-009": "medium",
    "SEP-010": "high",
    "SEP-011": "high",
}
REGULATION_NAME = "Electronic Financial Supervisory Regulation"
MODULE_NAME = re.compile(r"sep(\d{3})_[a-z0-9_]+")


def rule_modules() -> list[ModuleType]:
    names = [
        m.name
        for m in pkgutil.iter_modules(detectors.rules.__path__)
        if MODULE_NAME.fullmatch(m.name)
    ]
    return [importlib.import_module(f"detectors.rules.{name}") for name in sorted(names)]


MODULES = rule_modules()
CASES = cases.load()


def test_catalogue_is_exactly_sep001_to_sep011() -> None:
    assert sorted(CATALOGUE) == sorted(SEVERITY_TABLE)
    assert set(RULE_IDS) == set(SEVERITY_TABLE)
    for key, rule in CATALOGUE.items():
        assert rule.id == key


def test_one_module_a_rule_and_ids_unique() -> None:
    ids = [m.RULE.id for m in MODULES]
    assert len(ids) == len(set(ids)), ids
    assert sorted(ids) == sorted(SEVERITY_TABLE)
    assert {id(m.RULE) for m in MODULES} == {id(r) for r in CATALOGUE.values()}


@pytest.mark.parametrize("module", MODULES, ids=[m.__name__ for m in MODULES])
def test_rule_module_has_docstring_and_rule(module: ModuleType) -> None:
    assert module.__doc__ and module.__doc__.strip(), f"{module.__name__} has no docstring"
    assert hasattr(module, "RULE"), f"{module.__name__} declares no RULE"
    match = MODULE_NAME.fullmatch(module.__name__.rsplit(".", 1)[1])
    assert match is not None
    assert module.RULE.id == f"SEP-{match.group(1)}", "file name and rule id differ"
    assert module.RULE.id in module.__doc__, "a newcomer finds a rule by its id"


@pytest.mark.parametrize("rule_id", sorted(SEVERITY_TABLE))
def test_rule_metadata(rule_id: str) -> None:
    rule = CATALOGUE[rule_id]
    assert rule.severity in SEVERITIES
    assert rule.severity == SEVERITY_TABLE[rule_id]
    assert rule.title.strip()
    assert rule.regulation.strip()
    assert REGULATION_NAME in rule.regulation
    # The clause itself, beyond the regulation's name.
    assert len(rule.regulation.split(":", 1)[-1].strip()) > 20
    assert rule.reads, "a rule states what it reads"
    assert set(rule.reads) <= set(STREAMS) | {"watermark"}


def test_titles_are_distinct() -> None:
    titles = [r.title for r in CATALOGUE.values()]
    assert len(titles) == len(set(titles))


def test_every_case_names_a_catalogued_rule() -> None:
    assert {rule for rule, _ in CASES} <= set(CATALOGUE)
    for rule, case in CASES:
        assert case.get("name"), f"{rule}: a case without a name"
        assert case.get("events"), f"{rule}: {case.get('name')}: no events"
        assert isinstance(case.get("expect"), list), f"{rule}: {case['name']}: no expect list"


@pytest.mark.parametrize("rule_id", sorted(SEVERITY_TABLE))
def test_every_rule_has_a_positive_and_a_negative_case(rule_id: str) -> None:
    mine = [case for rule, case in CASES if rule == rule_id]
    assert any(case["expect"] for case in mine), f"{rule_id}: no case that must fire"
    assert any(case["expect"] == [] for case in mine), f"{rule_id}: no case that must not fire"


def test_rules_command_lists_the_catalogue() -> None:
    result = CliRunner().invoke(app, ["rules"])
    assert result.exit_code == 0, result.output
    for rule_id, severity in SEVERITY_TABLE.items():
        assert re.search(rf"\b{rule_id}\b\W+{severity}\b", result.output), rule_id
