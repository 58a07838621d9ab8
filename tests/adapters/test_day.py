"""A day of raw vendor records through the adapters and the engine (replay):
the findings the scenario was written to produce, and no other."""

from __future__ import annotations

import io
import json

from adapters.mapping import VendorMapping
from schemas.policy_file import load_policy
from streams.replay import replay
from tests.adapters.conftest import POLICY
from tests.adapters.day import EXPECTED, REVIEW_OVERDUE, canonical_day, judged, raw_arrivals


def test_a_day_of_raw_records_gives_the_findings_of_the_scenario(
    mapping: VendorMapping,
) -> None:
    lines, dead = canonical_day(mapping)
    out = io.StringIO()
    summary = replay(load_policy(POLICY), lines, out, io.StringIO())
    assert summary.dead_letters == 0  # every adapted event is a valid canonical event
    findings = [json.loads(line) for line in out.getvalue().splitlines()]
    triggers, overdue = judged(findings)
    assert triggers == EXPECTED
    assert overdue == REVIEW_OVERDUE
    assert [(d["source"], d["field"]) for d in dead] == [("m365", "CreationTime")]
    # SEP-010 from Okta's sessions: Jiwoo's SharePoint SSO follows a push in
    # its session; Minseo's Notion SSO has no factor check, Thanh's session
    # only the password's. No finding either way: what is counted.
    assert summary.engine_stats["auth.mfa_from_session"] == 1
    assert summary.engine_stats["auth.mfa_unknown"] == 2


def test_the_arrival_order_covers_every_record(mapping: VendorMapping) -> None:
    arrivals = raw_arrivals(mapping)
    assert len(arrivals) == 23
    assert sum(a.events for a in arrivals) == 18
    timed = [a.at for a in arrivals if a.at is not None]
    assert timed == sorted(timed)
