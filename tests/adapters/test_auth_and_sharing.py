"""What the adapters say of a sign-in's factors (`auth`, SEP-010) and of a
share's reach (`share_target`, `shared_with_domain`, SEP-011), on records
as the vendors publish them (provenance beside each file in
tests/fixtures/vendors), and those records through `sepwatch replay --format`
with the example policy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from adapters.canonical import domain_of, shared_with
from adapters.mapping import VendorMapping, parse_mapping
from cli.main import app
from schemas.policy_file import PolicyError
from tests.adapters.conftest import MAPPING, POLICY, VENDORS, adapt_file

runner = CliRunner()


def accesses(source: str, name: str, mapping: VendorMapping) -> dict[str, dict[str, Any]]:
    adapted = adapt_file(source, name, mapping)
    assert adapted.dead == [], adapted.dead
    return {e["event_id"]: e for e in adapted.events if e["stream"] == "saas_access"}


def share(event: dict[str, Any]) -> tuple[str | None, str | None]:
    assert event["action"] == "share"
    return event["share_target"], event["shared_with_domain"]


# -- SEP-010: auth.mfa ----------------------------------------------------------


def test_entra_authentication_requirement_and_mfa_detail_say_the_factor(
    mapping: VendorMapping,
) -> None:
    single = accesses("entra-signin", "entra-signin-logs-elastic.jsonl", mapping)
    (signin,) = single.values()
    assert signin["auth"] == {"mfa": False, "method": "Previously satisfied"}
    multi = accesses("entra-signin", "entra-signin-mfa-graph.json", mapping)
    # `MultifactorAuthentication`, as Microsoft's example writes it.
    assert multi["66ea54eb-blah-4ee5-be62-ff5a759b0100"]["auth"] == {
        "mfa": True,
        "method": "FIDO2, Claim in access token",
    }
    # No authenticationRequirement; mfaDetail names the method: MFA was done.
    assert multi["id"]["auth"] == {"mfa": True, "method": "Phone Auth"}


def test_entra_sign_in_that_does_not_say_leaves_auth_null(mapping: VendorMapping) -> None:
    # Microsoft's v1.0 examples: no authenticationRequirement, no mfaDetail.
    got = accesses("entra-signin", "entra-signin-graph-page.json", mapping)
    assert got and [e["auth"] for e in got.values()] == [None] * len(got)


def test_google_login_challenge_says_the_factor(mapping: VendorMapping) -> None:
    adapted = adapt_file("google-workspace", "google-workspace-login-elastic.log", mapping)
    by_method = {e["auth"]["method"]: e["auth"]["mfa"] for e in adapted.events}
    assert by_method == {"backup_code": True, "password": False}
    # login_failure and login_verification are no sign-in to an app: skipped.
    assert adapted.counts.skipped == {"login login_failure": 1, "login login_verification": 1}


def test_google_login_without_a_challenge_does_not_say(mapping: VendorMapping) -> None:
    from adapters.google_workspace import _auth

    assert _auth([{"name": "login_type", "value": "saml"}]) is None
    assert _auth([{"name": "is_second_factor", "boolValue": True}]) == {
        "mfa": True,
        "method": None,
    }
    unknown = [{"name": "login_challenge_method", "multiValue": ["password", "login_location"]}]
    assert _auth(unknown) == {"mfa": None, "method": "password, login_location"}


def test_okta_single_sign_on_does_not_say_whether_the_session_was_multi_factor(
    mapping: VendorMapping,
) -> None:
    """It names its session where it has one: the session's factor checks
    may say (tests/adapters/test_okta.py)."""
    got = accesses_or_dead("okta", "okta-logs-page.json", mapping)
    logins = [e for e in got.values() if e["stream"] == "saas_access"]
    assert [e["auth"] for e in logins] == [
        {"mfa": None, "method": None, "session": "102aBcDeFgHiJkLmNoPqRsT"},
        None,
        None,
    ]


# -- SEP-011: share_target and shared_with_domain -------------------------------


def test_m365_anonymous_links_are_public_and_other_groups_do_not_say(
    mapping: VendorMapping,
) -> None:
    got = accesses("m365", "m365-sharing-elastic.json", mapping)
    assert share(got["1cb54d72-3a76-4a7c-7b3d-08d7b17b4ec9"]) == ("public", None)
    # SharingSet to the link's own group `SharingLinks.<item>.AnonymousEdit.<id>`
    assert share(got["a8c23ab8-9447-4824-3208-08d7b17b4e5e"]) == ("public", None)
    assert share(got["88a041e3-2f3a-483c-cf76-08d7b17b4e5b"]) == (None, None)
    assert share(got["98633e47-3540-4e8a-bcfc-08d7b17b4e48"]) == (None, None)


def test_m365_guest_is_external_with_its_domain(mapping: VendorMapping) -> None:
    got = accesses("m365", "m365-sharing-panther.json", mapping)
    assert share(got["111-aa-234-external-user"]) == ("external", "external.io")
    assert share(got["111-aa-234-allowed-domain"]) == ("external", "alloweddomain.com")
    assert share(got["111-aa-234-internal-share"]) == (None, None)  # "NotGuest": not said


def test_m365_members_organisation_links_and_own_domains_are_internal(
    mapping: VendorMapping,
) -> None:
    got = accesses("m365", "m365-sharing-lookalike.json", mapping)
    assert share(got["lookalike-invite-member"]) == ("internal", "bank.example")
    assert share(got["lookalike-invite-guest-ext"]) == ("external", "fabrikam.com")
    assert share(got["lookalike-company-link"]) == ("internal", None)
    assert share(got["lookalike-guest-own-domain"]) == ("internal", "hq.bank.example")
    assert share(got["lookalike-secure-link"]) == (None, None)
    assert share(got["lookalike-guest-partner"]) == ("external", "kftc.or.kr")


def test_google_drive_visibility_and_user_access(mapping: VendorMapping) -> None:
    adapted = adapt_file("google-workspace", "google-workspace-drive-acl-elastic.log", mapping)
    assert [share(e) for e in adapted.events] == [
        ("public", None),  # change_acl_editors, visibility people_with_link
        ("public", None),  # change_document_access_scope
        ("public", None),  # change_document_visibility
        ("external", "example.com"),  # change_user_access, target_user
    ]
    looks = adapt_file("google-workspace", "google-workspace-drive-acl-lookalike.log", mapping)
    assert [share(e) for e in looks.events] == [
        ("internal", "bank.example"),
        ("external", "kftc.or.kr"),
        ("internal", None),  # made private
    ]


def test_google_drive_views_carry_no_share_target(mapping: VendorMapping) -> None:
    # Every Drive event carries the document's `visibility`; only a share reads it.
    adapted = adapt_file("google-workspace", "google-workspace-drive-elastic.log", mapping)
    assert {e["share_target"] for e in adapted.events if e["action"] != "share"} == {None}


def test_slack_public_link_is_public(mapping: VendorMapping) -> None:
    got = accesses_or_dead("slack", "slack-audit-page.json", mapping)
    assert share(got["9a8b7c6d-1e2f-4a3b-8c4d-5e6f7a8b9c02"]) == ("public", None)
    assert got["9a8b7c6d-1e2f-4a3b-8c4d-5e6f7a8b9c01"]["share_target"] is None  # an upload


def accesses_or_dead(source: str, name: str, mapping: VendorMapping) -> dict[str, Any]:
    # These pages also hold records their own tests dead-letter on purpose.
    return {e["event_id"]: e for e in adapt_file(source, name, mapping).events}


def test_domains_are_read_and_checked(mapping: VendorMapping) -> None:
    assert domain_of(" Outsider@EXTERNAL.IO ") == "external.io"
    assert domain_of("SHAREPOINT\\system") is None
    assert domain_of("Everyone except external users") is None
    assert shared_with(mapping, "a@sub.hanbit-bank.example") == (
        "internal",
        "sub.hanbit-bank.example",
    )
    assert shared_with(mapping, "a@notbank.example") == ("external", "notbank.example")
    with pytest.raises(PolicyError) as refused:
        parse_mapping("internal_domains: [bank.example, BANK.example, 'not a domain']\n")
    reasons = " ".join(p.reason for p in refused.value.problems)
    assert "internal_domains[2]" in " ".join(p.path for p in refused.value.problems)
    assert "string should match pattern" in reasons.lower()


def test_a_domain_listed_twice_is_refused() -> None:
    with pytest.raises(PolicyError) as refused:
        parse_mapping("internal_domains: [bank.example, BANK.example]\n")
    assert "domain listed twice: bank.example" in refused.value.problems[0].reason


# -- end to end: the vendor records through replay with the example policy ------


def replay(tmp_path: Path, source: str, events: Path) -> list[dict[str, Any]]:
    out = tmp_path / f"{events.name}.findings.jsonl"
    result = runner.invoke(
        app,
        ["replay", "--format", source, "-e", str(events), "-o", str(out),
         "-p", str(POLICY), "--mapping", str(MAPPING), "-q"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in out.read_text().splitlines()]


def fired(findings: list[dict[str, Any]], rule: str) -> set[str]:
    return {f["evidence_event_ids"][0] for f in findings if f["rule_id"] == rule}


SHARES = [
    (
        "m365",
        "m365-sharing-elastic.json",
        {"1cb54d72-3a76-4a7c-7b3d-08d7b17b4ec9", "a8c23ab8-9447-4824-3208-08d7b17b4e5e"},
    ),
    (
        "m365",
        "m365-sharing-panther.json",
        {"111-aa-234-external-user", "111-aa-234-allowed-domain"},
    ),
    ("m365", "m365-sharing-lookalike.json", {"lookalike-invite-guest-ext"}),
    ("slack", "slack-audit-page.json", {"9a8b7c6d-1e2f-4a3b-8c4d-5e6f7a8b9c02"}),
    ("google-workspace", "google-workspace-drive-acl-lookalike.log", set()),
]


@pytest.mark.parametrize(("source", "name", "expected"), SHARES)
def test_replay_finds_sep011_on_the_shares_that_leave_and_only_those(
    tmp_path: Path, source: str, name: str, expected: set[str]
) -> None:
    assert fired(replay(tmp_path, source, VENDORS / name), "SEP-011") == expected


def test_replay_finds_sep011_on_each_google_drive_share_out(
    tmp_path: Path, mapping: VendorMapping
) -> None:
    found = replay(tmp_path, "google-workspace", VENDORS / "google-workspace-drive-acl-elastic.log")
    ids = [e["event_id"] for e in adapt_file(
        "google-workspace", "google-workspace-drive-acl-elastic.log", mapping
    ).events]  # fmt: skip
    assert fired(found, "SEP-011") == set(ids)  # three public, one to example.com


def test_replay_finds_sep010_on_the_single_factor_sign_in_only(tmp_path: Path) -> None:
    """The Entra records, moved to a day SharePoint is registered and seen
    from the head office's egress address (time, address and app are the
    deployment's; the factors are the vendor's): the single-factor one fires,
    the multi-factor ones do not."""
    lines = []
    single = json.loads((VENDORS / "entra-signin-logs-elastic.jsonl").read_text())
    multi = json.loads((VENDORS / "entra-signin-mfa-graph.json").read_text())["value"]
    for record in [single, *multi]:
        signin = record.get("properties", record)
        signin.update(
            createdDateTime="2026-06-10T01:00:00Z",
            ipAddress="203.0.113.10",
            appDisplayName="SharePoint Online",
        )
        lines.append(json.dumps(record))
    events = tmp_path / "entra.jsonl"
    events.write_text("\n".join(lines) + "\n")
    found = replay(tmp_path, "entra-signin", events)
    assert fired(found, "SEP-010") == {"933f20c0-efdf-477f-9586-e5cc566d2e00"}


def test_replay_counts_the_okta_sign_ins_that_do_not_say(tmp_path: Path) -> None:
    """Okta's two successful SSOs from the internal network: not judged by
    SEP-010, counted as unsaid in replay's summary."""
    out = tmp_path / "okta.findings.jsonl"
    result = runner.invoke(
        app,
        ["replay", "--format", "okta", "-e", str(VENDORS / "okta-logs-page.json"),
         "-o", str(out), "-p", str(POLICY), "--mapping", str(MAPPING)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "sign-ins not saying whether multi-factor 2" in result.output
    assert fired([json.loads(line) for line in out.read_text().splitlines()], "SEP-010") == set()
