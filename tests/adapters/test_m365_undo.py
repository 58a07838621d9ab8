"""M365 `DlpRuleUndo` as a retraction of the match it names (issue 14,
problem 2's last sentence): the published Exchange undo, and look-alikes."""

from __future__ import annotations

import io
import json

import pytest

from adapters.mapping import VendorMapping
from schemas import DlpAlert
from schemas.policy_file import load_policy
from streams.replay import replay
from streams.retractions import undoes
from tests.adapters.conftest import VENDORS, adapt_file
from tests.integration.conftest import POLICY

SENT_MAIL = "d5a0e7d9-e06f-498c-8413-eb83b7dbd516"
MESSAGE = "<AM0PR05MB4803CDA6206C2F2FEB36DB5AB8EC0@AM0PR05MB4803.eurprd05.prod.outlook.com>"
MAIL_RULES = ["51e3d97a-e159-4645-9092-608bd24e083a", "51e3d97a-1234-4645-9092-608bd24e083a"]


def test_the_published_exchange_undo_is_a_retraction_naming_its_match(
    mapping: VendorMapping,
) -> None:
    got = adapt_file("m365", "m365-dlp-elastic.json", mapping).by_id()
    match, undo = got[SENT_MAIL], got[f"{SENT_MAIL}:undo"]
    # The same person, workload, message and rules; its own event id.
    assert undo["user_id"] == match["user_id"] == "asr@testsiem2.onmicrosoft.com"
    assert (
        undo["match_ref"]
        == match["match_ref"]
        == {
            "workload": "Exchange",
            "object_id": MESSAGE,
            "rule_ids": MAIL_RULES,
        }
    )
    assert undo["retraction"] == {"operation": "DlpRuleUndo", "reason": None}
    assert (undo["data_types"], undo["match_count"]) == ([], 0)
    assert "retraction" not in match
    DlpAlert.model_validate(undo)


def test_an_undo_names_the_rules_of_its_exception_and_a_masked_reason(
    mapping: VendorMapping,
) -> None:
    run = adapt_file("m365", "m365-dlp-undo-lookalike.json", mapping)
    assert not run.dead
    match, other_rule, other_doc, undo = run.events
    assert "retraction" not in match and match["data_types"] == ["kr_rrn"]
    assert other_rule["match_ref"]["rule_ids"] == ["9f8e7d6c-5b4a-4938-a7b6-c5d4e3f2a1b0"]
    assert other_doc["match_ref"]["object_id"] != match["match_ref"]["object_id"]
    assert undo["match_ref"] == match["match_ref"]
    reason = undo["retraction"]["reason"]
    assert reason.startswith("FalsePositive: Test numbers")
    assert "1234567" not in reason  # the RRN the justification quotes


def test_an_undo_that_names_no_rule_is_a_dead_letter(mapping: VendorMapping) -> None:
    from adapters import ADAPTERS
    from adapters.intake import adapt_message

    [record] = json.loads((VENDORS / "m365-dlp-elastic.json").read_text())[3:4]
    record = {**record, "PolicyDetails": []}
    outcome = adapt_message(ADAPTERS["m365"], json.dumps(record).encode(), mapping, {})
    assert not outcome.events
    [letter] = outcome.dead_letters
    assert "cannot say which match it undoes" in letter["reason"]


def _retraction(**ref: object) -> DlpAlert:
    return DlpAlert.model_validate(
        {
            "stream": "dlp_alert",
            "event_id": "u1:undo",
            "timestamp": "2026-05-04T00:25:40Z",
            "entity": "HQ",
            "user_id": "jiwoo.kim@bank.example",
            "channel": "saas_upload",
            "data_types": [],
            "match_count": 0,
            "source": "m365",
            "match_ref": {"workload": "OneDrive", "object_id": "doc-1", "rule_ids": ["r1"], **ref},
            "retraction": {"operation": "DlpRuleUndo", "reason": "FalsePositive"},
        }
    )


MATCH = {"source": "m365", "workload": "OneDrive", "object_id": "doc-1", "rule_ids": ["r1"]}


@pytest.mark.parametrize(
    ("found", "undone"),
    [
        (MATCH, True),
        # A rule of the match not undone: the data still left under it.
        ({**MATCH, "rule_ids": ["r1", "r2"]}, False),
        ({**MATCH, "object_id": "doc-2"}, False),
        ({**MATCH, "workload": "SharePoint"}, False),
        ({**MATCH, "source": "netskope"}, False),
        ({**MATCH, "rule_ids": []}, False),
        (None, False),  # a finding of an alert that named no match
    ],
)
def test_a_retraction_undoes_only_the_findings_of_its_match(
    found: dict[str, object] | None, undone: bool
) -> None:
    details = {"data_types": ["kr_rrn"]} if found is None else {"match_ref": found}
    assert undoes(details, _retraction()) is undone


def test_a_retraction_of_more_rules_than_matched_undoes_the_match() -> None:
    assert undoes({"match_ref": MATCH}, _retraction(rule_ids=["r1", "r2"]))


def test_rules_keep_the_match_ref_and_judge_no_retraction(mapping: VendorMapping) -> None:
    run = adapt_file("m365", "m365-dlp-undo-lookalike.json", mapping)
    lines = [json.dumps(e) for e in run.events]
    out = io.StringIO()
    result = replay(load_policy(POLICY), lines, out, io.StringIO())
    [finding] = [json.loads(line) for line in out.getvalue().splitlines()]
    assert finding["rule_id"] == "SEP-003"
    assert finding["details"]["match_ref"] == {"source": "m365", **run.events[0]["match_ref"]}
    assert result.engine_stats["dlp.retractions"] == 3


def test_a_dlp_alert_held_in_state_before_match_ref_was_kept_still_loads() -> None:
    from detectors.engine import _dlp_view

    # A pending decision's view as a changelog wrote it (JSON: lists for tuples).
    old = [1.0, "e1", "HQ", "u1", None, "email", None, ["kr_rrn"], 2, None, None, "m365"]
    assert _dlp_view(old).match_ref is None
    new = [*old, ["Exchange", "<m@x>", ["r1", "r2"]]]
    assert _dlp_view(json.loads(json.dumps(new))).match_ref == ("Exchange", "<m@x>", ("r1", "r2"))
