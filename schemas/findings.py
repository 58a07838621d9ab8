"""Findings: the audit record of one rule firing on one trigger."""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import AwareDatetime, BaseModel, ConfigDict

RuleId = Literal[
    "SEP-001",
    "SEP-002",
    "SEP-003",
    "SEP-004",
    "SEP-005",
    "SEP-006",
    "SEP-007",
    "SEP-008",
    "SEP-009",
    "SEP-010",
    "SEP-011",
]
RULE_IDS: tuple[str, ...] = get_args(RuleId)
Severity = Literal["low", "medium", "high", "critical"]
SEVERITIES: tuple[str, ...] = get_args(Severity)
# open and waived come from the engine; acknowledged and resolved are set by
# analysts later in the finding's life.
Status = Literal["open", "acknowledged", "resolved", "waived"]


class WaiverRef(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    approved_by: str
    reason: str
    valid_until: str


class Finding(BaseModel):
    model_config = ConfigDict(frozen=True)

    finding_id: str
    rule_id: RuleId
    rule_name: str
    severity: Severity
    status: Status
    timestamp: AwareDatetime
    detected_at: AwareDatetime
    entity: str
    user_id: str | None = None
    device_id: str | None = None
    saas_app: str | None = None
    evidence_event_ids: list[str]
    summary: str
    regulation: str
    waiver: WaiverRef | None = None
    details: dict[str, Any] = {}
