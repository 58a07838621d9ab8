"""Who is signed in, and what Elasticsearch lets them do.

Three ways in, chosen by the settings and the node:
- sign-in with one's own Elasticsearch user and password: checked with
  `_security/_authenticate`; every request afterwards goes to Elasticsearch as
  that person, so their roles decide what they read and change;
- a trusted header set by an authenticating reverse proxy: the console asks
  Elasticsearch as that person (`es-security-runas-user`; the console's own
  user needs the `run_as` privilege);
- a node with security off: nobody can be authenticated; the console says so
  on every page and acts as the local operator.

Sessions live in the process (a random token in an HttpOnly cookie, nothing
else): a restart signs everyone out. The password is kept in memory only, for
the client that acts as the person, and never written to a cookie or a log."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from elasticsearch import ApiError, AuthenticationException, Elasticsearch

from streams.elastic import client, connection_options
from streams.lifecycle import lifecycle_index
from streams.settings import Settings

COOKIE = "sepwatch_console"
LOCAL_OPERATOR = "local-operator"
SESSION_HOURS = 12
# What a triage action needs: adding a lifecycle record (streams.indices.analyst_role).
TRIAGE_PRIVILEGE = "create_doc"


@dataclass
class Person:
    user: str
    es: Elasticsearch
    can_triage: bool
    realm: str  # the ES realm, "proxy", or "none" (security off)
    token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    started: float = field(default_factory=time.monotonic)


class SignInRefused(Exception):
    """Wrong user or password, or the node refused them."""


class Gate:
    """The console's sessions and its view of the node's security."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        secret = settings.console_session_secret
        self._key = (
            secret.get_secret_value().encode() if secret is not None else secrets.token_bytes(32)
        )
        self._sessions: dict[str, Person] = {}
        self._service = client(settings.es_url, request_timeout=10, **connection_options(settings))
        self._security_on: bool | None = None

    # -- the node ---------------------------------------------------------------
    def security_on(self) -> bool:
        """Whether the node authenticates at all (asked once)."""
        if self._security_on is None:
            try:
                self._service.perform_request("GET", "/_security/_authenticate")
                self._security_on = True
            except AuthenticationException:
                self._security_on = True
            except ApiError as exc:
                # ES answers 500 "Security must be explicitly enabled" when it is off.
                self._security_on = "security" not in str(exc.message).lower() and (
                    "not enabled" not in str(exc.body).lower()
                )
        return self._security_on

    def _person_client(self, **auth: Any) -> Elasticsearch:
        options = connection_options(self.settings)
        options.pop("api_key", None)
        options.pop("basic_auth", None)
        return client(self.settings.es_url, request_timeout=30, **options, **auth)

    def _may_triage(self, es: Elasticsearch) -> bool:
        records = lifecycle_index(self.settings.es_index)
        resp = es.security.has_privileges(
            index=[{"names": [records], "privileges": [TRIAGE_PRIVILEGE]}]
        )
        return bool(resp["has_all_requested"])

    # -- signing in -------------------------------------------------------------
    def sign_in(self, user: str, password: str) -> Person:
        es = self._person_client(basic_auth=(user, password))
        try:
            who = es.security.authenticate()
        except AuthenticationException:
            raise SignInRefused("wrong user or password") from None
        person = Person(
            user=str(who["username"]),
            es=es,
            can_triage=self._may_triage(es),
            realm=str(who.get("authentication_realm", {}).get("name", "")),
        )
        self._sessions[person.token] = person
        return person

    def local_operator(self) -> Person:
        """Security off: the console's own client, as the unauthenticated operator."""
        return Person(LOCAL_OPERATOR, self._service, can_triage=True, realm="none", token="")

    def proxied(self, user: str) -> Person:
        if not self.security_on():
            return Person(user, self._service, can_triage=True, realm="proxy", token="")
        es = self._service.options(headers={"es-security-runas-user": user})
        return Person(user, es, can_triage=self._may_triage(es), realm="proxy", token="")

    def person(self, token: str | None) -> Person | None:
        if not token:
            return None
        found = self._sessions.get(token)
        if found and time.monotonic() - found.started > SESSION_HOURS * 3600:
            self.sign_out(token)
            return None
        return found

    def sign_out(self, token: str | None) -> None:
        if token:
            gone = self._sessions.pop(token, None)
            if gone is not None:
                gone.es.close()

    # -- CSRF -------------------------------------------------------------------
    def csrf_token(self, person: Person) -> str:
        """Bound to the session (or, behind a proxy, to the user): a token from
        another session, or none, is refused."""
        bound = f"{person.realm}:{person.user}:{person.token}".encode()
        return hmac.new(self._key, bound, hashlib.sha256).hexdigest()

    def csrf_ok(self, person: Person, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(self.csrf_token(person), str(token))

    def close(self) -> None:
        for token in list(self._sessions):
            self.sign_out(token)
        self._service.close()
