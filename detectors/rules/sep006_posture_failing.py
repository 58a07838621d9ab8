"""SEP-006: internal access from a device whose current posture fails a control."""

from __future__ import annotations

from detectors.calendar import to_datetime
from detectors.posture import PATCH_AGE, PostureAsOf
from detectors.rules.base import REGULATION, Hit, Rule
from detectors.views import AccessView

RULE = Rule(
    id="SEP-006",
    title="Internal SaaS access from a device that fails a required protection",
    severity="high",
    regulation=f"{REGULATION}: devices that access the SaaS need additional protective "
    "measures (managed, endpoint protection, encryption, screen lock, patched)",
    reads=("saas_access", "device_posture"),
)


def check(access: AccessView, posture: PostureAsOf | None, failures: tuple[str, ...]) -> Hit | None:
    """`failures` are the known controls `posture` fails under the policy in
    force; one failing control is enough, whatever else is unknown."""
    if posture is None or not failures:
        return None
    return Hit(
        summary=f"User {access.user_id} used {access.saas_app} from device {access.device_id}, "
        f"which fails {', '.join(failures)}.",
        details={
            "failed_controls": list(failures),
            "unknown_controls": list(posture.unknown),
            "posture_at": to_datetime(posture.newest.ts).isoformat(),
            "os_patch_age_days": posture.patch_age if posture.known & PATCH_AGE else None,
        },
        evidence=posture.asserting(failures),
    )
