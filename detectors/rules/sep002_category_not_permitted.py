"""SEP-002: an evaluated app whose category is not permitted for internal use."""

from __future__ import annotations

from detectors.policy_in_force import evaluation_in_force
from detectors.rules.base import REGULATION, Hit, Rule
from detectors.views import AccessView
from schemas import RegistryApp

RULE = Rule(
    id="SEP-002",
    title="Evaluated SaaS outside the permitted office and management-support categories",
    severity="medium",
    regulation=f"{REGULATION}: the exception covers office and management-support SaaS "
    "(collaboration, schedules, documents, meetings, messaging, project management)",
    reads=("saas_access",),
)


def check(
    access: AccessView, app: RegistryApp | None, day: int, permitted: frozenset[str]
) -> Hit | None:
    # An app without a valid evaluation is SEP-001's, never both.
    if app is None or not evaluation_in_force(app, day) or app.category in permitted:
        return None
    return Hit(
        summary=f"User {access.user_id} used {access.saas_app} ({app.category}) from the "
        "internal network; that category is not permitted on this date.",
        details={"category": app.category, "permitted_categories": sorted(permitted)},
    )
