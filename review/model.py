"""The report's figures: everything the HTML and the PDF show, and report.json.

Counts are exact counts of findings documents in Elasticsearch; where a
figure comes from elsewhere (access tallies, the policy, the control-reviews
topic) its source is named in `Sources`.
"""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, ConfigDict

SCHEMA_VERSION = 1


class _Figures(BaseModel):
    model_config = ConfigDict(frozen=True)


class Sources(_Figures):
    findings_index: str
    access_index: str
    reviews_topic: str | None
    policy: str


class PeriodFigures(_Figures):
    label: str
    start: datetime  # inclusive: local midnight of first_day, in the policy's zone
    end: datetime  # exclusive
    first_day: date
    last_day: date


class Change(_Figures):
    """This period against the previous one."""

    current: int
    previous: int
    delta: int
    percent: float | None  # None where the previous period had none


class Top(_Figures):
    """One of the most frequent users, devices or apps of a rule (masked)."""

    label: str
    count: int


class TopList(_Figures):
    items: list[Top]
    others: int  # findings of the rule with another value (or none)
    exact: bool  # Elasticsearch's terms counts are exact (no shard error)


class OpenItem(_Figures):
    """A finding still to be closed (open or acknowledged), masked."""

    finding_id: str
    timestamp: datetime
    rule_id: str
    severity: str
    status: str
    entity: str
    user: str | None
    device: str | None
    saas_app: str | None
    age_days: int  # whole days from its event time to the report's as-of date
    # Who set the status, from the newest lifecycle record's authenticated
    # actor; None while the finding is as the worker wrote it.
    status_by: str | None = None


class MonthCount(_Figures):
    month: str  # YYYY-MM, months of the policy's zone
    count: int


class RuleFigures(_Figures):
    rule_id: str
    severity: str
    name: str
    regulation: str
    count: Change
    by_status: dict[str, int]
    by_month: list[MonthCount]
    resolved: int
    resolved_timed: int  # resolved with the time it took recorded (the median's base)
    median_minutes_to_resolve: float | None  # detected_at to resolved_at, whole minutes
    top_users: TopList
    top_devices: TopList
    top_apps: TopList
    open_count: int
    oldest_open: list[OpenItem]  # the oldest few; every one is in the appendix


class EntityFigures(_Figures):
    entity: str
    total: int
    by_status: dict[str, int]
    by_severity: dict[str, int]
    by_rule: dict[str, int]


class DeviceMeasure(_Figures):
    """Share of internal SaaS accesses made from compliant devices.

    Every internal access from a device that fails a required protection
    (SEP-006) or shows no recent posture (SEP-007) is one finding, whatever its
    status; the accesses themselves are counted in the access tally."""

    entity: str
    internal_accesses: int | None  # None: no tally for this entity and period
    failing_posture: int  # SEP-006 findings
    unknown_posture: int  # SEP-007 findings
    noncompliant: int
    compliant: int | None
    compliant_share: float | None  # 0..1
    note: str | None  # no_tally | tally_short (fewer accesses than findings)


class AppFigures(_Figures):
    app_id: str
    name: str
    category: str | None
    status: str  # in_force | expiring | expired | not_yet_valid | not_evaluated | not_in_registry
    category_permitted: bool | None
    evaluation_valid_until: date | None
    internal_accesses: int | None
    findings: int


class ExpiryFigures(_Figures):
    app_id: str
    name: str
    evaluation_valid_until: date
    days_left: int


class WaiverFigures(_Figures):
    waiver_id: str
    rule_id: str
    scope: str  # entity / user / device / app it covers (identifier-shaped values masked)
    approved_by: str
    reason: str
    valid_from: date
    valid_until: date
    findings_waived: int  # in the period
    # The recorded policy version it came from (streams/policy_history.py);
    # None when the history was not read, "" when no recorded version holds it.
    policy_version: str | None = None


class ReviewFigures(_Figures):
    entity: str
    completed_at: datetime
    due: date
    done_on_time: bool
    reported_at: datetime | None
    report_deadline: datetime
    report: str  # on_time | late | not_reported | pending
    reviewer: str
    controls: list[str]


class ReviewDue(_Figures):
    entity: str
    last_completed: date | None
    next_due: date
    overdue: bool


class Evidence(_Figures):
    """The period's findings as the committee signs them (review/evidence.py):
    one sha256 over the period's finding digests, sorted, one a line; `sepwatch evidence
    verify --period P --digest D` checks it against the findings topic."""

    findings: int
    digest: str
    # Findings of the period stored before digests were: not covered by `digest`.
    before_digests: int = 0


class Report(_Figures):
    schema_version: int = SCHEMA_VERSION
    generated_at: datetime
    as_of: date
    timezone: str = "UTC"  # the policy's: days, months and periods are its; times shown in it
    lang: str
    entity: str | None  # None: every entity together
    period: PeriodFigures
    previous_period: PeriodFigures
    sources: Sources
    empty: bool
    total: Change
    by_status: dict[str, Change]
    by_severity: dict[str, Change]
    by_rule: dict[str, Change]
    by_month: list[MonthCount]
    rules: list[RuleFigures]
    entities: list[EntityFigures]
    devices: list[DeviceMeasure]
    devices_all: DeviceMeasure
    apps: list[AppFigures]
    expiring: list[ExpiryFigures]
    waivers: list[WaiverFigures]
    reviews: list[ReviewFigures]
    reviews_due: list[ReviewDue]
    open_total: int
    appendix: list[OpenItem]
    appendix_truncated: int  # open findings beyond the appendix limit
    evidence: Evidence | None = None  # the whole period only (no --entity)
