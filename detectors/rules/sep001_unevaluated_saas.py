"""SEP-001: an internal access to a SaaS app without a valid evaluation."""

from __future__ import annotations

from datetime import date

from detectors.policy_in_force import evaluation_in_force
from detectors.rules.base import REGULATION, Hit, Rule
from detectors.views import AccessView
from schemas import RegistryApp

RULE = Rule(
    id="SEP-001",
    title="SaaS used from the internal network without a valid evaluation",
    severity="high",
    regulation=f"{REGULATION}: only SaaS evaluated by the incident-response agency (FSI) "
    "may be used from the internal business network",
    reads=("saas_access",),
)


def check(access: AccessView, app: RegistryApp | None, day: int) -> Hit | None:
    if app is None:
        reason = "is not in the registry of evaluated SaaS"
    elif not app.evaluated:
        reason = "has not been evaluated by the incident-response agency"
    elif not evaluation_in_force(app, day):
        reason = (
            f"has an evaluation valid {app.evaluation_valid_from} to "
            f"{app.evaluation_valid_until}, not on {date.fromordinal(day)}"
        )
    else:
        return None
    details = {"reason": reason}
    if app is not None and app.evaluation_valid_until is not None:
        details["evaluation_valid_until"] = app.evaluation_valid_until.isoformat()
    return Hit(
        summary=f"User {access.user_id} used {access.saas_app} from the internal network; "
        f"the app {reason}.",
        details=details,
    )
