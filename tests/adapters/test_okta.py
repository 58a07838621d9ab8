"""Okta System Log -> saas_access."""

from __future__ import annotations

import io
import json

import pytest

from adapters import ADAPTERS
from adapters.intake import adapt_message
from adapters.mapping import VendorMapping, load_mapping, parse_mapping
from schemas.policy_file import load_policy
from streams.replay import replay
from tests.adapters.conftest import MAPPING, POLICY, VENDORS, adapt_file


def test_single_sign_on_is_a_login_to_the_target_app(mapping: VendorMapping) -> None:
    got = adapt_file("okta", "okta-logs-page.json", mapping).by_id()
    sso = got["b8f1c2d4-5e6f-11f0-9a1b-0242ac120002"]
    assert sso == {
        "stream": "saas_access",
        "event_id": "b8f1c2d4-5e6f-11f0-9a1b-0242ac120002",
        "timestamp": "2026-11-23T00:05:10.214000+00:00",
        "entity": "HQ",
        "user_id": "jiwoo.park@hanbit-bank.example",
        "device_id": "guo1a2b3c4d5e6f7g8h9",
        "saas_app": "m365-sharepoint",
        "action": "login",
        "network_zone": "internal",
        "src_ip": "203.0.113.10",
        "object": None,
        # An SSO record does not say whether the session was multi-factor;
        # it names the session, whose factor checks may say.
        "auth": {"mfa": None, "method": None, "session": "102aBcDeFgHiJkLmNoPqRsT"},
        "share_target": None,
        "shared_with_domain": None,
        "source": "okta",
    }


def test_unknown_app_passes_through_and_branch_egress_names_the_branch(
    mapping: VendorMapping,
) -> None:
    got = adapt_file("okta", "okta-logs-page.json", mapping).by_id()
    notion = got["c9a2d3e5-5e6f-11f0-9a1b-0242ac120002"]
    assert notion["saas_app"] == "notion"  # not in the registry: SEP-001 will see it
    assert (notion["network_zone"], notion["entity"]) == ("internal", "BR-SEOUL-GN")
    assert notion["device_id"] is None  # Okta did not know the device
    jira = got["d0b3e4f6-5e6f-11f0-9a1b-0242ac120002"]
    assert (jira["saas_app"], jira["network_zone"]) == ("jira-cloud", "external")


def test_okta_own_sessions_group_changes_and_failures_are_counted_not_dead(
    mapping: VendorMapping,
) -> None:
    run = adapt_file("okta", "okta-logs-page.json", mapping)
    assert run.counts.skipped == {
        "eventType user.session.start": 1,
        "eventType group.user_membership.add": 1,
        "user.authentication.sso FAILURE": 1,
    }
    assert run.counts.records == 7
    # Three sign-ons, and the device posture the first one carries.
    assert [e["stream"] for e in run.events] == ["saas_access", "device_posture"] + [
        "saas_access"
    ] * 2


def test_a_sign_on_without_an_address_is_dead_lettered_with_its_field(
    mapping: VendorMapping,
) -> None:
    run = adapt_file("okta", "okta-logs-page.json", mapping)
    assert len(run.dead) == 1
    letter = run.dead[0]
    assert letter["source"] == "okta"
    assert letter["field"] == "client.ipAddress"
    assert "network zone" in letter["reason"]
    assert letter["record"] == 6 and letter["line"] == 1


def test_event_hook_envelope_and_user_rule_for_the_subsidiary(mapping: VendorMapping) -> None:
    run = adapt_file("okta", "okta-event-hook.json", mapping)
    [event] = run.events
    assert event["saas_app"] == "dooray"
    assert event["entity"] == "SUB-VN"
    assert event["network_zone"] == "internal"


def test_skip_kinds_are_vendor_text_and_counted_masked(mapping: VendorMapping) -> None:
    record = b'{"eventType": "custom.900101-1234568", "uuid": "x"}'
    outcome = adapt_message(ADAPTERS["okta"], record, mapping, {})
    assert outcome.skipped == ["eventType custom.900101-1******"]


# -- SEP-010: an SSO's session and the factors verified in it ------------------

OIE = "okta-oie-session-tomisp.json"  # published: a FastPass check, then an SSO to Slack
FASTPASS, SSO = "ef9d0ff8-69e1-11ee-aed0-d39d5439862e", "f025059e-69e1-11ee-8e73-b56d7f19b1e1"
SESSION = "idxyzP_uMC7Rea35TYTYjVUuA"


def test_a_factor_check_is_a_verify_of_the_session_the_sso_names(mapping: VendorMapping) -> None:
    run = adapt_file("okta", OIE, mapping)
    got = run.by_id()
    verify, sso = got[FASTPASS], got[SSO]
    assert (verify["action"], verify["saas_app"]) == ("verify", "okta")
    assert verify["auth"] == {
        "mfa": True,
        "method": "Okta Verify: Use Okta FastPass",
        "session": SESSION,
    }
    assert verify["user_id"] == sso["user_id"] == "user.9986445d56@apzfmss.com"
    assert (sso["action"], sso["saas_app"]) == ("login", "slack")
    assert sso["auth"] == {"mfa": None, "method": None, "session": SESSION}
    # The other check is of another session; the membership change is no access.
    assert got["01604420-6881-11ee-8754-050a89ee763e"]["auth"]["session"] != SESSION
    assert run.counts.skipped == {"eventType application.user_membership.add": 1}


def test_the_password_check_is_no_second_factor_and_unknown_sessions_name_none(
    mapping: VendorMapping,
) -> None:
    """Okta Identity Engine logs the password's check as auth_via_mfa too;
    an API client's SSO has the session `unknown`."""
    run = adapt_file("okta", "okta-sekoia-factor-and-sso.json", mapping)
    assert run.counts.skipped == {"user.authentication.auth_via_mfa Password": 1}
    [sso] = run.events
    assert (sso["action"], sso["auth"]) == ("login", None)


def test_a_failed_or_sessionless_factor_check_is_skipped(mapping: VendorMapping) -> None:
    [record] = [r for r in json.loads((VENDORS / OIE).read_text()) if r["uuid"] == FASTPASS]
    failed = {**record, "outcome": {"result": "FAILURE", "reason": "INVALID_CREDENTIALS"}}
    outcome = adapt_message(ADAPTERS["okta"], json.dumps(failed).encode(), mapping, {})
    assert (outcome.events, outcome.skipped) == ([], ["eventType user.authentication.auth_via_mfa"])
    context = {**record["authenticationContext"], "externalSessionId": "unknown"}
    alone = {**record, "authenticationContext": context}
    outcome = adapt_message(ADAPTERS["okta"], json.dumps(alone).encode(), mapping, {})
    assert outcome.skipped == ["user.authentication.auth_via_mfa no session"]


@pytest.mark.parametrize("order", ["as published", "sso first"])
def test_replay_judges_the_published_sso_multi_factor_by_its_session(order: str) -> None:
    """The published pair, seen from the internal network (its address as
    an egress proxy of HQ): the SSO does not say, the FastPass check before
    it in its session does, in either arrival order within the lateness."""
    policy = load_policy(POLICY)
    text = MAPPING.read_text().replace(
        "egress_proxies:\n", "egress_proxies:\n  - {ip: 203.0.113.0, entity: HQ}\n"
    )
    mapping = parse_mapping(text, str(MAPPING), {a.app_id for a in policy.registry})
    events = adapt_file("okta", OIE, mapping).events
    assert {e["network_zone"] for e in events if e["stream"] == "saas_access"} == {"internal"}
    if order == "sso first":
        events.sort(key=lambda e: e["event_id"] != SSO)
    lines = [json.dumps(e).encode() for e in events]
    summary = replay(policy, lines, io.StringIO(), io.StringIO())
    assert summary.engine_stats["auth.mfa_from_session"] == 1
    assert summary.engine_stats["auth.mfa_unknown"] == 0


def test_the_sso_alone_stays_unsaid() -> None:
    policy = load_policy(POLICY)
    mapping = load_mapping(MAPPING, policy)
    sso = [e for e in adapt_file("okta", OIE, mapping).events if e["event_id"] == SSO]
    sso[0]["network_zone"] = "internal"  # as above, without its session's check
    summary = replay(policy, [json.dumps(sso[0]).encode()], io.StringIO(), io.StringIO())
    assert summary.engine_stats["auth.mfa_unknown"] == 1
    assert summary.engine_stats["auth.mfa_from_session"] == 0
