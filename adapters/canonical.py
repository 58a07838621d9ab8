"""Canonical events as adapters build them (contract.md, "Input events").

The dicts carry their `stream` field and are validated downstream exactly
like events from any other producer.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from adapters.mapping import NO_DEVICE, VendorMapping
from adapters.records import CanonicalEvent, Unmappable, masked
from detectors.masking import mask_text

_SHA256 = frozenset("0123456789abcdefABCDEF")

# A posture control the source does not report: unknown, never assumed met
# nor failed (README, "How decisions are made": SEP-007 names the controls no
# source spoke for). Each posture adapter decides its controls in one small
# function that uses this.
NOT_REPORTED = None


def user_of(value: Any, path: str) -> str:
    """User ids as one form across sources: the UPN or e-mail, lower-cased,
    so an Okta login, an M365 upload and a Purview alert name one person."""
    if not isinstance(value, str) or not value.strip() or value.strip().lower() == "unknown":
        raise Unmappable(path, "no user")
    return value.strip().lower()[:256]


# -- how a sign-in was authenticated, and what a share reached (SEP-010, SEP-011)

Auth = dict[str, Any] | None
ShareTarget = tuple[str | None, str | None]
"""`share_target` and `shared_with_domain`, as one record says them."""
SHARE_NOT_SAID: ShareTarget = (None, None)
SHARE_PUBLIC: ShareTarget = ("public", None)
_DOMAIN = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$")


def auth_of(mfa: bool | None, method: str | None = None, session: str | None = None) -> Auth:
    """`auth` for a login: whether the source says it was multi-factor, the
    method it names, and the identity provider's session it belongs to
    (whose factors the engine joins where `mfa` is not said); none said:
    null (counted downstream, never guessed)."""
    if mfa is None and not method and not session:
        return None
    auth: dict[str, Any] = {"mfa": mfa, "method": method[:128] if method else None}
    if session:
        auth["session"] = session[:256]
    return auth


def domain_of(address: Any) -> str | None:
    """The domain of an e-mail address (or a bare domain), lower-cased;
    None where the text is neither."""
    if not isinstance(address, str):
        return None
    domain = address.strip().rsplit("@", 1)[-1].strip().lower().rstrip(".")
    return domain if len(domain) <= 253 and _DOMAIN.match(domain) else None


def shared_with(mapping: VendorMapping, address: Any) -> ShareTarget:
    """A share to a named person or domain: internal where the mapping names
    the domain as the institution's own (or a subdomain of one), external
    with the domain otherwise; no readable address: not said."""
    domain = domain_of(address)
    if domain is None:
        return SHARE_NOT_SAID
    return ("internal" if mapping.is_internal_domain(domain) else "external", domain)


def file_object(
    name: str | None = None, sha256: str | None = None, size: Any = None
) -> dict[str, Any] | None:
    """The object acted on; its name masked (file names and mail subjects
    can hold identifiers); a hash that is not SHA-256 is left out."""
    found: dict[str, Any] = {}
    if name:
        found["name"] = masked(str(name))[:1024]
    if isinstance(sha256, str) and len(sha256) == 64 and _SHA256.issuperset(sha256):
        found["sha256"] = sha256.lower()
    try:
        if size not in (None, "") and int(size) >= 0:
            found["size"] = int(size)
    except (TypeError, ValueError):
        pass
    return found or None


def saas_access(
    mapping: VendorMapping,
    *,
    source: str,
    event_id: str,
    timestamp: str,
    user_id: str,
    saas_app: str,
    action: str,
    ip: str | None,
    ip_path: str,
    device_id: str | None = None,
    object: dict[str, Any] | None = None,
    auth: Auth = None,
    share: ShareTarget = SHARE_NOT_SAID,
) -> CanonicalEvent:
    """An access; `ip_path` names the vendor's address field for a dead letter.
    `auth` is a login's (`auth_of`), `share` a share's (`shared_with`)."""
    zone, network_entity, address = mapping.zone_of(ip, ip_path)
    return {
        "stream": "saas_access",
        "event_id": event_id,
        "timestamp": timestamp,
        "entity": mapping.entity_of(user_id, network_entity),
        "user_id": user_id,
        "device_id": device_id,
        "saas_app": saas_app,
        "action": action,
        "network_zone": zone,
        "src_ip": address,
        "object": object,
        "auth": auth,
        "share_target": share[0],
        "shared_with_domain": share[1],
        "source": source,
    }


def device_posture(
    mapping: VendorMapping,
    *,
    source: str,
    event_id: str,
    timestamp: str,
    device_id: str,
    user_id: str | None,
    managed: bool | None,
    edr_running: bool | None,
    disk_encrypted: bool | None,
    screen_lock: bool | None,
    os_patch_age_days: int | None,
    jailbroken: bool | None = False,
    aliases: Sequence[tuple[str, Any]] = (),
) -> CanonicalEvent:
    """`aliases`: (kind, vendor value) for every name the record gives the
    device; empty values are left out, the rest lower-cased like `device_of`."""
    return {
        "stream": "device_posture",
        "event_id": event_id,
        "timestamp": timestamp,
        "entity": mapping.entity_of(user_id),
        "device_id": device_id,
        "user_id": user_id,
        "managed": managed,
        "edr_running": edr_running,
        "disk_encrypted": disk_encrypted,
        "screen_lock": screen_lock,
        "os_patch_age_days": os_patch_age_days,
        "jailbroken": jailbroken,
        "source": source,
        "device_aliases": device_aliases(mapping, device_id, aliases),
    }


def device_aliases(
    mapping: VendorMapping, device_id: str, aliases: Sequence[tuple[str, Any]]
) -> list[dict[str, str]] | None:
    """The aliases a posture carries (schemas.DeviceAlias), with a `mapping`
    alias when a hand-written entry named the device; None when the record
    names the device only one way. Each adapter names a kind once, so no
    alias repeats: the list is built as it goes (this runs on every posture)."""
    if not aliases:
        return None
    found = [{"kind": "mapping", "value": device_id}] if mapping.is_mapped(device_id) else []
    for kind, value in aliases:
        if isinstance(value, str) and (value := value.strip()) and value != NO_DEVICE:
            found.append({"kind": kind, "value": value.lower()[:256]})
    return found[:16] or None


def dlp_alert(
    mapping: VendorMapping,
    *,
    source: str,
    event_id: str,
    timestamp: str,
    user_id: str,
    channel: str,
    saas_app: str | None,
    data_types: list[str],
    match_count: int,
    device_id: str | None = None,
    object: dict[str, Any] | None = None,
    ip: str | None = None,
    ip_path: str = "ip",
    matched: list[str] | None = None,
    match_ref: dict[str, Any] | None = None,
    retraction: dict[str, Any] | None = None,
) -> CanonicalEvent:
    """A DLP alert. Matched text the vendor shows is masked here already, so
    no raw identifier travels on from an adapter (not even to `sepwatch adapt`'s file).
    `match_ref` (`match_ref_of`) names the match for a later undo; with
    `retraction` the event is that undo (schemas.DlpAlert)."""
    network_entity = mapping.zone_of(ip, ip_path)[1] if ip else None
    alert = {
        "stream": "dlp_alert",
        "event_id": event_id,
        "timestamp": timestamp,
        "entity": mapping.entity_of(user_id, network_entity),
        "user_id": user_id,
        "device_id": device_id,
        "channel": channel,
        "saas_app": saas_app,
        "data_types": data_types,
        "match_count": max(0, match_count),
        "object": object,
        "snippet": mask_text(" | ".join(matched))[:4096] if matched else None,
        "source": source,
    }
    # Only where said: the alerts of sources that name no match stay as they were.
    if match_ref is not None:
        alert["match_ref"] = match_ref
    if retraction is not None:
        alert["retraction"] = retraction
    return alert


def match_ref_of(workload: Any, object_id: Any, rule_ids: Sequence[Any]) -> dict[str, Any] | None:
    """`match_ref` of a DLP match or undo: None unless the record names the
    workload, the object and at least one rule (an undo that names less
    cannot be matched safely; the adapter refuses it)."""
    rules = list(dict.fromkeys(str(r).strip().lower() for r in rule_ids if r and str(r).strip()))
    if not isinstance(workload, str) or not workload.strip() or not rules:
        return None
    if not isinstance(object_id, str) or not object_id.strip():
        return None
    return {
        "workload": workload.strip()[:128],
        # Masked as file names are: a path can hold an identifier. The undo's
        # is masked the same way, so the two still compare equal.
        "object_id": masked(object_id.strip())[:256],
        "rule_ids": rules[:64],
    }


def posture_seen_at(
    access: CanonicalEvent,
    *,
    managed: bool | None = None,
    edr_running: bool | None = None,
    disk_encrypted: bool | None = None,
    screen_lock: bool | None = None,
    jailbroken: bool | None = None,
) -> list[CanonicalEvent]:
    """The device posture an access record carries (an identity provider's
    or proxy's device assurance), as a `device_posture` of its own: the same
    device, time and unit as the access, an id derived from the access's, and
    only the controls the record speaks for; the others null (unknown, never
    assumed to pass). None of them given, or no device named: nothing."""
    controls = {
        "managed": managed,
        "edr_running": edr_running,
        "disk_encrypted": disk_encrypted,
        "screen_lock": screen_lock,
        "jailbroken": jailbroken,
    }
    if access.get("device_id") is None or all(v is None for v in controls.values()):
        return []
    return [
        {
            "stream": "device_posture",
            "event_id": f"{access['event_id'][:240]}:posture",
            "timestamp": access["timestamp"],
            "entity": access["entity"],
            "device_id": access["device_id"],
            "user_id": access.get("user_id"),
            **controls,
            "os_patch_age_days": None,
            "source": access["source"],
        }
    ]
