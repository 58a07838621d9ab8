"""Microsoft Entra ID sign-in logs -> `saas_access` (login).

Vendor schema: Microsoft Graph `signIn` resource
(learn.microsoft.com/graph/api/resources/signin): `id`, `createdDateTime`
(ISO 8601, UTC, `Z`), `userPrincipalName`, `appDisplayName`,
`resourceDisplayName`, `ipAddress`, `status.errorCode` (0: success),
`deviceDetail.deviceId` (the Entra device id, empty for an unregistered
device). Read from Graph (`GET /auditLogs/signIns`, pages `{"value": [...],
"@odata.nextLink": ...}`) or from diagnostic settings to Event Hubs
(`{"records": [{"time", "category": "SignInLogs", "properties": {signIn}}]}`).

`auth.mfa` (SEP-010) is `authenticationRequirement`, the strength Entra
required and the sign-in satisfied: `multiFactorAuthentication` true,
`singleFactorAuthentication` false (compared without case: Microsoft's own
examples write both `multiFactor...` and `Multifactor...`). Where it is
absent, `mfaDetail` naming a method says MFA was done (true); otherwise
null. `auth.method`: `mfaDetail`'s method, else the succeeded
`authenticationDetails` methods in order.

A failed sign-in (`errorCode` other than 0) used no app and is skipped. The
device id is the one Intune reports as `azureADDeviceId`, so sign-ins and
Intune postures name the same device.
"""

from __future__ import annotations

from typing import Any

from adapters.canonical import Auth, auth_of, posture_seen_at, saas_access, user_of
from adapters.mapping import VendorMapping
from adapters.records import Adapted, CanonicalEvent, Skip, field, iso_time, text_of

SOURCE = "entra-signin"
ENVELOPES = ("value", "records")
SHAPES = (
    ("id", "createdDateTime"),
    ("category", "properties"),
)  # A Graph signIn, or an Event Hubs diagnostic record.


def adapt(record: dict[str, Any], mapping: VendorMapping) -> Adapted:
    if "properties" in record and "category" in record:  # Event Hubs diagnostic record
        if record.get("category") not in ("SignInLogs", "NonInteractiveUserSignInLogs"):
            return Skip(f"category {record.get('category')}")
        record = record["properties"]
    error = field(record, "status.errorCode")
    if error not in (0, "0", None):
        return Skip("failed sign-in")
    app = record.get("appDisplayName") or record.get("resourceDisplayName")
    access = saas_access(
        mapping,
        source=SOURCE,
        event_id=text_of(record, "id"),
        timestamp=iso_time(record.get("createdDateTime"), "createdDateTime"),
        user_id=user_of(record.get("userPrincipalName"), "userPrincipalName"),
        saas_app=mapping.app_or_passthrough(app, path="appDisplayName"),
        action="login",
        ip=record.get("ipAddress"),
        ip_path="ipAddress",
        device_id=mapping.device_of(field(record, "deviceDetail.deviceId")),
        auth=auth(record),
    )
    return [access, *posture_of(record, access)]


REQUIREMENT = {"multifactorauthentication": True, "singlefactorauthentication": False}


def auth(record: dict[str, Any]) -> Auth:
    """How the sign-in was authenticated, as Entra says it (module docstring)."""
    detail = record.get("mfaDetail")
    detail = detail if isinstance(detail, dict) else {}
    # v1.0 writes `authMethod`; older beta responses `mfaAuthMethod`.
    method = detail.get("authMethod") or detail.get("mfaAuthMethod")
    required = record.get("authenticationRequirement")
    mfa = REQUIREMENT.get(required.lower()) if isinstance(required, str) else None
    if mfa is None and isinstance(method, str) and method:
        mfa = True
    return auth_of(mfa, method if isinstance(method, str) and method else _steps(record))


def _steps(record: dict[str, Any]) -> str | None:
    """The methods of the sign-in's succeeded steps, in order, joined."""
    steps = record.get("authenticationDetails")
    used = [
        str(s["authenticationMethod"])
        for s in (steps if isinstance(steps, list) else ())
        if isinstance(s, dict) and s.get("succeeded") is True and s.get("authenticationMethod")
    ]
    return ", ".join(used) or None


def posture_of(record: dict[str, Any], access: CanonicalEvent) -> list[CanonicalEvent]:
    """What the sign-in's `deviceDetail` speaks for: `isManaged` is managed.
    `isCompliant` is Intune's verdict on the bank's own compliance policy,
    not one control: true says the device is enrolled (only an enrolled
    device is judged compliant), so managed where `isManaged` is absent;
    false does not say which setting failed, so it speaks for nothing (the
    Intune feed, keyed by the same device id, says which). `trustType`
    (joined or registered) is not management. Encryption, EDR, screen lock,
    jailbreak and patch level stay unknown."""
    detail = record.get("deviceDetail")
    if not isinstance(detail, dict):
        return []
    managed = detail.get("isManaged")
    if not isinstance(managed, bool):
        managed = True if detail.get("isCompliant") is True else None
    return posture_seen_at(access, managed=managed)
