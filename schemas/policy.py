"""The policy file (contract.md, "Policy file"). Effective-dated where the
regulation changes over time: registry entries, permitted categories, waivers.
"""

from __future__ import annotations

from collections import Counter
from datetime import date, timedelta
from typing import Annotated, Any, Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from schemas.durations import Duration
from schemas.findings import RuleId

DEFAULT_CATEGORIES = (
    "collaboration",
    "document",
    "scheduling",
    "meeting",
    "messaging",
    "project_management",
)


class _Strict(BaseModel):
    # A misspelt key in a policy must be an error, not a silently ignored line.
    model_config = ConfigDict(extra="forbid", frozen=True)


class RegistryApp(_Strict):
    """A SaaS app and its evaluation by the incident-response agency."""

    app_id: Annotated[str, Field(min_length=1)]
    name: str = ""
    category: Annotated[str, Field(min_length=1)]
    evaluated: bool
    evaluation_valid_from: date | None = None
    evaluation_valid_until: date | None = None
    pseudonymous_designated: bool = False
    # Several entries for one app_id may stand in the registry, each from its
    # own date: the latest in force at the event's date applies.
    effective_from: date | None = None
    domains: list[str] = []

    @model_validator(mode="after")
    def _validity(self) -> Self:
        if self.evaluated and (
            self.evaluation_valid_from is None or self.evaluation_valid_until is None
        ):
            raise ValueError(
                "an evaluated app needs evaluation_valid_from and evaluation_valid_until"
            )
        if (
            self.evaluation_valid_from
            and self.evaluation_valid_until
            and self.evaluation_valid_from > self.evaluation_valid_until
        ):
            raise ValueError("evaluation_valid_from is after evaluation_valid_until")
        return self


class PermittedCategories(_Strict):
    effective_from: date
    categories: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=0)]


class PostureCheck(_Strict):
    """What a protected device must show (regulation: additional protective measures)."""

    managed: bool = True
    edr_running: bool = True
    disk_encrypted: bool = True
    screen_lock: bool = True
    jailbroken: bool = False
    os_patch_age_days_max: Annotated[int, Field(ge=0)] = 30


class PosturePolicy(_Strict):
    max_age: Duration = timedelta(hours=24)
    require: PostureCheck = PostureCheck()


class IdentityPolicy(_Strict):
    """Device identity learned from posture feeds (detectors/identity.py):
    an alias no posture asserted for `alias_ttl` is forgotten."""

    alias_ttl: Duration = timedelta(days=30)


class DlpPolicy(_Strict):
    correlation_window: Duration = timedelta(minutes=10)
    unique_identification: list[str] = [
        "kr_rrn",
        "kr_passport",
        "kr_driver_license",
        "kr_alien_registration",
    ]
    personal_credit: list[str] = ["personal_credit_info"]
    pseudonymous: list[str] = ["pseudonymized"]


class ReviewPolicy(_Strict):
    baseline: date = date(2026, 4, 20)
    interval_months: Annotated[int, Field(ge=1, le=24)] = 6
    report_within_days: Annotated[int, Field(ge=0, le=366)] = 30
    # Entities whose use of the exception started on another day; they are
    # also tracked for SEP-008 before they send any event.
    entity_baselines: dict[str, date] = {}


class AuthenticationPolicy(_Strict):
    """SEP-010: sign-ins to registered SaaS from the internal network must be multi-factor."""

    require_mfa: bool = True
    exempt_apps: list[Annotated[str, Field(min_length=1)]] = []
    # How long a factor verified in a sign-in session (a `verify`) speaks for
    # the session's later sign-ins: the identity provider's longest session
    # (Okta: the global session policy's maximum lifetime).
    session_lifetime: Duration = timedelta(hours=24)


def _domain(value: str) -> str:
    return value.strip().lower().rstrip(".")


Domain = Annotated[str, Field(min_length=1, max_length=253)]


class SharingPolicy(_Strict):
    """SEP-011: no sharing outside the institution, or only with named partners."""

    external: Literal["forbid", "partners_only"] = "forbid"
    partner_domains: list[Domain] = []
    internal_domains: list[Domain] = []

    @field_validator("partner_domains", "internal_domains")
    @classmethod
    def _lower(cls, domains: list[str]) -> list[str]:
        return [_domain(d) for d in domains]

    @model_validator(mode="after")
    def _partners_read(self) -> Self:
        # A partner list that nothing reads would look like an allowance it is not.
        if self.partner_domains and self.external == "forbid":
            raise ValueError("partner_domains are read only with external: partners_only")
        if self.external == "partners_only" and not self.partner_domains:
            raise ValueError("external: partners_only needs at least one partner_domains entry")
        both = sorted(set(self.partner_domains) & set(self.internal_domains))
        if both:
            raise ValueError("a domain is both internal and a partner: " + ", ".join(both))
        return self


class Waiver(_Strict):
    """An approved exception: findings that match it are recorded as waived."""

    id: str | None = None
    rule_id: RuleId
    entity: str | None = None
    user_id: str | None = None
    device_id: str | None = None
    saas_app: str | None = None
    valid_from: date
    valid_until: date
    approved_by: Annotated[str, Field(min_length=1)]
    reason: Annotated[str, Field(min_length=1)]

    @model_validator(mode="after")
    def _range(self) -> Self:
        if self.valid_from > self.valid_until:
            raise ValueError("valid_from is after valid_until")
        return self

    @property
    def name(self) -> str:
        return self.id or f"{self.rule_id}/{self.approved_by}/{self.valid_from.isoformat()}"


class Route(BaseModel):
    """Where notifications go; the alert router (streams) reads these."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str
    match: dict[str, Any] = {}
    channels: list[str] = []


class AlertingPolicy(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    group_window: Duration = timedelta(minutes=15)
    routes: list[Route] = []


class Policy(_Strict):
    version: Literal[1] = 1
    allowed_lateness: Duration = timedelta(seconds=60)
    # IANA name: the policy's dates, review due days, the report deadline and
    # report periods are whole days here (rules.md, "dates").
    timezone: str = "UTC"
    registry: list[RegistryApp] = []
    permitted_categories: list[PermittedCategories] = [
        PermittedCategories(effective_from=date(2026, 4, 20), categories=list(DEFAULT_CATEGORIES))
    ]
    posture: PosturePolicy = PosturePolicy()
    identity: IdentityPolicy = IdentityPolicy()
    dlp: DlpPolicy = DlpPolicy()
    review: ReviewPolicy = ReviewPolicy()
    # Optional: a policy without them judges neither SEP-010 nor SEP-011.
    authentication: AuthenticationPolicy | None = None
    sharing: SharingPolicy | None = None
    waivers: list[Waiver] = []
    alerting: AlertingPolicy = AlertingPolicy()

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"{name!r} is not an IANA time zone name (e.g. Asia/Seoul, UTC)"
            ) from None
        return name

    @field_validator("registry")
    @classmethod
    def _unique_apps(cls, apps: list[RegistryApp]) -> list[RegistryApp]:
        seen = Counter((a.app_id, a.effective_from) for a in apps)
        twice = sorted(f"{app}" for (app, _), n in seen.items() if n > 1)
        if twice:
            raise ValueError(
                "app_id listed twice with the same effective_from: " + ", ".join(twice)
            )
        return apps

    @field_validator("permitted_categories")
    @classmethod
    def _unique_dates(cls, entries: list[PermittedCategories]) -> list[PermittedCategories]:
        seen = Counter(e.effective_from for e in entries)
        twice = sorted(d.isoformat() for d, n in seen.items() if n > 1)
        if twice:
            raise ValueError("two entries take effect on the same day: " + ", ".join(twice))
        return entries

    @field_validator("waivers")
    @classmethod
    def _waiver_ids(cls, waivers: list[Waiver]) -> list[Waiver]:
        seen = Counter(w.id for w in waivers if w.id)
        twice = sorted(i for i, n in seen.items() if n > 1)
        if twice:
            raise ValueError("waiver id used twice: " + ", ".join(twice))
        return waivers
