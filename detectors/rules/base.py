"""What every rule module declares, and what a rule returns when it fires."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from schemas.findings import RuleId, Severity

# The regulation this catalogue enforces (shared/context/regulation.md).
REGULATION = "Electronic Financial Supervisory Regulation, detailed rules rev. 2026-04-20"


@dataclass(frozen=True)
class Rule:
    id: RuleId
    title: str
    severity: Severity
    regulation: str
    reads: tuple[str, ...]


@dataclass(frozen=True)
class Hit:
    """A rule fired: the sentence an analyst reads, what it saw, and the ids
    of the events it used besides the trigger."""

    summary: str
    details: dict[str, Any] = field(default_factory=dict)
    evidence: tuple[str, ...] = ()
