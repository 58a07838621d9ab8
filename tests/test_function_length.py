"""No function in the runtime is longer than a reader holds in mind at once
(the style guide: under ~60 lines): each one read with `ast`, from its `def`
(decorators aside) to its last line, docstring and comments included.

A command's options are `Annotated` aliases (cli/options.py, or beside the
command), so a Typer command is as short as its work."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = ("cli", "adapters", "review", "streams", "console", "simulator", "detectors", "schemas")
LIMIT = 60

# Files waiting for their own rewrite, and functions still long in a file
# being changed beside this check; each entry is a debt, not a licence.
ALLOWED_FILES: set[str] = set()
ALLOWED_FUNCTIONS: set[tuple[str, str]] = set()


def _functions(path: Path) -> Iterator[tuple[str, int, int]]:
    """(name, first line, length) of every function and method in a module."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            assert node.end_lineno is not None
            yield node.name, node.lineno, node.end_lineno - node.lineno + 1


def _too_long() -> list[str]:
    found = []
    for package in RUNTIME:
        for path in sorted((ROOT / package).rglob("*.py")):
            where = path.relative_to(ROOT).as_posix()
            if where in ALLOWED_FILES:
                continue
            for name, line, length in _functions(path):
                if length > LIMIT and (where, name) not in ALLOWED_FUNCTIONS:
                    found.append(f"{where}:{line} {name}: {length} lines")
    return found


def test_no_function_in_the_runtime_is_over_60_lines() -> None:
    assert _too_long() == []


def test_the_allow_list_names_only_what_is_still_long() -> None:
    """An entry whose function got short (or went) is taken off the list."""
    for where, name in ALLOWED_FUNCTIONS:
        lengths = [n for f, _, n in _functions(ROOT / where) if f == name]
        assert lengths and max(lengths) > LIMIT, f"{where} {name} is short now: unlist it"
    for where in ALLOWED_FILES:
        assert any(n > LIMIT for _, _, n in _functions(ROOT / where)), f"{where}: unlist it"


def test_the_check_sees_a_long_function(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(LIMIT))
    module = tmp_path / "long.py"
    module.write_text(f"def long() -> None:\n{body}\n", encoding="utf-8")
    assert [(n, length) for n, _, length in _functions(module)] == [("long", LIMIT + 1)]
