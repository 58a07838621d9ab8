"""SEP-005: pseudonymous data sent to an app not designated for it."""

from __future__ import annotations

from detectors.rules import dlp_common
from detectors.rules.base import REGULATION, Hit, Rule
from detectors.views import DlpView
from schemas import RegistryApp

RULE = Rule(
    id="SEP-005",
    title="Pseudonymous data sent to SaaS not designated for it",
    severity="high",
    regulation=f"{REGULATION}: pseudonymous information only through an app designated "
    "under the innovative-financial-service procedure",
    reads=("dlp_alert", "saas_access"),
)


def check(
    alert: DlpView,
    dest: dlp_common.Destination,
    app: RegistryApp | None,
    pseudonymous: frozenset[str],
) -> Hit | None:
    matched = pseudonymous.intersection(alert.data_types)
    if not matched or (app is not None and app.pseudonymous_designated):
        return None
    return Hit(
        summary=f"User {alert.user_id} sent pseudonymous data to {dest.app_id}, "
        "which is not designated for it.",
        details=dlp_common.details(alert, dest, matched),
        evidence=dlp_common.evidence(dest),
    )
