"""The policy compiled for fast look-ups *as of an event's date*.

Every rule is judged with the policy as it stood at the triggering event's
time (rules.md, "policy in force"); this module is where that happens.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import defaultdict
from dataclasses import dataclass
from datetime import date

from detectors.calendar import Days
from detectors.posture import ALL_CONTROLS, CONTROL_BITS, PATCH_AGE
from schemas import AuthenticationPolicy, Policy, RegistryApp, Waiver


@dataclass(frozen=True)
class DlpGroups:
    unique_identification: frozenset[str]
    personal_credit: frozenset[str]
    pseudonymous: frozenset[str]

    @property
    def all(self) -> frozenset[str]:
        return self.unique_identification | self.personal_credit | self.pseudonymous


class PolicyInForce:
    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        # Every day the rules count (validity, categories, waivers, due days) is one of these.
        self.days = Days(policy.timezone)
        self.lateness = policy.allowed_lateness.total_seconds()
        self.correlation_window = policy.dlp.correlation_window.total_seconds()
        self.posture_max_age = policy.posture.max_age.total_seconds()
        self.group_window = policy.alerting.group_window.total_seconds()
        auth = policy.authentication or AuthenticationPolicy()
        self.session_lifetime = auth.session_lifetime.total_seconds()
        self.dlp = DlpGroups(
            frozenset(policy.dlp.unique_identification),
            frozenset(policy.dlp.personal_credit),
            frozenset(policy.dlp.pseudonymous),
        )
        self.dlp_types = self.dlp.all

        apps: dict[str, list[tuple[int, RegistryApp]]] = defaultdict(list)
        for app in policy.registry:
            since = app.effective_from.toordinal() if app.effective_from else 0
            apps[app.app_id].append((since, app))
        self._apps = {k: sorted(v, key=lambda e: e[0]) for k, v in apps.items()}
        self._app_days = {k: [since for since, _ in v] for k, v in self._apps.items()}
        self._app_cache: dict[tuple[str, int], RegistryApp | None] = {}

        cats = sorted(policy.permitted_categories, key=lambda c: c.effective_from)
        self._cat_days = [c.effective_from.toordinal() for c in cats]
        self._cats = [frozenset(c.categories) for c in cats]

        require = policy.posture.require
        self._required = sum(
            bit for name, bit in CONTROL_BITS if bit != PATCH_AGE and getattr(require, name)
        )
        self.max_patch_age = require.os_patch_age_days_max
        self._failures: dict[tuple[int, int, bool], tuple[str, ...]] = {}

        self._waivers: dict[str, list[Waiver]] = defaultdict(list)
        for waiver in policy.waivers:
            self._waivers[waiver.rule_id].append(waiver)

    def app(self, app_id: str, day: int) -> RegistryApp | None:
        """The registry entry in force on `day` (a date ordinal), if any."""
        key = (app_id, day)
        if key in self._app_cache:
            return self._app_cache[key]
        if len(self._app_cache) > 65536:  # hostile app ids must not grow it without bound
            self._app_cache.clear()
        found = self._app_cache[key] = self._app_at(app_id, day)
        return found

    def _app_at(self, app_id: str, day: int) -> RegistryApp | None:
        entries = self._apps.get(app_id)
        if entries is None:
            return None
        i = bisect_right(self._app_days[app_id], day)
        return entries[i - 1][1] if i else None

    def permitted_categories(self, day: int) -> frozenset[str]:
        i = bisect_right(self._cat_days, day)
        return self._cats[i - 1] if i else frozenset()

    def posture_failures(
        self, flags: int, patch_age: int, known: int = ALL_CONTROLS
    ) -> tuple[str, ...]:
        """The required controls a posture fails, in the policy's words: of
        the `known` ones only (a control no posture speaks for fails nothing;
        it is unknown, which SEP-007 judges)."""
        key = (flags & known, known, bool(known & PATCH_AGE) and patch_age > self.max_patch_age)
        failed = self._failures.get(key)
        if failed is None:
            failed = self._failures[key] = tuple(
                name
                for name, bit in CONTROL_BITS
                if known & bit
                and (key[2] if bit == PATCH_AGE else (flags & bit) != (self._required & bit))
            )
        return failed

    def waiver(
        self,
        rule_id: str,
        day: int,
        entity: str | None,
        user_id: str | None,
        device_id: str | None,
        saas_app: str | None,
    ) -> Waiver | None:
        """The first waiver in force on `day` whose every named field matches."""
        for w in self._waivers.get(rule_id, ()):
            if not w.valid_from.toordinal() <= day <= w.valid_until.toordinal():
                continue
            if (
                (w.entity is None or w.entity == entity)
                and (w.user_id is None or w.user_id == user_id)
                and (w.device_id is None or w.device_id == device_id)
                and (w.saas_app is None or w.saas_app == saas_app)
            ):
                return w
        return None

    def review_baseline(self, entity: str) -> date:
        return self.policy.review.entity_baselines.get(entity, self.policy.review.baseline)


def evaluation_in_force(app: RegistryApp | None, day: int) -> bool:
    """Evaluated, and `day` inside the evaluation's validity, both ends inclusive."""
    if app is None or not app.evaluated:
        return False
    start, end = app.evaluation_valid_from, app.evaluation_valid_until
    return (start is None or start.toordinal() <= day) and (end is None or day <= end.toordinal())
