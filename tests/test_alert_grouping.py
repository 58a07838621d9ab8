"""Notification grouping and routing (rules.md, "Suppression of notifications")."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from schemas import Finding
from schemas.policy import AlertingPolicy, Route
from streams.alerts.channels import (
    AlertmanagerChannel,
    PagerDutyChannel,
    RetryPolicy,
    SlackChannel,
    channel_problems,
    finding_link,
    signature,
    verify_signature,
)
from streams.alerts.grouping import NotificationGroups, group_key, route_problems, routes_for
from streams.settings import ChannelSettings

T0 = datetime(2026, 6, 10, 1, 0, tzinfo=UTC)
RULES = {
    "SEP-001": ("high", "Unevaluated SaaS"),
    "SEP-003": ("critical", "Unique identification to SaaS"),
    "SEP-007": ("medium", "Posture unknown"),
}


def finding(n: int, minutes: float = 0, **over: Any) -> Finding:
    rule = over.pop("rule_id", "SEP-001")
    severity, name = RULES[rule]
    fields: dict[str, Any] = {
        "finding_id": f"f{n}",
        "rule_id": rule,
        "rule_name": name,
        "severity": severity,
        "status": "open",
        "timestamp": T0 + timedelta(minutes=minutes),
        "detected_at": T0 + timedelta(minutes=minutes),
        "entity": "HQ",
        "user_id": "u1",
        "device_id": "d1",
        "saas_app": "notion",
        "evidence_event_ids": [f"e{n}"],
        "summary": f"access {n} to notion",
        "regulation": "EFSR art. 15",
        **over,
    }
    return Finding.model_validate(fields)


ROUTES = [
    Route(name="critical", match={"severity": "critical"}, channels=["pager", "chat"]),
    Route(name="branches", match={"entity": ["BR-01", "BR-02"]}, channels=["branch-mail"]),
    Route(name="rest", match={"severity": ["high", "medium"]}, channels=["chat"]),
]


def groups(**kw: Any) -> NotificationGroups:
    alerting = AlertingPolicy(group_window=timedelta(minutes=15), routes=ROUTES)
    return NotificationGroups(alerting, **kw)


def test_first_finding_notifies_and_later_ones_in_the_window_fold() -> None:
    g = groups()
    first = g.admit(finding(1, 0))
    assert [n.kind for n in first] == ["firing"]
    assert first[0].finding_ids == ("f1",) and first[0].count == 1
    assert g.admit(finding(2, 5)) == []
    assert g.admit(finding(3, 14.9)) == []
    assert g.suppressed["grouped"] == 2


def test_close_reports_the_folded_count_once_the_window_ends() -> None:
    g = groups()
    g.admit(finding(1, 0))
    g.admit(finding(2, 5))
    g.admit(finding(3, 10))
    assert g.close_due(T0 + timedelta(minutes=14, seconds=59)) == []
    closed = g.close_due(T0 + timedelta(minutes=15))
    assert len(closed) == 1
    n = closed[0]
    assert n.kind == "resolved" and n.count == 3 and n.unreported == 2
    assert n.finding_ids == ("f2", "f3")
    assert n.group_key == first_key()
    assert g.close_due(T0 + timedelta(hours=1)) == []  # closed once


def first_key() -> str:
    return group_key(("SEP-001", "u1", "d1", "notion"))


def test_a_finding_after_the_window_closes_the_group_and_notifies_again() -> None:
    g = groups()
    g.admit(finding(1, 0))
    g.admit(finding(2, 3))
    out = g.admit(finding(3, 15))  # no close_due in between: the finding closes it
    assert [n.kind for n in out] == ["resolved", "firing"]
    assert out[0].unreported == 1 and out[1].finding_ids == ("f3",) and out[1].count == 1
    assert out[1].started_at == T0 + timedelta(minutes=15)


def test_a_single_finding_group_closes_with_nothing_unreported() -> None:
    g = groups()
    g.admit(finding(1, 0))
    (n,) = g.close_due(T0 + timedelta(minutes=20))
    assert n.kind == "resolved" and n.unreported == 0 and n.finding_ids == ()


def test_groups_are_per_rule_user_device_and_app() -> None:
    g = groups()
    assert g.admit(finding(1, 0))
    assert g.admit(finding(2, 1, user_id="u2"))
    assert g.admit(finding(3, 1, device_id="d2"))
    assert g.admit(finding(4, 1, saas_app="trello"))
    assert g.admit(finding(5, 1, rule_id="SEP-007"))
    assert g.admit(finding(6, 1, device_id=None))
    assert g.admit(finding(7, 2)) == []
    keys = {n.group_key for n in g.close_due(T0 + timedelta(hours=1))}
    assert len(keys) == 6


def test_critical_findings_notify_every_time() -> None:
    g = groups()
    out = [g.admit(finding(i, i, rule_id="SEP-003")) for i in range(4)]
    assert all(len(o) == 1 and o[0].kind == "firing" for o in out)
    assert [o[0].finding_ids for o in out] == [("f0",), ("f1",), ("f2",), ("f3",)]
    assert out[-1][0].count == 4 and out[-1][0].channels == ("pager", "chat")
    assert g.suppressed["grouped"] == 0


def test_a_critical_finding_reports_what_was_folded_before_it() -> None:
    # Severity is fixed per rule today; grouping must not rely on it.
    g = groups()
    g.admit(finding(1, 0))
    g.admit(finding(2, 1))
    (n,) = g.admit(finding(3, 2, severity="critical"))
    assert n.unreported == 1 and n.finding_ids == ("f2", "f3")
    (closed,) = g.close_due(T0 + timedelta(minutes=15))
    assert closed.unreported == 0


def test_waived_findings_never_notify_and_are_counted() -> None:
    g = groups()
    waiver = {"id": "W-1", "approved_by": "ciso", "reason": "pilot", "valid_until": "2026-12-31"}
    assert g.admit(finding(1, 0, status="waived", waiver=waiver)) == []
    assert g.admit(finding(2, 1, status="waived", rule_id="SEP-003", waiver=waiver)) == []
    assert g.suppressed["waived"] == 2
    assert g.close_due(T0 + timedelta(hours=1)) == []
    # An open finding of the same key still notifies: the waived ones opened no group.
    assert len(g.admit(finding(3, 61))) == 1


def test_a_finding_id_seen_before_never_notifies_again() -> None:
    g = groups()
    assert len(g.admit(finding(1, 0))) == 1
    g.close_due(T0 + timedelta(minutes=30))
    assert g.admit(finding(1, 0)) == []
    assert g.admit(finding(1, 31)) == []  # same id, whatever its time says
    assert g.suppressed["duplicate"] == 2
    g.admit(finding(9, 0, rule_id="SEP-003"))
    assert g.admit(finding(9, 0, rule_id="SEP-003")) == []


def test_ids_remembered_from_an_earlier_run_do_not_notify() -> None:
    g = groups()
    g.remember("f1", T0)
    assert g.admit(finding(1, 0)) == []
    assert len(g.admit(finding(2, 0))) == 1


def test_seen_ids_are_bounded_by_horizon_and_count() -> None:
    g = groups(seen_horizon=timedelta(hours=1), seen_limit=3)
    for i in range(3):
        g.admit(finding(i, i, user_id=f"u{i}"))
    g.admit(finding(10, 5, user_id="u10"))
    assert "f0" not in g.seen and len(g.seen) == 3  # the limit evicts the oldest
    g.admit(finding(11, 120, user_id="u11"))  # two hours on: older ids forgotten
    assert list(g.seen) == ["f11"]


def test_out_of_order_findings_fold_into_the_open_group() -> None:
    g = groups()
    assert len(g.admit(finding(1, 10))) == 1
    assert g.admit(finding(2, 4)) == []  # earlier than the group's first: late, folded
    assert g.admit(finding(3, 24)) == []  # within [10, 25)
    assert g.close_due(T0 + timedelta(minutes=24)) == []
    (n,) = g.close_due(T0 + timedelta(minutes=25))
    assert n.count == 3 and n.unreported == 2


def test_the_clock_never_runs_backwards() -> None:
    g = groups()
    g.admit(finding(1, 30))
    g.admit(finding(2, 0, user_id="u2"))
    assert g.clock == T0 + timedelta(minutes=30)


def test_first_matching_route_wins_and_continue_goes_on() -> None:
    crit = finding(1, rule_id="SEP-003", entity="BR-01")
    assert [r.name for r in routes_for(ROUTES, crit)] == ["critical"]
    assert [r.name for r in routes_for(ROUTES, finding(2, entity="BR-02"))] == ["branches"]
    assert [r.name for r in routes_for(ROUTES, finding(3))] == ["rest"]
    low = finding(4, severity="low")
    assert routes_for(ROUTES, low) == []
    chained = [Route.model_validate({**ROUTES[0].model_dump(), "continue": True}), *ROUTES[1:]]
    assert [r.name for r in routes_for(chained, crit)] == ["critical", "branches"]


def test_an_unrouted_notification_has_no_channels() -> None:
    g = groups()
    (n,) = g.admit(finding(1, severity="low"))
    assert n.channels == () and n.route is None


def test_a_replaced_policy_routes_what_comes_next() -> None:
    g = groups()
    g.set_policy(AlertingPolicy(routes=[Route(name="all", channels=["audit"])]))
    (n,) = g.admit(finding(1))
    assert n.channels == ("audit",) and n.route == "all"


def test_route_problems_name_every_unknown_channel_and_match_key() -> None:
    routes = [
        Route(name="a", match={"severity": "urgent"}, channels=["pager"]),
        Route(name="b", match={"user_id": "u1"}, channels=["nowhere", "chat"]),
        Route(name="c", channels=[]),
    ]
    problems = route_problems(routes, ["pager", "chat"])
    assert len(problems) == 4
    assert any("'urgent'" in p for p in problems)
    assert any("'user_id'" in p for p in problems)
    assert any("'nowhere'" in p for p in problems)
    assert any("names no channel" in p for p in problems)
    assert route_problems(ROUTES, ["pager", "chat", "branch-mail"]) == []


def test_group_key_is_stable_and_carries_no_identifier() -> None:
    key = group_key(("SEP-001", "u1234567", "d1", None))
    assert key == group_key(("SEP-001", "u1234567", "d1", None))
    assert key != group_key(("SEP-001", "u1234567", "d1", "notion"))
    assert "u1234567" not in key and key.startswith("sepwatch-")


def test_notifications_mask_identifiers_in_free_text() -> None:
    g = groups()
    (n,) = g.admit(finding(1, summary="upload with 900101-1234567 and card 1234-5678-9012-3456"))
    assert "1234567" not in n.summary and "9012-3456" not in n.text()
    assert "900101-1******" in n.summary


def test_notification_ids_are_stable_across_runs() -> None:
    a, b = groups(), groups()
    assert a.admit(finding(1))[0].id == b.admit(finding(1))[0].id
    closed_a, fired_a = a.admit(finding(2, 20))
    closed_b, fired_b = b.admit(finding(3, 20))
    assert closed_a.id == closed_b.id and fired_a.id != fired_b.id


# --- channel formats and signing (no network) ---------------------------------


def test_signature_verifies_and_refuses_tampering_and_stale_timestamps() -> None:
    body = b'{"a": 1}'
    sig = signature("s3cret", "1000", body)
    assert sig.startswith("sha256=") and len(sig) == 7 + 64
    assert verify_signature("s3cret", "1000", body, sig, tolerance_s=300, now=1100)
    assert not verify_signature("other", "1000", body, sig, tolerance_s=300, now=1100)
    assert not verify_signature("s3cret", "1000", b'{"a": 2}', sig, tolerance_s=300, now=1100)
    assert not verify_signature("s3cret", "1001", body, sig, tolerance_s=300, now=1100)
    assert not verify_signature("s3cret", "1000", body, sig, tolerance_s=300, now=1301)
    assert not verify_signature("s3cret", "soon", body, sig, tolerance_s=300, now=1100)


def test_pagerduty_events_use_the_group_key_and_map_severity() -> None:
    cfg = ChannelSettings(kind="pagerduty", routing_key="R" * 32)
    pd = PagerDutyChannel("pager", cfg, link_base="https://kibana.example/f/")
    g = groups()
    (n,) = g.admit(finding(1, rule_id="SEP-003"))
    event = pd.payload(n)
    assert event["event_action"] == "trigger" and event["dedup_key"] == n.group_key
    assert event["payload"]["severity"] == "critical" and event["payload"]["source"] == "sepwatch"
    assert event["links"] == [{"href": "https://kibana.example/f/f1", "text": "Finding"}]
    (closed,) = g.close_due(T0 + timedelta(hours=1))
    resolve = pd.payload(closed)
    assert resolve == {"routing_key": "R" * 32, "event_action": "resolve", "dedup_key": n.group_key}
    (m,) = g.admit(finding(2, 61, rule_id="SEP-007"))
    assert pd.payload(m)["payload"]["severity"] == "warning"


def test_alertmanager_alert_resolves_on_close() -> None:
    am = AlertmanagerChannel("oncall", ChannelSettings(kind="alertmanager", url="http://am"))
    g = groups()
    (n,) = g.admit(finding(1))
    now = T0 + timedelta(seconds=5)
    (alert,) = am.payload(n, now=now)
    assert alert["labels"]["alertname"] == "SEP-001"
    assert alert["labels"]["group_key"] == n.group_key
    assert "generatorURL" not in alert  # no link base configured
    assert datetime.fromisoformat(alert["endsAt"]) == now + timedelta(minutes=15)
    (closed,) = g.close_due(T0 + timedelta(minutes=15))
    (done,) = am.payload(closed, now=now)
    assert datetime.fromisoformat(done["endsAt"]) == now


def test_slack_blocks_escape_and_resolved_only_when_news() -> None:
    slack = SlackChannel("chat", ChannelSettings(kind="slack", url="https://s"), link_base="k/")
    g = groups()
    (n,) = g.admit(finding(1, summary="a <b> & c"))
    body = slack.payload(n)
    assert body["blocks"][0]["type"] == "header"
    assert body["blocks"][1]["text"]["text"] == "a &lt;b&gt; &amp; c"
    assert "<k/f1|Open the finding>" in str(body["blocks"])
    assert slack.wants(n)
    (quiet,) = g.close_due(T0 + timedelta(hours=1))
    assert not slack.wants(quiet)
    g.admit(finding(2, 61))
    g.admit(finding(3, 62))
    (news,) = g.close_due(T0 + timedelta(hours=2))
    assert slack.wants(news)


def test_channel_problems_list_every_missing_field() -> None:
    problems = channel_problems(
        {
            "hook": ChannelSettings(kind="webhook", url="ftp://x"),
            "pager": ChannelSettings(kind="pagerduty"),
            "mail": ChannelSettings(kind="email"),
            "am": ChannelSettings(kind="alertmanager", url="http://am:9093"),
        }
    )
    assert len(problems) == 6
    assert not any(p.startswith("channels.am") for p in problems)


def test_finding_link_placeholder_or_suffix() -> None:
    assert finding_link("https://k/{finding_id}/view", "f1") == "https://k/f1/view"
    assert finding_link("https://k/?id=", "f1") == "https://k/?id=f1"
    assert finding_link("", "f1") == ""


@pytest.mark.parametrize(("failures", "ceiling"), [(1, 1.0), (2, 2.0), (3, 4.0), (10, 8.0)])
def test_backoff_doubles_with_jitter_up_to_the_cap(failures: int, ceiling: float) -> None:
    retry = RetryPolicy(attempts=5, first_s=1.0, cap_s=8.0)
    for _ in range(50):
        assert ceiling / 2 <= retry.delay(failures) <= ceiling
    assert retry.delay(failures, retry_after=3.0) == min(3.0, 8.0)
    assert retry.delay(failures, retry_after=100.0) == 8.0
