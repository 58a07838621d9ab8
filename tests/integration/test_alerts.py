"""The alert router's channels against real receivers on loopback, and the
router end to end on a real Kafka broker."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer

from schemas import Finding, Policy
from schemas.policy import AlertingPolicy, Route
from streams import metrics
from streams.alerts.channels import (
    AlertmanagerChannel,
    EmailChannel,
    PagerDutyChannel,
    RetryPolicy,
    SlackChannel,
    WebhookChannel,
    deliver,
    signature,
)
from streams.alerts.grouping import NotificationGroups
from streams.alerts.router import AlertConfigError, AlertRouter
from streams.kafka_io import ensure_topics, read_dead_letters
from streams.settings import ChannelSettings, Settings
from streams.topics import Topics
from tests.integration.receivers import (
    Alertmanager,
    HttpReceiver,
    MailReceiver,
    SignedWebhook,
    wait_for,
)
from tests.integration.settle import committed_past

pytestmark = pytest.mark.integration
SECRET = "whsec-test-0123456789"
ROUTING_KEY = "R0123456789abcdef0123456789abcdef"
LINK = "https://kibana.bank.example/app/sepwatch/finding/{finding_id}"
FAST = RetryPolicy(attempts=3, first_s=0.05, cap_s=0.2)


def run(coro: Coroutine[Any, Any, None], timeout: float = 120) -> None:
    asyncio.run(asyncio.wait_for(coro, timeout))


def finding(n: int, at: datetime, **over: Any) -> Finding:
    critical = over.get("rule_id") in ("SEP-003", "SEP-004")
    fields: dict[str, Any] = {
        "finding_id": f"SEP-{n:04d}-{int(at.timestamp())}",
        "rule_id": "SEP-001",
        "rule_name": "Unevaluated SaaS from the internal network",
        "severity": "critical" if critical else "high",
        "status": "open",
        "timestamp": at,
        "detected_at": at,
        "entity": "HQ",
        "user_id": "u1",
        "device_id": "d1",
        "saas_app": "notion",
        "evidence_event_ids": [f"e{n}"],
        "summary": "notion is not in the registry; upload by card 1234-5678-9012-3456",
        "regulation": "EFSR Detailed Rules art. 15(1)3",
        **over,
    }
    return Finding.model_validate(fields)


def alerting(window: str = "15m") -> AlertingPolicy:
    return AlertingPolicy.model_validate(
        {
            "group_window": window,
            "routes": [
                # Critical findings page, and (continue) go on to the webhook too.
                {
                    "name": "critical",
                    "match": {"severity": "critical"},
                    "channels": ["pager"],
                    "continue": True,
                },
                {"name": "everything", "channels": ["hook"]},
            ],
        }
    )


# --- one channel, one real receiver ---------------------------------------------


@pytest.mark.skipif(not Alertmanager.available(), reason="prometheus-alertmanager not installed")
def test_alertmanager_shows_the_alert_and_resolves_it(tmp_path: Path) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    groups = NotificationGroups(alerting())
    (fired,) = groups.admit(finding(1, now - timedelta(minutes=1)))

    async def main(am: Alertmanager) -> None:
        channel = AlertmanagerChannel(
            "oncall", ChannelSettings(kind="alertmanager", url=am.url), link_base=LINK
        )
        try:
            assert (await deliver(channel, fired, FAST)).delivered
            shown = [a for a in am.alerts() if a["labels"].get("group_key") == fired.group_key]
            assert len(shown) == 1
            alert = shown[0]
            assert alert["labels"]["alertname"] == "SEP-001"
            assert alert["labels"]["severity"] == "high"
            assert alert["labels"]["entity"] == "HQ"
            assert alert["status"]["state"] == "active"
            assert alert["annotations"]["finding_ids"] == fired.finding_ids[0]
            assert alert["annotations"]["summary"].endswith("****-****-****-3456")
            assert "1234-5678" not in json.dumps(alert)  # masked on the way
            assert alert["generatorURL"] == LINK.replace("{finding_id}", fired.finding_ids[0])
            (closed,) = groups.close_due(fired.ends_at)
            assert (await deliver(channel, closed, FAST)).delivered

            def active() -> list[dict[str, Any]]:
                return [
                    a
                    for a in am.alerts(active="true")
                    if a["labels"].get("group_key") == fired.group_key
                    and datetime.fromisoformat(a["endsAt"].replace("Z", "+00:00"))
                    > datetime.now(UTC)
                ]

            await wait_for(lambda: active() == [], 10, "the alert resolved in Alertmanager")
        finally:
            await channel.close()

    with Alertmanager(tmp_path) as am:
        run(main(am))


def test_webhook_is_signed_and_the_receiver_refuses_stale_replayed_and_forged() -> None:
    groups = NotificationGroups(alerting())
    (n,) = groups.admit(finding(1, datetime.now(UTC)))

    async def main() -> None:
        async with SignedWebhook(SECRET, tolerance_s=300) as hook:
            channel = WebhookChannel(
                "hook", ChannelSettings(kind="webhook", url=hook.url + "/in", secret=SECRET)
            )
            assert (await deliver(channel, n, FAST)).delivered
            (got,) = hook.requests
            assert got.status == 200 and got.path == "/in"
            body = got.json()
            assert body["id"] == n.id and body["finding_ids"] == list(n.finding_ids)
            assert body["group_key"] == n.group_key and body["kind"] == "firing"
            assert got.headers["X-Sepwatch-Signature"].startswith("sha256=")
            assert "1234-5678" not in got.body.decode()

            session = channel.session
            # The same request again, byte for byte: a replay.
            async with session.post(hook.url + "/in", data=got.body, headers=got.headers) as r:
                assert r.status == 409
            # Re-signed with a timestamp from an hour ago: stale.
            old = str(int(time.time()) - 3600)
            stale = {
                "X-Sepwatch-Timestamp": old,
                "X-Sepwatch-Signature": signature(SECRET, old, got.body),
            }
            async with session.post(hook.url + "/in", data=got.body, headers=stale) as r:
                assert r.status == 401
            await channel.close()

            # A channel holding the wrong secret is refused, and not retried.
            forged = WebhookChannel(
                "forged", ChannelSettings(kind="webhook", url=hook.url, secret="guess")
            )
            result = await deliver(forged, n, FAST)
            await forged.close()
            assert not result.delivered and result.attempts == 1 and "401" in result.reason
            assert [r.status for r in hook.requests] == [200, 409, 401, 401]

    run(main())


def test_slack_webhook_gets_blocks_with_summary_severity_entity_and_link() -> None:
    groups = NotificationGroups(alerting())
    (n,) = groups.admit(finding(1, datetime.now(UTC), entity="BR-07"))

    async def main() -> None:
        async with HttpReceiver() as slack:
            channel = SlackChannel(
                "chat",
                ChannelSettings(kind="slack", url=slack.url + "/services/T/B/X"),
                link_base=LINK,
            )
            assert (await deliver(channel, n, FAST)).delivered
            await channel.close()
            (got,) = slack.requests
            body = got.json()
            assert "SEP-001" in body["text"]
            blocks = body["blocks"]
            assert blocks[0]["type"] == "header" and "HIGH" in blocks[0]["text"]["text"]
            assert "notion is not in the registry" in blocks[1]["text"]["text"]
            fields = {
                f["text"].split("\n")[0]: f["text"].split("\n")[1] for f in blocks[2]["fields"]
            }
            assert fields["*Severity*"] == "high" and fields["*Entity*"] == "BR-07"
            assert fields["*Rule*"].startswith("SEP-001")
            link = LINK.replace("{finding_id}", n.finding_ids[0])
            assert blocks[3]["text"]["text"] == f"<{link}|Open the finding>"
            assert "5678" not in got.body.decode()

    run(main())


def test_email_goes_over_smtp_with_severity_rule_and_entity_in_the_subject() -> None:
    groups = NotificationGroups(alerting())
    (n,) = groups.admit(finding(1, datetime.now(UTC)))

    async def main(mail: MailReceiver) -> None:
        config = ChannelSettings(
            kind="email",
            smtp_host="127.0.0.1",
            smtp_port=mail.port,
            mail_from="sepwatch@bank.example",
            mail_to=["soc@bank.example", "ciso@bank.example"],
        )
        channel = EmailChannel("mail", config, link_base=LINK)
        assert (await deliver(channel, n, FAST)).delivered
        (msg,) = mail.messages
        assert mail.envelopes == [
            ("sepwatch@bank.example", ["soc@bank.example", "ciso@bank.example"])
        ]
        subject = msg["Subject"]
        assert "HIGH" in subject and "SEP-001" in subject and "HQ" in subject
        text = msg.get_payload(decode=True).decode()
        assert "notion is not in the registry" in text
        assert LINK.replace("{finding_id}", n.finding_ids[0]) in text
        assert "1234-5678" not in text and "****-****-****-3456" in text

    with MailReceiver() as mail:
        run(main(mail))


def test_pagerduty_events_trigger_then_resolve_under_the_group_key() -> None:
    at = datetime.now(UTC)
    groups = NotificationGroups(alerting())
    (trigger,) = groups.admit(finding(1, at, rule_id="SEP-003"))
    (again,) = groups.admit(finding(2, at + timedelta(seconds=5), rule_id="SEP-003"))
    (resolve,) = groups.close_due(at + timedelta(hours=1))

    async def main() -> None:
        async with HttpReceiver(answer=lambda request, body: 202) as pd:
            config = ChannelSettings(
                kind="pagerduty", url=pd.url + "/v2/enqueue", routing_key=ROUTING_KEY
            )
            channel = PagerDutyChannel("pager", config, link_base=LINK)
            for n in (trigger, again, resolve):
                assert (await deliver(channel, n, FAST)).delivered
            await channel.close()
            events = [r.json() for r in pd.requests]
            assert [r.path for r in pd.requests] == ["/v2/enqueue"] * 3
            assert [e["event_action"] for e in events] == ["trigger", "trigger", "resolve"]
            assert {e["dedup_key"] for e in events} == {trigger.group_key}
            assert all(e["routing_key"] == ROUTING_KEY for e in events)
            first = events[0]["payload"]
            assert first["severity"] == "critical" and first["source"] == "sepwatch"
            assert first["component"] == "HQ" and first["group"] == "SEP-003"
            assert first["custom_details"]["finding_ids"] == list(trigger.finding_ids)
            assert events[1]["payload"]["custom_details"]["count"] == 2

    run(main())


def test_throttled_receiver_is_retried_after_its_retry_after() -> None:
    groups = NotificationGroups(alerting())
    (n,) = groups.admit(finding(1, datetime.now(UTC)))
    answers = iter([429, 200])

    async def main() -> None:
        async with HttpReceiver(
            answer=lambda request, body: next(answers), extra_headers={"Retry-After": "1"}
        ) as hook:
            channel = WebhookChannel(
                "hook", ChannelSettings(kind="webhook", url=hook.url, secret=SECRET)
            )
            began = time.monotonic()
            result = await deliver(channel, n, RetryPolicy(attempts=3, first_s=0.01, cap_s=5))
            await channel.close()
            assert result.delivered and result.attempts == 2
            assert time.monotonic() - began >= 0.9  # the receiver's Retry-After, not 10 ms

    run(main())


def test_a_client_error_other_than_429_is_not_retried() -> None:
    groups = NotificationGroups(alerting())
    (n,) = groups.admit(finding(1, datetime.now(UTC)))

    async def main() -> None:
        async with HttpReceiver(answer=lambda request, body: 400) as slack:
            channel = SlackChannel("chat", ChannelSettings(kind="slack", url=slack.url))
            result = await deliver(channel, n, FAST)
            await channel.close()
            assert not result.delivered and result.attempts == 1 and "400" in result.reason
            assert len(slack.requests) == 1

    run(main())


# --- the router on Kafka ------------------------------------------------------------


def _settings(broker: str, prefix: str, channels: dict[str, ChannelSettings]) -> Settings:
    return Settings(
        broker=broker,
        topic_prefix=prefix,
        partitions=2,
        channels=channels,
        alerts_link_base=LINK,
        alerts_attempts=3,
        alerts_backoff_s=0.05,
        alerts_backoff_cap_s=0.2,
        alerts_idle_s=3600,
    )


def _publish(broker: str, topics: Topics, findings: list[Finding]) -> None:
    out = KafkaProducer(bootstrap_servers=broker, acks="all")
    try:
        for f in findings:
            out.send(topics.findings, f.model_dump_json().encode(), key=f.finding_id.encode())
        out.flush()
    finally:
        out.close()


def _policy(window: str = "15m") -> Policy:
    return Policy(alerting=alerting(window))


def test_router_refuses_routes_naming_undefined_channels(broker: str, prefix: str) -> None:
    policy = Policy(
        alerting=AlertingPolicy(
            routes=[
                Route(name="a", channels=["pager", "teams"]),
                Route(name="b", match={"severity": "urgent"}, channels=["sms"]),
            ]
        )
    )
    settings = _settings(broker, prefix, {"pager": ChannelSettings(kind="pagerduty")})
    with pytest.raises(AlertConfigError) as err:
        AlertRouter(settings, policy)
    text = str(err.value)
    for problem in ("'teams'", "'sms'", "'urgent'", "routing_key"):
        assert problem in text
    assert len(err.value.problems) == 4


def test_a_receiver_answering_500_gets_retries_then_a_dead_letter(broker: str, prefix: str) -> None:
    topics = Topics(prefix)
    ensure_topics(broker, topics, partitions=2, retention_ms=3600_000)
    at = datetime.now(UTC)
    f = finding(1, at)
    _publish(broker, topics, [f])
    before = metrics.DEAD_LETTERS.labels("notification_undeliverable")._value.get()

    async def main() -> None:
        async with HttpReceiver(answer=lambda request, body: 500) as hook:
            config = ChannelSettings(kind="webhook", url=hook.url, secret=SECRET)
            router = AlertRouter(
                _settings(broker, prefix, {"hook": config, "pager": pd()}), _policy()
            )
            stop = asyncio.Event()
            task = asyncio.create_task(router.run(stop))
            await wait_for(lambda: router.dead_lettered == 1, 60, "a dead letter", task)
            stop.set()
            await task
            assert len(hook.requests) == 3  # alerts_attempts
            assert {r.json()["finding_ids"][0] for r in hook.requests} == {f.finding_id}

    run(main())
    letters = [d for d in read_dead_letters(broker, topics) if d.get("source") == "alert_router"]
    assert len(letters) == 1
    letter = letters[0]
    assert letter["channel"] == "hook" and letter["finding_ids"] == [f.finding_id]
    assert letter["attempts"] == 3 and "HTTP 500" in letter["reason"]
    assert json.loads(letter["raw_masked"])["group_key"] == letter["group_key"]
    assert "1234-5678" not in json.dumps(letter)
    after = metrics.DEAD_LETTERS.labels("notification_undeliverable")._value.get()
    assert after == before + 1


def pd(url: str = "http://127.0.0.1:9/v2/enqueue") -> ChannelSettings:
    return ChannelSettings(kind="pagerduty", url=url, routing_key=ROUTING_KEY)


def test_findings_to_receivers_once_each_across_duplicates_waivers_and_a_restart(
    broker: str, prefix: str
) -> None:
    topics = Topics(prefix)
    ensure_topics(broker, topics, partitions=2, retention_ms=3600_000)
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    waiver = {"id": "W-7", "approved_by": "ciso", "reason": "pilot", "valid_until": "2027-01-01"}
    first = finding(1, t0)
    folded = finding(2, t0 + timedelta(minutes=5))
    other_user = finding(3, t0 + timedelta(minutes=1), user_id="u2")
    waived = finding(4, t0 + timedelta(minutes=2), user_id="u3", status="waived", waiver=waiver)
    crit_a = finding(5, t0 + timedelta(minutes=3), rule_id="SEP-003", saas_app="drive")
    crit_b = finding(6, t0 + timedelta(minutes=4), rule_id="SEP-003", saas_app="drive")
    batch = [first, first, other_user, waived, crit_a, crit_a]
    later = finding(7, t0 + timedelta(minutes=30), user_id="u9")  # moves the clock on

    async def main() -> None:
        async with SignedWebhook(SECRET) as hook, HttpReceiver(lambda r, b: 202) as pager:
            channels = {
                "hook": ChannelSettings(kind="webhook", url=hook.url, secret=SECRET),
                "pager": pd(pager.url + "/v2/enqueue"),
            }
            settings = _settings(broker, prefix, channels)

            def firing() -> list[dict[str, Any]]:
                return [r.json() for r in hook.accepted() if r.json()["kind"] == "firing"]

            def resolved() -> list[dict[str, Any]]:
                return [r.json() for r in hook.accepted() if r.json()["kind"] == "resolved"]

            router = AlertRouter(settings, _policy())
            stop = asyncio.Event()
            task = asyncio.create_task(router.run(stop))
            _publish(broker, topics, batch)
            await wait_for(lambda: len(firing()) >= 3, 60, "three firing notifications", task)
            # In a second batch, so that `first` opens its group before `folded`.
            _publish(broker, topics, [folded, crit_b])
            await wait_for(
                lambda: len(firing()) >= 4,
                20,
                "four firing notifications",
                task,
            )
            # Every finding published read and its notifications delivered (the
            # router commits after delivery): a duplicate would be here now.
            await asyncio.to_thread(committed_past, broker, f"{prefix}alerts", [topics.findings])
            reported = sorted(i for n in firing() for i in n["finding_ids"])
            expected = [first, other_user, crit_a, crit_b]
            assert reported == sorted(f.finding_id for f in expected)
            assert len(pager.requests) == 2  # the critical ones only
            assert [e.json()["event_action"] for e in pager.requests] == ["trigger"] * 2

            _publish(broker, topics, [later])
            await wait_for(lambda: len(resolved()) >= 3, 60, "the groups of t0 to close", task)
            await asyncio.to_thread(committed_past, broker, f"{prefix}alerts", [topics.findings])
            closes = {n["group_key"]: n for n in resolved()}
            first_group = next(n for n in firing() if n["finding_ids"] == [first.finding_id])
            closed = closes[first_group["group_key"]]
            assert closed["count"] == 2 and closed["unreported"] == 1
            assert closed["finding_ids"] == [folded.finding_id]
            assert len(resolved()) == 3  # first's, other_user's and the critical group
            assert [e.json()["event_action"] for e in pager.requests][-1] == "resolve"
            stop.set()
            await task
            count = len(hook.requests)

            # A new router (a restarted worker) is given the same findings again,
            # as a reprocessing engine would emit them: nothing notifies twice.
            router = AlertRouter(settings, _policy())
            stop = asyncio.Event()
            task = asyncio.create_task(router.run(stop))
            _publish(broker, topics, [first, folded, crit_a, crit_b, waived, later])
            fresh = finding(8, t0 + timedelta(minutes=31), user_id="u8")
            _publish(broker, topics, [fresh])
            await wait_for(
                lambda: any(fresh.finding_id in n["finding_ids"] for n in firing()),
                60,
                "the fresh finding",
                task,
            )
            await asyncio.to_thread(committed_past, broker, f"{prefix}alerts", [topics.findings])
            stop.set()
            await task
            news = [r.json() for r in hook.requests[count:]]
            assert [n["finding_ids"] for n in news] == [[fresh.finding_id]]
            assert all(r.status == 200 for r in hook.requests)
            ids = [i for n in firing() for i in n["finding_ids"]]
            assert len(ids) == len(set(ids))  # once per finding at the receiver

    run(main(), timeout=240)


def test_quiet_stream_groups_close_on_the_wall_clock(broker: str, prefix: str) -> None:
    topics = Topics(prefix)
    ensure_topics(broker, topics, partitions=2, retention_ms=3600_000)
    f = finding(1, datetime.now(UTC))

    async def main() -> None:
        async with SignedWebhook(SECRET) as hook:
            settings = _settings(
                broker,
                prefix,
                {
                    "hook": ChannelSettings(kind="webhook", url=hook.url, secret=SECRET),
                    "pager": pd(),
                },
            ).model_copy(update={"alerts_idle_s": 1.0})
            router = AlertRouter(settings, _policy(window="3s"))
            stop = asyncio.Event()
            task = asyncio.create_task(router.run(stop))
            _publish(broker, topics, [f])
            await wait_for(lambda: len(hook.accepted()) == 1, 60, "the firing notification", task)
            began = time.monotonic()
            await wait_for(
                lambda: len(hook.accepted()) == 2, 30, "the close of a quiet group", task
            )
            stop.set()
            await task
            assert time.monotonic() - began >= 1.0
            assert [r.json()["kind"] for r in hook.accepted()] == ["firing", "resolved"]

    run(main())
