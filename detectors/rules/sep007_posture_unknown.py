"""SEP-007: internal access from a device whose required controls are not
all shown by a recent posture."""

from __future__ import annotations

from detectors.calendar import to_datetime
from detectors.posture import PostureAsOf
from detectors.rules.base import REGULATION, Hit, Rule
from detectors.views import AccessView

RULE = Rule(
    id="SEP-007",
    title="Internal SaaS access from a device with no recent posture",
    severity="medium",
    regulation=f"{REGULATION}: devices that access the SaaS need additional protective "
    "measures, which must be shown",
    reads=("saas_access", "device_posture"),
)


def check(access: AccessView, posture: PostureAsOf | None) -> Hit | None:
    """`posture` is the device's merged posture at the access (None: none at all)."""
    if access.device_id is None:
        return Hit(
            summary=f"User {access.user_id} used {access.saas_app} from the internal network "
            "from a device the source did not name.",
            details={"reason": "no_device_id"},
        )
    if posture is None:
        return Hit(
            summary=f"User {access.user_id} used {access.saas_app} from device "
            f"{access.device_id}, which has reported no posture.",
            details={"reason": "no_posture"},
        )
    unknown = posture.unknown
    if not unknown:
        return None
    newest = posture.newest
    if not posture.known:
        age = access.ts - newest.ts
        return Hit(
            summary=f"User {access.user_id} used {access.saas_app} from device "
            f"{access.device_id}, whose last posture is {age / 3600:.1f} h old.",
            details={
                "reason": "stale_posture",
                "posture_at": to_datetime(newest.ts).isoformat(),
                "unknown_controls": list(unknown),
            },
            evidence=(newest.event_id,),
        )
    return Hit(
        summary=f"User {access.user_id} used {access.saas_app} from device {access.device_id}, "
        f"whose recent postures do not show {', '.join(unknown)}.",
        details={
            "reason": "unknown_controls",
            "unknown_controls": list(unknown),
            "posture_at": to_datetime(newest.ts).isoformat(),
        },
        evidence=tuple(p.event_id for p, _ in posture.used),
    )
