"""SEP-006: internal access from a device whose current posture fails a control."""

from __future__ import annotations

from detectors.calendar import to_datetime
from detectors.rules.base import REGULATION, Hit, Rule
from detectors.views import AccessView, PostureView

RULE = Rule(
    id="SEP-006",
    title="Internal SaaS access from a device that fails a required protection",
    severity="high",
    regulation=f"{REGULATION}: devices that access the SaaS need additional protective "
    "measures (managed, endpoint protection, encryption, screen lock, patched)",
    reads=("saas_access", "device_posture"),
)


def check(
    access: AccessView, posture: PostureView | None, max_age: float, failures: tuple[str, ...]
) -> Hit | None:
    """`failures` are the controls `posture` fails under the policy in force."""
    if posture is None or access.ts - posture.ts > max_age or not failures:
        return None
    return Hit(
        summary=f"User {access.user_id} used {access.saas_app} from device {access.device_id}, "
        f"which fails {', '.join(failures)}.",
        details={
            "failed_controls": list(failures),
            "posture_at": to_datetime(posture.ts).isoformat(),
            "os_patch_age_days": posture.patch_age,
        },
        evidence=(posture.event_id,),
    )
