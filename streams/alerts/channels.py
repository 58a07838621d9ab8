"""Notification channels, and delivery with retries.

One class per kind; each turns a notification into its receiver's format and
says, by the exception it raises, whether a failure is worth another attempt:
connection errors, timeouts, 429 and 5xx (SMTP 4xx) are; any other refusal is
the notification's or the configuration's fault and is not. `deliver` tries a
bounded number of times with exponential backoff and full jitter, honouring a
receiver's Retry-After; what still fails is the router's to dead-letter.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import json
import logging
import smtplib
import ssl
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parsedate_to_datetime
from typing import Any, ClassVar

import aiohttp

from detectors.masking import mask_text
from streams import metrics
from streams.alerts.grouping import Notification
from streams.backoff import Backoff
from streams.settings import ChannelSettings

log = logging.getLogger("sepwatch.alerts")

PAGERDUTY_URL = "https://events.pagerduty.com/v2/enqueue"
PAGERDUTY_SEVERITY = {"critical": "critical", "high": "error", "medium": "warning", "low": "info"}
SIGNATURE_HEADER = "X-Sepwatch-Signature"
TIMESTAMP_HEADER = "X-Sepwatch-Timestamp"
NOTIFICATION_HEADER = "X-Sepwatch-Notification"
# Alertmanager resolves an alert nobody refreshes after its endsAt: a firing
# alert stays up at least this long, or until its group's window ends.
MIN_FIRING = timedelta(minutes=5)


class DeliveryError(Exception):
    """One failed attempt, and whether another may succeed."""

    def __init__(self, reason: str, *, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(mask_text(reason))
        self.reason = mask_text(reason)
        self.retryable = retryable
        self.retry_after = retry_after


# --- signing (generic webhook) ---------------------------------------------


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """`sha256=<hex>` of HMAC-SHA256 over `{timestamp}.{body}`, as Stripe and
    Slack sign: the timestamp is inside the signature, so it cannot be changed
    to replay an old body."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_signature(
    secret: str,
    timestamp: str,
    body: bytes,
    signature_header: str,
    tolerance_s: float = 300.0,
    now: float | None = None,
) -> bool:
    """What a receiver checks: the signature matches (in constant time) and the
    timestamp is within `tolerance_s` of its clock, so a captured request
    cannot be replayed later."""
    try:
        sent = float(timestamp)
    except ValueError:
        return False
    current = time.time() if now is None else now
    if abs(current - sent) > tolerance_s:
        return False
    return hmac.compare_digest(signature(secret, timestamp, body), signature_header)


def finding_link(link_base: str, finding_id: str | None) -> str:
    """Where a person reads the finding: `{finding_id}` in the base is replaced,
    else the id is appended. Empty without a base."""
    if not link_base or not finding_id:
        return ""
    if "{finding_id}" in link_base:
        return link_base.replace("{finding_id}", finding_id)
    return link_base + finding_id


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


# --- channels ----------------------------------------------------------------


class Channel(ABC):
    """A named channel of one kind; `deliver` makes one attempt."""

    kind: ClassVar[str]
    # Whether a group's close that reports nothing new is sent (Alertmanager's
    # send_resolved defaults per receiver kind).
    sends_resolved: ClassVar[bool] = True

    def __init__(
        self,
        name: str,
        config: ChannelSettings,
        *,
        link_base: str = "",
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.link_base = link_base
        self._session = session
        self._own_session = session is None

    def wants(self, notification: Notification) -> bool:
        """Every finding that notifies; a close only if it reports findings
        folded in since the last notice, or the channel tracks resolution."""
        if notification.kind == "firing" or notification.unreported:
            return True
        resolved = self.config.send_resolved
        return self.sends_resolved if resolved is None else resolved

    def link(self, notification: Notification) -> str:
        ids = notification.finding_ids
        return finding_link(self.link_base, ids[-1] if ids else None)

    @abstractmethod
    async def deliver(self, notification: Notification) -> None: ...

    async def close(self) -> None:
        if self._session is not None and self._own_session:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
            self._own_session = True
        return self._session

    async def post_json(
        self, url: str, payload: Any, headers: dict[str, str] | None = None
    ) -> bytes:
        body = json.dumps(payload, ensure_ascii=False).encode()
        return await self.post(url, body, headers or {})

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> bytes:
        """One POST; a DeliveryError says whether to try again."""
        timeout = aiohttp.ClientTimeout(total=self.config.timeout_s)
        try:
            async with self.session.post(
                url,
                data=body,
                headers={"Content-Type": "application/json", **headers},
                timeout=timeout,
            ) as response:
                text = await response.read()
                if 200 <= response.status < 300:
                    return text
                retryable = response.status == 429 or response.status >= 500
                raise DeliveryError(
                    f"HTTP {response.status} from the {self.kind} receiver",
                    retryable=retryable,
                    retry_after=_retry_after(response.headers.get("Retry-After")),
                )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise DeliveryError(
                f"{self.kind} receiver unreachable ({type(exc).__name__})", retryable=True
            ) from None


class AlertmanagerChannel(Channel):
    """Alertmanager API v2: `POST {url}/api/v2/alerts`. A group is one alert
    (its labels are its identity); its close sets endsAt, which resolves it."""

    kind = "alertmanager"

    def payload(self, n: Notification, now: datetime | None = None) -> list[dict[str, Any]]:
        # Alertmanager lives on the wall clock: an alert's endsAt in the past
        # means resolved. startsAt is the group's first finding (event time).
        current = now or datetime.now(UTC)
        firing = max(MIN_FIRING, n.ends_at - n.at)
        ends = current if n.kind == "resolved" else current + firing
        alert: dict[str, Any] = {
            "labels": {
                "alertname": n.rule_id,
                "severity": n.severity,
                "entity": n.entity,
                "group_key": n.group_key,
                "source": "sepwatch",
            },
            "annotations": {
                "summary": n.summary,
                "description": n.text(),
                "rule_name": n.rule_name,
                "finding_ids": ",".join(n.finding_ids),
                "count": str(n.count),
                "unreported": str(n.unreported),
                "regulation": n.regulation,
            },
            "startsAt": n.started_at.isoformat(),
            "endsAt": ends.isoformat(),
        }
        link = self.link(n)
        if link:
            alert["generatorURL"] = link
        return [alert]

    async def deliver(self, notification: Notification) -> None:
        url = self.config.url.get_secret_value().rstrip("/") + "/api/v2/alerts"
        await self.post_json(url, self.payload(notification))


class WebhookChannel(Channel):
    """Generic JSON webhook, signed: the receiver checks `verify_signature`.
    The timestamp is taken at each attempt, so a retry after a long backoff
    is not refused as stale."""

    kind = "webhook"

    def body(self, n: Notification) -> bytes:
        payload = {"version": 1, **n.as_dict(), "link": self.link(n)}
        return json.dumps(payload, ensure_ascii=False).encode()

    async def deliver(self, notification: Notification) -> None:
        body = self.body(notification)
        timestamp = str(int(time.time()))
        secret = self.config.secret.get_secret_value() if self.config.secret else ""
        headers = {
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: signature(secret, timestamp, body),
            NOTIFICATION_HEADER: notification.id,
        }
        await self.post(self.config.url.get_secret_value(), body, headers)


def _mrkdwn(text: str) -> str:
    # Slack's control characters; everything else is shown as written.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class SlackChannel(Channel):
    """Slack-compatible incoming webhook: `text` for notifications and old
    clients, `blocks` for the message itself."""

    kind = "slack"
    sends_resolved = False

    def payload(self, n: Notification) -> dict[str, Any]:
        fields = [
            ("Severity", n.severity),
            ("Entity", n.entity),
            ("Rule", f"{n.rule_id} {n.rule_name}"),
            ("Findings in group", str(n.count)),
        ]
        if n.unreported:
            fields.append(("Not reported before", str(n.unreported)))
        if n.saas_app:
            fields.append(("App", n.saas_app))
        body = n.summary if n.kind == "firing" else f"Group closed: {n.summary}"
        blocks: list[dict[str, Any]] = [
            {"type": "header", "text": {"type": "plain_text", "text": n.title[:150]}},
            {"type": "section", "text": {"type": "mrkdwn", "text": _mrkdwn(body)[:3000]}},
            {
                "type": "section",
                "fields": [
                    {"type": "mrkdwn", "text": f"*{label}*\n{_mrkdwn(value)}"}
                    for label, value in fields
                ],
            },
        ]
        link = self.link(n)
        if link:
            blocks.append(
                {
                    "type": "section",
                    "text": {"type": "mrkdwn", "text": f"<{link}|Open the finding>"},
                }
            )
        blocks.append(
            {
                "type": "context",
                "elements": [
                    {"type": "mrkdwn", "text": _mrkdwn(f"{n.regulation} · group {n.group_key}")}
                ],
            }
        )
        return {"text": f"{n.title}: {n.summary}"[:3000], "blocks": blocks}

    async def deliver(self, notification: Notification) -> None:
        await self.post_json(self.config.url.get_secret_value(), self.payload(notification))


class PagerDutyChannel(Channel):
    """PagerDuty Events API v2: the group key is the dedup_key, so a group is
    one incident, triggered by its first finding and resolved at its close."""

    kind = "pagerduty"

    def payload(self, n: Notification) -> dict[str, Any]:
        key = self.config.routing_key.get_secret_value() if self.config.routing_key else ""
        if n.kind == "resolved":
            return {"routing_key": key, "event_action": "resolve", "dedup_key": n.group_key}
        event: dict[str, Any] = {
            "routing_key": key,
            "event_action": "trigger",
            "dedup_key": n.group_key,
            "client": "sepwatch",
            "payload": {
                "summary": f"{n.title}: {n.summary}"[:1024],
                "source": "sepwatch",
                "severity": PAGERDUTY_SEVERITY.get(n.severity, "warning"),
                "timestamp": n.at.isoformat(),
                "component": n.entity,
                "group": n.rule_id,
                "class": n.rule_name,
                "custom_details": {
                    "finding_ids": list(n.finding_ids),
                    "count": n.count,
                    "unreported": n.unreported,
                    "regulation": n.regulation,
                    "saas_app": n.saas_app,
                    "notification_id": n.id,
                },
            },
        }
        link = self.link(n)
        if link:
            event["links"] = [{"href": link, "text": "Finding"}]
        return event

    async def deliver(self, notification: Notification) -> None:
        url = self.config.url.get_secret_value() or PAGERDUTY_URL
        await self.post_json(url, self.payload(notification))


class EmailChannel(Channel):
    """Plain-text mail over SMTP (the standard library's client, in a thread:
    a few mails an hour do not earn another dependency)."""

    kind = "email"
    sends_resolved = False

    def message(self, n: Notification) -> EmailMessage:
        msg = EmailMessage()
        what = "closed" if n.kind == "resolved" else n.severity.upper()
        msg["Subject"] = mask_text(f"[sepwatch {what}] {n.rule_id} {n.rule_name} at {n.entity}")
        msg["From"] = self.config.mail_from
        msg["To"] = ", ".join(self.config.mail_to)
        msg["Date"] = format_datetime(datetime.now(UTC))
        msg["Message-ID"] = make_msgid(idstring=n.id, domain="sepwatch")
        msg["X-Sepwatch-Group"] = n.group_key
        link = self.link(n)
        msg.set_content(n.text() + (f"\n\n{link}\n" if link else "\n"))
        return msg

    def _send(self, msg: EmailMessage) -> None:
        c = self.config
        connect = (
            functools.partial(smtplib.SMTP_SSL, context=ssl.create_default_context())
            if c.smtp_tls
            else smtplib.SMTP
        )
        with connect(c.smtp_host, c.smtp_port, timeout=c.timeout_s) as smtp:
            if c.smtp_starttls and not c.smtp_tls:
                smtp.starttls(context=ssl.create_default_context())
            if c.smtp_username:
                password = c.smtp_password.get_secret_value() if c.smtp_password else ""
                smtp.login(c.smtp_username, password)
            smtp.send_message(msg)

    async def deliver(self, notification: Notification) -> None:
        msg = self.message(notification)
        try:
            await asyncio.to_thread(self._send, msg)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            raise DeliveryError(
                f"SMTP refused the recipients ({', '.join(map(str, codes))})",
                retryable=all(400 <= code < 500 for code in codes),
            ) from None
        except smtplib.SMTPResponseException as exc:
            raise DeliveryError(
                f"SMTP {exc.smtp_code}", retryable=400 <= exc.smtp_code < 500
            ) from None
        except (smtplib.SMTPException, OSError, TimeoutError) as exc:
            raise DeliveryError(
                f"SMTP server unreachable ({type(exc).__name__})", retryable=True
            ) from None


KINDS: dict[str, type[Channel]] = {
    c.kind: c
    for c in (AlertmanagerChannel, WebhookChannel, SlackChannel, PagerDutyChannel, EmailChannel)
}


def channel_problems(configs: dict[str, ChannelSettings]) -> list[str]:
    """What a channel lacks to deliver anything, every problem at once."""
    problems = []
    for name, c in sorted(configs.items()):
        where = f"channels.{name} ({c.kind})"
        url = c.url.get_secret_value()
        if c.kind in ("alertmanager", "webhook", "slack") and not url:
            problems.append(f"{where}: needs a url")
        if url and not url.startswith(("http://", "https://")):
            problems.append(f"{where}: url must be http:// or https://")
        if c.kind == "webhook" and not c.secret:
            problems.append(f"{where}: needs a secret to sign with")
        if c.kind == "pagerduty" and not c.routing_key:
            problems.append(f"{where}: needs a routing_key")
        if c.kind == "email":
            if not c.smtp_host:
                problems.append(f"{where}: needs an smtp_host")
            if not c.mail_from:
                problems.append(f"{where}: needs mail_from")
            if not c.mail_to:
                problems.append(f"{where}: needs at least one address in mail_to")
    return problems


def build_channels(
    configs: dict[str, ChannelSettings],
    *,
    link_base: str = "",
    session: aiohttp.ClientSession | None = None,
) -> dict[str, Channel]:
    return {
        name: KINDS[c.kind](name, c, link_base=link_base, session=session)
        for name, c in configs.items()
    }


# --- delivery with retries -----------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded attempts, each after the project's backoff (streams.backoff), or
    after what the receiver's Retry-After asks, capped."""

    attempts: int = 5
    first_s: float = 1.0
    cap_s: float = 60.0

    def delay(self, failures: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return min(self.cap_s, retry_after)
        return Backoff(self.first_s, self.cap_s).delay(failures - 1)


@dataclass(frozen=True)
class DeliveryResult:
    delivered: bool
    attempts: int
    reason: str = ""
    stopped: bool = False  # the router is stopping: neither delivered nor given up


async def deliver(
    channel: Channel,
    notification: Notification,
    retry: RetryPolicy,
    stop: asyncio.Event | None = None,
) -> DeliveryResult:
    """At least once: try until delivered, refused for good, or out of attempts."""
    attempt = 0
    while True:
        attempt += 1
        try:
            await channel.deliver(notification)
        except DeliveryError as exc:
            last = attempt >= retry.attempts or not exc.retryable
            if last:
                return DeliveryResult(False, attempt, exc.reason)
            metrics.NOTIFICATIONS_FAILED.labels(channel.name, "retried").inc()
            wait = retry.delay(attempt, exc.retry_after)
            log.warning(
                "notification %s to %s: %s; attempt %d of %d, next in %.1f s",
                notification.id,
                channel.name,
                exc.reason,
                attempt,
                retry.attempts,
                wait,
            )
            if stop is None:
                await asyncio.sleep(wait)
            else:
                try:
                    await asyncio.wait_for(stop.wait(), timeout=wait)
                except TimeoutError:
                    pass
                else:
                    return DeliveryResult(False, attempt, exc.reason, stopped=True)
            continue
        metrics.NOTIFICATIONS_SENT.labels(channel.name).inc()
        return DeliveryResult(True, attempt)
