"""Okta System Log events -> `saas_access`.

Vendor schema: Okta System Log API, LogEvent object
(developer.okta.com/docs/reference/api/system-log/#logevent-object):
`uuid`, `published` (ISO 8601, UTC, `Z`), `eventType`, `actor.alternateId`,
`client.ipAddress`, `outcome.result`, `target[]` (the app is the target of
type `AppInstance`), `device` (Okta device assurance: `id`, `name`,
`os_platform`) where Okta Verify knows the device.

A single sign-on into an app (`user.authentication.sso`) is an access: a
login to that app. Everything else (Okta's own sessions, group and admin
changes) carries no SaaS access and is skipped; so is a failed or denied
sign-on, which used no app.

`auth` (SEP-010): an SSO record does not say whether the Okta session
behind it was multi-factor. Its `authenticationContext` names one
credential (`credentialType`: PASSWORD, OTP, ASSERTION, ...), kept as
`auth.method`, and `authenticationStep` is documented as always 0, so
`auth.mfa` stays null. It names the session, `externalSessionId` ("all of
the user's future-generated events in this sign-in session are going to
share the same externalSessionId", LogAuthenticationContext), kept as
`auth.session`. A factor checked in that session
(`user.authentication.auth_via_mfa`, outcome SUCCESS) is a `verify` of the
same user and session; the engine joins the two (detectors/engine.py), so
the SSO is multi-factor if a second factor was verified in its session
before it, and stays unsaid (counted, never guessed) if not. Okta Identity
Engine logs the password's check with the same event type: a factor
named `Password` is no second factor and is skipped, as is a check naming
no factor or no session. Pages: the API returns a JSON array; Okta event
hooks deliver `{"data": {"events": [...]}}`.
"""

from __future__ import annotations

from typing import Any

from adapters.canonical import auth_of, posture_seen_at, saas_access, user_of
from adapters.mapping import VendorMapping
from adapters.records import Adapted, CanonicalEvent, Skip, field, iso_time, text_of

SOURCE = "okta"
ENVELOPES = ("data.events",)
SHAPES = (("eventType", "uuid"),)  # An Okta LogEvent (API page or event hook).


def adapt(record: dict[str, Any], mapping: VendorMapping) -> Adapted:
    event_type = record.get("eventType")
    if event_type == FACTOR_CHECK and field(record, "outcome.result") == "SUCCESS":
        return factor_verified(record, mapping)
    if event_type != "user.authentication.sso":
        return posture_only(record, mapping) or Skip(f"eventType {event_type}")
    if field(record, "outcome.result") not in ("SUCCESS", "ALLOW"):
        return posture_only(record, mapping) or Skip(
            f"{event_type} {field(record, 'outcome.result')}"
        )
    app = next(
        (
            t
            for t in record.get("target") or ()
            if isinstance(t, dict) and t.get("type") == "AppInstance"
        ),
        None,
    )
    app_name = (app or {}).get("displayName") or (app or {}).get("alternateId")
    access = saas_access(
        mapping,
        source=SOURCE,
        event_id=text_of(record, "uuid"),
        timestamp=iso_time(record.get("published"), "published"),
        user_id=user_of(field(record, "actor.alternateId"), "actor.alternateId"),
        saas_app=mapping.app_or_passthrough(app_name, path="target.displayName"),
        action="login",
        ip=field(record, "client.ipAddress"),
        ip_path="client.ipAddress",
        device_id=mapping.device_of(field(record, "device.id")),
        auth=auth_of(
            None,
            _text(field(record, "authenticationContext.credentialType")),
            session_of(record),
        ),
    )
    return [access, *posture_of(record, access)]


FACTOR_CHECK = "user.authentication.auth_via_mfa"
# What Okta names the password by: the Identity Engine's authenticator
# `displayName` / `methodTypeUsed`, Classic's `debugData.factor`.
PASSWORD = {"password"}


def factor_verified(record: dict[str, Any], mapping: VendorMapping) -> Adapted:
    """A second factor verified in a sign-in session: a `verify` the engine
    joins to the session's SSOs. The factor is the `AuthenticatorEnrollment`
    target's name and method (Identity Engine) or `debugData.factor`
    (Classic)."""
    factor = _factor_of(record)
    session = session_of(record)
    if factor is None or factor.split(":")[0].strip().lower() in PASSWORD or session is None:
        why = "no session" if session is None else (factor or "no factor named")
        return posture_only(record, mapping) or Skip(f"{FACTOR_CHECK} {why}")
    verify = saas_access(
        mapping,
        source=SOURCE,
        event_id=text_of(record, "uuid"),
        timestamp=iso_time(record.get("published"), "published"),
        user_id=user_of(field(record, "actor.alternateId"), "actor.alternateId"),
        saas_app=SOURCE,  # the identity provider that verified it
        action="verify",
        ip=field(record, "client.ipAddress"),
        ip_path="client.ipAddress",
        device_id=mapping.device_of(field(record, "device.id")),
        auth=auth_of(True, factor, session),
    )
    return [verify, *posture_of(record, verify)]


def session_of(record: dict[str, Any]) -> str | None:
    """The Okta sign-in session the event belongs to; Okta writes `unknown`
    where there is none (an API client's SSO)."""
    session = _text(field(record, "authenticationContext.externalSessionId"))
    return None if session is None or session.lower() == "unknown" else session


def _factor_of(record: dict[str, Any]) -> str | None:
    for t in record.get("target") or ():
        if isinstance(t, dict) and t.get("type") == "AuthenticatorEnrollment":
            name = _text(t.get("displayName"))
            detail = t.get("detailEntry")
            method = _text(detail.get("methodTypeUsed")) if isinstance(detail, dict) else None
            if name and method and method.lower() != name.lower():
                return f"{name}: {method}"
            if name or method:
                return name or method
    return _text(field(record, "debugContext.debugData.factor"))


# Okta device assurance values (System Log LogEvent `device`; the Devices
# API's `diskEncryptionType` and `screenLockType`). SYSTEM_VOLUME counts as
# encrypted, as Intune's `isEncrypted` does for the OS drive; a value not
# listed here is unknown.
DISK_ENCRYPTED = {
    "NONE": False,
    "FULL": True,
    "USER": True,
    "ALL_INTERNAL_VOLUMES": True,
    "SYSTEM_VOLUME": True,
}
SCREEN_LOCK = {"NONE": False, "PASSCODE": True, "BIOMETRIC": True}


def posture_of(record: dict[str, Any], seen: CanonicalEvent) -> list[CanonicalEvent]:
    """The device assurance Okta Verify reported with the event: `managed`,
    `disk_encryption_type`, `screen_lock_type` and `jailbreak` speak for
    managed, disk_encrypted, screen_lock and jailbroken. `registered` (known
    to Okta Verify), `secure_hardware_present` (a TPM) and `device_integrator`
    speak for none of sepwatch's controls, and Okta says nothing of EDR or
    patch level here: those stay unknown."""
    device = record.get("device")
    if not isinstance(device, dict):
        return []
    return posture_seen_at(
        seen,
        managed=_flag(device.get("managed")),
        disk_encrypted=_named(DISK_ENCRYPTED, device.get("disk_encryption_type")),
        screen_lock=_named(SCREEN_LOCK, device.get("screen_lock_type")),
        jailbroken=_flag(device.get("jailbreak")),
    )


def posture_only(record: dict[str, Any], mapping: VendorMapping) -> list[CanonicalEvent]:
    """An event that is no SaaS access (an Okta sign-in, a factor enrolment,
    a denied sign-on) still reports the device's state: that much is kept."""
    device_id = mapping.device_of(field(record, "device.id"))
    if device_id is None:
        return []
    actor = field(record, "actor.alternateId")
    user = actor.strip().lower()[:256] if isinstance(actor, str) and "@" in actor else None
    seen = {
        "event_id": text_of(record, "uuid"),
        "timestamp": iso_time(record.get("published"), "published"),
        "entity": mapping.entity_of(user),
        "device_id": device_id,
        "user_id": user,
        "source": SOURCE,
    }
    return posture_of(record, seen)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _flag(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _named(values: dict[str, bool], value: Any) -> bool | None:
    """A documented vendor value's meaning; absent (null) or unknown: None,
    never the meaning of the word "NONE"."""
    return values.get(value.upper()) if isinstance(value, str) else None
