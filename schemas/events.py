"""The four canonical input events (contract.md, "Input events").

Timestamps must carry an offset: a naive time is rejected, never guessed.
Unknown fields are kept in `extra` and never break parsing.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, model_validator

STREAMS = ("saas_access", "device_posture", "dlp_alert", "control_review")
ACTIONS = ("login", "view", "download", "upload", "edit", "share", "delete", "other", "verify")
CHANNELS = ("saas_upload", "email", "web", "usb", "print", "other")

# `verify`: a second factor verified at the identity provider (`saas_app`) in
# a sign-in session (`auth.session`): no use of an app, so no rule judges it;
# it makes the session's later sign-ins multi-factor (SEP-010).
Action = Literal[
    "login", "view", "download", "upload", "edit", "share", "delete", "other", "verify"
]
Channel = Literal["saas_upload", "email", "web", "usb", "print", "other"]
NetworkZone = Literal["internal", "external"]
ShareTarget = Literal["internal", "external", "public"]

# Bounds keep one hostile record from costing unbounded memory downstream.
Id = Annotated[str, Field(min_length=1, max_length=256)]
Name = Annotated[str, Field(min_length=1, max_length=128)]


class _Event(BaseModel):
    model_config = ConfigDict(extra="allow", str_strip_whitespace=True)

    event_id: Id
    timestamp: AwareDatetime
    entity: Name
    source: Annotated[str, Field(max_length=128)] = "unknown"

    @property
    def extra(self) -> dict[str, Any]:
        """Fields the contract does not name, kept as they came."""
        return self.model_extra or {}


class ObjectRef(BaseModel):
    """The file or item acted on."""

    model_config = ConfigDict(extra="allow")

    name: Annotated[str, Field(max_length=1024)] | None = None
    sha256: Annotated[str, Field(pattern=r"^[0-9a-fA-F]{64}$")] | None = None
    size: Annotated[int, Field(ge=0)] | None = None


class AuthInfo(BaseModel):
    """How a sign-in was authenticated, as the source says. `mfa` None: it does not say.
    `session`: the identity provider's sign-in session it belongs to, where the
    source names it (Okta `authenticationContext.externalSessionId`): a
    `verify` of the same user and session joins a sign-in that does not say."""

    model_config = ConfigDict(extra="allow")

    mfa: bool | None = None
    method: Annotated[str, Field(max_length=128)] | None = None
    session: Id | None = None


class SaasAccess(_Event):
    """Someone used a SaaS app. `auth` for a login, `share_target` (and the
    domain shared with, where known) for a share."""

    stream: Literal["saas_access"] = "saas_access"
    user_id: Id
    device_id: Id | None = None
    saas_app: Id
    action: Action
    network_zone: NetworkZone
    src_ip: Annotated[str, Field(max_length=64)] | None = None
    object: ObjectRef | None = None
    auth: AuthInfo | None = None
    share_target: ShareTarget | None = None
    shared_with_domain: Annotated[str, Field(max_length=253)] | None = None


_UNSAID = "null: the source does not speak for this control (unknown, never assumed to pass)"
Control = Annotated[bool | None, Field(description=_UNSAID)]

# The controls a posture can speak for, in the policy's words (`posture.require`).
POSTURE_CONTROLS = (
    "managed",
    "edr_running",
    "disk_encrypted",
    "screen_lock",
    "jailbroken",
    "os_patch_age_days",
)


DeviceAliasKind = Literal[
    "entra_device_id",
    "intune_device_id",
    "serial",
    "hostname",
    "falcon_aid",
    "jamf_udid",
    "osquery_uuid",
    "google_device_id",
    "okta_device_id",
    "mapping",
]


class DeviceAlias(BaseModel):
    """One name a product gives the device a posture speaks for. `mapping`:
    the device id a hand-written `devices:` entry gave it (it overrides what
    is learned)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    kind: DeviceAliasKind
    value: Id


class DevicePosture(_Event):
    """The state of an endpoint at a time. A control that is null is one the
    source does not speak for (an access log's device assurance knows some
    controls, not all): unknown, never assumed to pass. Each control must be
    given, as a value or as null, so a producer's omission is not taken for
    silence; `jailbroken` alone keeps its documented default, false."""

    stream: Literal["device_posture"] = "device_posture"
    device_id: Id
    user_id: Id | None = None
    managed: Control
    edr_running: Control
    disk_encrypted: Control
    screen_lock: Control
    os_patch_age_days: Annotated[int | None, Field(ge=0, le=100_000, description=_UNSAID)]
    jailbroken: Control = False
    # Every name the record gives the device: what the identity graph learns
    # (detectors/identity.py). None: the source names it by `device_id` only.
    device_aliases: Annotated[list[DeviceAlias], Field(max_length=16)] | None = None

    @model_validator(mode="after")
    def _speaks_for_something(self) -> DevicePosture:
        if all(getattr(self, c) is None for c in POSTURE_CONTROLS):
            raise ValueError("a posture must give at least one control a value")
        return self


class DlpMatchRef(BaseModel):
    """How the vendor names a DLP match, so that its later undo can name the
    same one: the product or workload (M365 `Workload`), the document or
    message (`ObjectId`) and the vendor's ids of the rules that matched."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    workload: Name
    object_id: Id
    rule_ids: Annotated[list[Id], Field(min_length=1, max_length=64)]


class DlpRetraction(BaseModel):
    """The vendor undid an earlier match (M365 `DlpRuleUndo`: an override, a
    false positive report, a document or policy change)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    operation: Name
    reason: Annotated[str, Field(max_length=1024)] | None = None


class DlpAlert(_Event):
    """A DLP product saw sensitive data leave. `snippet` is raw here and is
    masked by the engine before anything leaves it. `match_ref`: the vendor's
    names for the match (kept in the findings it makes). With `retraction`,
    the event is no alert: the vendor undoing the match its `match_ref` and
    `user_id` name; no rule judges it, the worker resolves the findings of
    that match (streams/retractions.py)."""

    stream: Literal["dlp_alert"] = "dlp_alert"
    user_id: Id
    device_id: Id | None = None
    channel: Channel
    saas_app: Id | None = None
    data_types: Annotated[list[Name], Field(max_length=64)]
    match_count: Annotated[int, Field(ge=0)]
    object: ObjectRef | None = None
    snippet: Annotated[str, Field(max_length=4096)] | None = None
    match_ref: DlpMatchRef | None = None
    retraction: DlpRetraction | None = None

    @model_validator(mode="after")
    def _retraction_names_its_match(self) -> DlpAlert:
        if self.retraction is not None and self.match_ref is None:
            raise ValueError("a retraction must name the match it undoes (match_ref)")
        return self


class ControlReview(_Event):
    """The six-monthly review of the information-security controls."""

    stream: Literal["control_review"] = "control_review"
    completed_at: AwareDatetime
    reported_to_committee_at: AwareDatetime | None = None
    reviewer: Name
    controls_reviewed: Annotated[list[Name], Field(max_length=256)] = []


Event = Annotated[
    SaasAccess | DevicePosture | DlpAlert | ControlReview,
    Field(discriminator="stream"),
]

# One adapter, built once: validating a JSON line straight from bytes keeps
# parsing in pydantic-core, which is what makes replay fast.
EventAdapter: TypeAdapter[SaasAccess | DevicePosture | DlpAlert | ControlReview] = TypeAdapter(
    Event
)
