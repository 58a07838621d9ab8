"""SEP-004: personal credit information sent to a SaaS app."""

from __future__ import annotations

from detectors.rules import dlp_common
from detectors.rules.base import REGULATION, Hit, Rule
from detectors.views import DlpView

RULE = Rule(
    id="SEP-004",
    title="Personal credit information sent to SaaS",
    severity="critical",
    regulation=f"{REGULATION}: the exception does not apply where personal credit "
    "information is handled",
    reads=("dlp_alert", "saas_access"),
)


def check(
    alert: DlpView, dest: dlp_common.Destination, personal_credit: frozenset[str]
) -> Hit | None:
    matched = personal_credit.intersection(alert.data_types)
    if not matched:
        return None
    return Hit(
        summary=f"User {alert.user_id} sent personal credit information "
        f"({alert.match_count} matches) to {dest.app_id}.",
        details=dlp_common.details(alert, dest, matched),
        evidence=dlp_common.evidence(dest),
    )
