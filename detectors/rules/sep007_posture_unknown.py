"""SEP-007: internal access from a device with no recent posture."""

from __future__ import annotations

from detectors.calendar import to_datetime
from detectors.rules.base import REGULATION, Hit, Rule
from detectors.views import AccessView, PostureView

RULE = Rule(
    id="SEP-007",
    title="Internal SaaS access from a device with no recent posture",
    severity="medium",
    regulation=f"{REGULATION}: devices that access the SaaS need additional protective "
    "measures, which must be shown",
    reads=("saas_access", "device_posture"),
)


def check(access: AccessView, posture: PostureView | None, max_age: float) -> Hit | None:
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
    age = access.ts - posture.ts
    if age <= max_age:
        return None
    return Hit(
        summary=f"User {access.user_id} used {access.saas_app} from device {access.device_id}, "
        f"whose last posture is {age / 3600:.1f} h old.",
        details={"reason": "stale_posture", "posture_at": to_datetime(posture.ts).isoformat()},
        evidence=(posture.event_id,),
    )
