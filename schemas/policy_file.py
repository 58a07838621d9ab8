"""Reading a policy file: every problem listed with its file, path, line and reason."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from schemas import Policy


@dataclass(frozen=True)
class Problem:
    file: str
    path: str
    line: int | None
    reason: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.path or '(top)'}: {self.reason}"


class PolicyError(Exception):
    """A policy that cannot be used, with every problem found in it."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def dotted(loc: tuple[int | str, ...]) -> str:
    """`('registry', 2, 'category')` -> `registry[2].category`."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _line_of(node: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """Walk the YAML node tree along a pydantic error location; a mapping
    step points at its key's line (a misspelt key is reported where it is)."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            pair = next(((k, v) for k, v in node.value if k.value == part), None)
            if pair is not None:
                line = pair[0].start_mark.line + 1
            node = pair[1] if pair is not None else None
            if node is None:
                break
            continue
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            node = node.value[part] if part < len(node.value) else None
        else:
            node = None
        if node is None:
            break
        line = node.start_mark.line + 1
    return line


class _DatesAsText(yaml.SafeLoader):
    """YAML 1.1 turns `2026-02-30` into a date while loading, and an impossible
    one into a ValueError with no line; leaving dates as text lets the model
    validate them, so a bad date is a problem at its line like any other."""


_DatesAsText.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def read_yaml(text: str, file: str) -> tuple[Any, Any]:
    """The YAML node tree (for line numbers) and the data; a YAML error is a
    problem at its line."""
    try:
        return yaml.compose(text, Loader=_DatesAsText), yaml.load(
            text, Loader=_DatesAsText
        )  # a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise PolicyError([Problem(file, "", line, f"not valid YAML: {exc}")]) from None


def parse_policy(text: str, file: str = "<policy>") -> Policy:
    node, data = read_yaml(text, file)
    if not isinstance(data, dict):
        raise PolicyError([Problem(file, "", 1, "a policy is a YAML mapping of settings")])
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_input=False, include_url=False):
            loc = tuple(err["loc"])
            reason = err["msg"].removeprefix("Value error, ")
            problems.append(Problem(file, dotted(loc), _line_of(node, loc), reason))
        # The model's list-wide checks run only once every item is valid; so
        # that one pass lists every problem, repeat them on the raw data.
        reported = {p.path for p in problems}
        for loc, reason in _duplicates(data):
            if dotted(loc) not in reported:  # else the model said it already
                problems.append(Problem(file, dotted(loc), _line_of(node, loc), reason))
        raise PolicyError(problems) from None


def _duplicates(data: dict[str, Any]) -> list[tuple[tuple[int | str, ...], str]]:
    """Raw twins of Policy's uniqueness checks, worded as the model words them."""
    checks: tuple[tuple[str, Callable[[dict[str, Any]], Any], str], ...] = (
        ("registry", lambda e: e.get("app_id"), "app_id listed twice with the same effective_from"),
        (
            "permitted_categories",
            lambda e: e.get("effective_from"),
            "two entries take effect on the same day",
        ),
        ("waivers", lambda e: e.get("id"), "waiver id used twice"),
    )
    found: list[tuple[tuple[int | str, ...], str]] = []
    for section, name_of, reason in checks:
        items = data.get(section)
        if not isinstance(items, list):
            continue
        keys = [
            (name_of(i), str(i.get("effective_from")) if section == "registry" else "")
            for i in items
            if isinstance(i, dict) and name_of(i) is not None
        ]
        twice = sorted({str(k[0]) for k in keys if keys.count(k) > 1})
        if twice:
            found.append(((section,), f"{reason}: {', '.join(twice)}"))
    return found


def load_policy(path: str | Path) -> Policy:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError([Problem(str(p), "", None, f"cannot read: {exc.strerror}")]) from None
    return parse_policy(text, str(p))


class PolicyFile:
    """A policy file read again when its modification time changes: how the
    worker's reload and the console notice an edit, one way for both."""

    def __init__(self, path: str | Path, policy: Policy | None = None) -> None:
        """`policy`: the file's, already read (its modification time then is
        taken as read); None: read on first use."""
        self.path = Path(path)
        self.policy = policy
        self._mtime = self.path.stat().st_mtime if policy is not None else None
        self._refused: PolicyError | None = None

    def changed(self) -> Policy | None:
        """The file's policy if the file changed since it was last read, else
        None. Raises OSError when it cannot be looked at, PolicyError when the
        changed file is refused: a refused file is not read again until it
        changes again, and `policy` stays the last one accepted."""
        mtime = self.path.stat().st_mtime
        if mtime == self._mtime:
            return None
        self._mtime = mtime
        try:
            self.policy = load_policy(self.path)
        except PolicyError as exc:
            self._refused = exc
            raise
        self._refused = None
        return self.policy

    def current(self) -> Policy:
        """The file's policy as it is now; raises PolicyError while it is refused."""
        self.changed()
        if self._refused is not None:
            raise self._refused
        assert self.policy is not None  # read above, or refused
        return self.policy
