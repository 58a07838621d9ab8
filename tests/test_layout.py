"""The rooms import one way (docs/architecture.md): every import in the
project's packages, at the top of a module or inside a function, read with
`ast`, points down the chain, and no package reaches one beside it.

    cli -> console -> review -> streams, simulator -> adapters -> detectors -> schemas

A package imports only those below it; streams/ and simulator/ sit side by
side and import neither the other. A module-level circle is refused too: an
import hidden in a function to dodge one still counts."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Lower rank first; a package may import its own modules and lower ranks only.
RANK = {
    "schemas": 0,
    "detectors": 1,
    "adapters": 2,
    "streams": 3,
    "simulator": 3,
    "review": 4,
    "console": 5,
    "cli": 6,
}


def _module_of(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_only(tree: ast.Module) -> set[int]:
    """Ids of the imports under `if TYPE_CHECKING:`: read by mypy, never run."""
    hidden: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            hidden.update(id(inner) for stmt in node.body for inner in ast.walk(stmt))
    return hidden


def _imports(source: str, package: str, *, run_only: bool = False) -> Iterator[tuple[int, str]]:
    """(line, module) of every import in a module's source, wherever it is;
    `run_only`: not those only a type checker reads. `package`: where a
    relative import starts."""
    tree = ast.parse(source)
    hidden = _type_only(tree) if run_only else set()
    for node in ast.walk(tree):
        if id(node) in hidden:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                # `from streams import metrics` imports the module streams.metrics
                yield node.lineno, f"{base}.{alias.name}"


def _graph(*, run_only: bool = False) -> dict[str, list[tuple[int, str]]]:
    graph: dict[str, list[tuple[int, str]]] = {}
    for package in RANK:
        for path in sorted((ROOT / package).rglob("*.py")):
            module = _module_of(path)
            where = module if path.name == "__init__.py" else module.rpartition(".")[0]
            graph[module] = [
                (line, name)
                for line, name in _imports(
                    path.read_text(encoding="utf-8"), where, run_only=run_only
                )
                if name.split(".")[0] in RANK
            ]
    return graph


def _known(name: str, modules: dict[str, list[tuple[int, str]]]) -> str:
    """The project module an imported name is, or is in (`a.b.func` -> `a.b`)."""
    while name not in modules and "." in name:
        name = name.rpartition(".")[0]
    return name


def test_every_import_points_down_the_chain() -> None:
    wrong = []
    for module, imports in _graph().items():
        own = module.split(".")[0]
        for line, name in imports:
            other = name.split(".")[0]
            if other != own and RANK[other] >= RANK[own]:
                path = module.replace(".", "/")
                wrong.append(f"{path}.py:{line}: {own} imports {name} ({other} is not below it)")
    assert not wrong, "\n".join(wrong)


def test_no_module_imports_itself_back() -> None:
    graph = _graph(run_only=True)
    edges = {
        module: {_known(name, graph) for _, name in imports} - {module}
        for module, imports in graph.items()
    }
    circles: list[list[str]] = []
    done: set[str] = set()

    def visit(module: str, trail: list[str]) -> None:
        if module in trail:
            circles.append([*trail[trail.index(module) :], module])
            return
        if module in done:
            return
        for other in sorted(edges.get(module, ())):
            visit(other, [*trail, module])
        done.add(module)

    for module in sorted(edges):
        visit(module, [])
    assert not circles, "\n".join(" -> ".join(c) for c in circles)


def test_the_check_sees_every_kind_of_import() -> None:
    """Inside functions, relative, and type-only ones: a check that read
    nothing would pass every layout."""
    source = (
        "from typing import TYPE_CHECKING\n"
        "import streams.topics\n"
        "if TYPE_CHECKING:\n"
        "    from adapters.mapping import VendorMapping\n"
        "def f():\n"
        "    from cli.main import app\n"
        "    from . import sibling\n"
    )
    names = [name for _, name in _imports(source, "review")]
    assert {"streams.topics", "cli.main.app", "review.sibling"} <= set(names)
    assert "adapters.mapping.VendorMapping" in names
    run = [name for _, name in _imports(source, "review", run_only=True)]
    assert "adapters.mapping.VendorMapping" not in run
