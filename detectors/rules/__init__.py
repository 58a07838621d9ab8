"""The rule catalogue SEP-001..SEP-011 (shared/design/rules.md), one module a rule."""

from __future__ import annotations

from detectors.rules import (
    sep001_unevaluated_saas,
    sep002_category_not_permitted,
    sep003_unique_identification,
    sep004_personal_credit,
    sep005_pseudonymous_undesignated,
    sep006_posture_failing,
    sep007_posture_unknown,
    sep008_review_overdue,
    sep009_review_not_reported,
    sep010_single_factor_signin,
    sep011_external_sharing,
)
from detectors.rules.base import Hit, Rule

CATALOGUE: dict[str, Rule] = {
    m.RULE.id: m.RULE
    for m in (
        sep001_unevaluated_saas,
        sep002_category_not_permitted,
        sep003_unique_identification,
        sep004_personal_credit,
        sep005_pseudonymous_undesignated,
        sep006_posture_failing,
        sep007_posture_unknown,
        sep008_review_overdue,
        sep009_review_not_reported,
        sep010_single_factor_signin,
        sep011_external_sharing,
    )
}

__all__ = ["CATALOGUE", "Hit", "Rule"]
