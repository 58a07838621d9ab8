"""SEP-010: a sign-in from the internal network to a registered SaaS without a second factor."""

from __future__ import annotations

from detectors.rules.base import REGULATION, Hit, Rule
from schemas import AuthenticationPolicy, SaasAccess

RULE = Rule(
    id="SEP-010",
    title="Single-factor sign-in to SaaS from the internal network",
    severity="high",
    regulation=f"{REGULATION}: stronger authentication for SaaS used from the internal "
    "network (the security controls tightened alongside the exception)",
    reads=("saas_access",),
)


def check(access: SaasAccess, registered: bool, policy: AuthenticationPolicy | None) -> Hit | None:
    """`registered`: the app is in the registry on the event's date. A sign-in
    whose factor the source does not say (`auth.mfa` null) is not judged:
    the engine counts it instead of guessing, as multi-factor where a factor
    verified in its session speaks for it (`factor_speaks_for`), else as
    not saying."""
    if (
        policy is None
        or not policy.require_mfa
        or not registered
        or access.action != "login"
        or access.network_zone != "internal"
        or access.saas_app in policy.exempt_apps
        or access.auth is None
        or access.auth.mfa is not False
    ):
        return None
    method = access.auth.method
    how = f" ({method})" if method else ""
    return Hit(
        summary=f"User {access.user_id} signed in to {access.saas_app} from the internal "
        f"network with a single factor{how}.",
        details={"auth_method": method} if method else {},
    )


def factor_speaks_for(verified_at: float, signed_in_at: float, lifetime: float) -> bool:
    """Whether a second factor verified in a sign-in's session (a `verify` of
    the same user and `auth.session`) makes the sign-in multi-factor: it was
    verified at or before the sign-in, and the session it proved can still be
    alive (`authentication.session_lifetime`). A factor verified later speaks
    for later sign-ins only: the sign-in was granted without it."""
    return verified_at <= signed_in_at <= verified_at + lifetime
