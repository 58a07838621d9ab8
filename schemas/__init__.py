"""The project's public shapes: canonical events, the policy, findings.

Arrows point one way: `streams -> detectors -> schemas`; this package imports
pydantic only.
"""

from schemas.durations import Duration, format_duration, parse_duration
from schemas.events import (
    ACTIONS,
    CHANNELS,
    POSTURE_CONTROLS,
    STREAMS,
    AuthInfo,
    ControlReview,
    DeviceAlias,
    DevicePosture,
    DlpAlert,
    Event,
    EventAdapter,
    ObjectRef,
    SaasAccess,
)
from schemas.findings import RULE_IDS, SEVERITIES, Finding, WaiverRef
from schemas.policy import (
    AlertingPolicy,
    AuthenticationPolicy,
    DlpPolicy,
    PermittedCategories,
    Policy,
    PostureCheck,
    PosturePolicy,
    RegistryApp,
    ReviewPolicy,
    SharingPolicy,
    Waiver,
)

__all__ = [
    "ACTIONS",
    "CHANNELS",
    "POSTURE_CONTROLS",
    "RULE_IDS",
    "SEVERITIES",
    "STREAMS",
    "AlertingPolicy",
    "AuthInfo",
    "AuthenticationPolicy",
    "ControlReview",
    "DeviceAlias",
    "DevicePosture",
    "DlpAlert",
    "DlpPolicy",
    "Duration",
    "Event",
    "EventAdapter",
    "Finding",
    "ObjectRef",
    "PermittedCategories",
    "Policy",
    "PostureCheck",
    "PosturePolicy",
    "RegistryApp",
    "ReviewPolicy",
    "SaasAccess",
    "SharingPolicy",
    "Waiver",
    "WaiverRef",
    "format_duration",
    "parse_duration",
]
