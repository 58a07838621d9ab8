"""Okta System Log -> saas_access."""

from __future__ import annotations

from adapters import ADAPTERS
from adapters.intake import adapt_message
from adapters.mapping import VendorMapping
from tests.adapters.conftest import adapt_file


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
        "auth": None,  # an SSO record does not say whether the session was multi-factor
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
