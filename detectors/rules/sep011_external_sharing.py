"""SEP-011: a file or item shared outside the institution (publicly, or to a non-partner)."""

from __future__ import annotations

from detectors.masking import mask_text
from detectors.rules.base import REGULATION, Hit, Rule
from schemas import SaasAccess, SharingPolicy

RULE = Rule(
    id="SEP-011",
    title="SaaS content shared outside the institution",
    severity="high",
    regulation=f"{REGULATION}: unauthorised sharing outside the institution is blocked "
    "(the security controls tightened alongside the exception)",
    reads=("saas_access",),
)


def check(access: SaasAccess, policy: SharingPolicy | None) -> Hit | None:
    """Internal and external accesses alike: a link made from home exposes the
    same file. A domain the policy names as the institution's own is an
    internal share whatever the source called it."""
    if policy is None or access.action != "share" or access.share_target is None:
        return None
    domain = (access.shared_with_domain or "").strip().lower().rstrip(".") or None
    if access.share_target == "internal" or (
        access.share_target == "external" and _allowed(domain, policy)
    ):
        return None
    if access.share_target == "public":
        reason = "made it public (anyone with the link, or the web)"
    elif domain is None:
        reason = "shared it outside the institution, with a domain the source does not name"
    elif policy.external == "partners_only":
        reason = f"shared it with {domain}, which is not an allowed partner"
    else:
        reason = f"shared it with {domain}, outside the institution"
    # A file name can carry an identifier; it is masked like a snippet.
    item = mask_text(access.object.name) if access.object and access.object.name else "an item"
    return Hit(
        summary=f"User {access.user_id} {reason}: {item} in {access.saas_app}.",
        details={"share_target": access.share_target, "shared_with_domain": domain},
    )


def _allowed(domain: str | None, policy: SharingPolicy) -> bool:
    """The institution's own domains, and partners' where the policy allows them."""
    return domain is not None and (
        domain in policy.internal_domains
        or (policy.external == "partners_only" and domain in policy.partner_domains)
    )
