"""Properties the engine must hold for any input (hypothesis)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from detectors import Engine
from schemas import POSTURE_CONTROLS, EventAdapter, Policy
from tests import cases

# A two-hour window around the first due date of SEP-008 (2026-10-20) so
# that every rule can fire inside it, SEP-008/009 included.
START = datetime(2026, 10, 20, 23, 0, tzinfo=UTC)
SPAN = 2 * 3600
LATENESS = 60


def _policy() -> Policy:
    data = cases.base_policy()
    data["review"] = {"baseline": "2026-04-20", "report_within_days": 0}
    data["dlp"] = {"correlation_window": "10m"}
    return Policy.model_validate(data)


POLICY = _policy()
USERS = ["u1", "u2"]
DEVICES = ["d1", "d2", None]
APPS = ["docs", "chat", "crm", "lab", "notion", "legacy-crm"]
SHAS = [None, "a" * 64, "b" * 64]
TYPES = ["kr_rrn", "personal_credit_info", "pseudonymized", "card_number"]


def rrn(draw: Any) -> str:
    """A made-up number of RRN shape (never a real person's)."""
    yy, mm, dd = draw(st.integers(0, 99)), draw(st.integers(1, 12)), draw(st.integers(1, 28))
    tail = draw(st.integers(1, 8)), draw(st.integers(0, 999_999))
    return f"{yy:02d}{mm:02d}{dd:02d}-{tail[0]}{tail[1]:06d}"


@st.composite
def controls(draw: Any) -> dict[str, Any]:
    """A full posture, or a partial one (null: the source does not say), as
    an access log's device assurance gives."""
    full = {
        "managed": draw(st.sampled_from([True, True, False])),
        "edr_running": draw(st.booleans()),
        "disk_encrypted": draw(st.sampled_from([True, True, False])),
        "screen_lock": draw(st.booleans()),
        "jailbroken": draw(st.sampled_from([False, False, True])),
        "os_patch_age_days": draw(st.integers(0, 40)),
    }
    if draw(st.booleans()):
        return full
    said = draw(st.sets(st.sampled_from(sorted(full)), min_size=1))
    return {k: v if k in said else None for k, v in full.items()}


@st.composite
def scenario(draw: Any) -> list[dict[str, Any]]:
    """Events in event-time order (ties allowed)."""
    n = draw(st.integers(1, 30))
    out = []
    for i in range(n):
        ts = START + timedelta(seconds=draw(st.integers(0, SPAN)))
        stamp = ts.isoformat()
        kind = draw(st.sampled_from(["access", "access", "posture", "dlp", "review"]))
        base = {"event_id": f"e{i}", "timestamp": stamp, "source": "prop"}
        entity = draw(st.sampled_from(["HQ", "BR-01"]))
        if kind == "access":
            sha = draw(st.sampled_from(SHAS))
            out.append(
                {
                    **base,
                    "stream": "saas_access",
                    "entity": entity,
                    "user_id": draw(st.sampled_from(USERS)),
                    "device_id": draw(st.sampled_from(DEVICES)),
                    "saas_app": draw(st.sampled_from(APPS)),
                    "action": draw(st.sampled_from(["view", "upload", "share", "edit"])),
                    "network_zone": draw(st.sampled_from(["internal", "internal", "external"])),
                    "object": {"sha256": sha} if sha else None,
                }
            )
        elif kind == "posture":
            out.append(
                {
                    **base,
                    "stream": "device_posture",
                    "entity": entity,
                    "device_id": draw(st.sampled_from(["d1", "d2"])),
                    **draw(controls()),
                }
            )
        elif kind == "dlp":
            sha = draw(st.sampled_from(SHAS))
            out.append(
                {
                    **base,
                    "stream": "dlp_alert",
                    "entity": entity,
                    "user_id": draw(st.sampled_from(USERS)),
                    "device_id": "d1",
                    "channel": draw(st.sampled_from(["saas_upload", "web", "email"])),
                    "saas_app": draw(st.sampled_from([None, "chat", "lab"])),
                    "data_types": draw(st.lists(st.sampled_from(TYPES), min_size=1, max_size=3)),
                    "match_count": 1,
                    "object": {"sha256": sha} if sha else None,
                    "snippet": f"고객 {rrn(draw)} / 여권 M{draw(st.integers(10**7, 10**8 - 1))}",
                }
            )
        else:
            done = ts - timedelta(seconds=draw(st.integers(0, 3 * 3600)))
            reported = draw(st.sampled_from([None, 0, 1800, 7200]))
            out.append(
                {
                    **base,
                    "stream": "control_review",
                    "entity": entity,
                    "reviewer": "ISO",
                    "completed_at": done.isoformat(),
                    "reported_to_committee_at": (done + timedelta(seconds=reported)).isoformat()
                    if reported is not None
                    else None,
                }
            )
    return sorted(out, key=lambda e: e["timestamp"])


def _run(events: list[dict[str, Any]]) -> list[Any]:
    engine = Engine(POLICY, now=lambda: cases.FIXED_NOW)
    return engine.run(EventAdapter.validate_python(e) for e in events)


def _key(findings: list[Any]) -> list[tuple[Any, ...]]:
    return sorted(
        (f.finding_id, f.rule_id, tuple(f.evidence_event_ids), f.status, json.dumps(f.details))
        for f in findings
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario(), st.data())
def test_any_arrival_order_within_lateness_gives_the_same_findings(
    events: list[dict[str, Any]], data: Any
) -> None:
    # Each event arrives up to LATENESS seconds after its own time: sorting by
    # (time + delay) never puts an event more than LATENESS behind the newest.
    delays = [data.draw(st.integers(0, LATENESS)) for _ in events]
    arrival = [
        e
        for _, _, e in sorted(
            (datetime.fromisoformat(e["timestamp"]).timestamp() + d, i, e)
            for i, (e, d) in enumerate(zip(events, delays, strict=True))
        )
    ]
    assert _key(_run(arrival)) == _key(_run(events))


@settings(max_examples=100, deadline=None)
@given(scenario())
def test_same_input_twice_gives_the_same_finding_ids(events: list[dict[str, Any]]) -> None:
    assert [f.finding_id for f in _run(events)] == [f.finding_id for f in _run(events)]


def _upload_and_alerts(*snippets: str) -> list[dict[str, Any]]:
    """An upload and a DLP alert per snippet, at one instant, as scenario() draws them."""
    at = "2026-10-20T23:00:00+00:00"
    base = {"timestamp": at, "source": "prop", "entity": "HQ", "user_id": "u1", "device_id": "d1"}
    upload = {**base, "event_id": "e0", "stream": "saas_access", "saas_app": "docs"}
    upload |= {"action": "upload", "network_zone": "internal", "object": None}
    alerts = [
        {**base, "event_id": f"e{i}", "stream": "dlp_alert", "channel": "saas_upload"}
        | {"saas_app": None, "data_types": ["kr_rrn"], "match_count": 1, "object": None}
        | {"snippet": snippet}
        for i, snippet in enumerate(snippets, 1)
    ]
    return [upload, *alerts]


# A resident registration number's mask shows its first seven digits (YYMMDD-G);
# what it hides is looked for in the masked text without them, since one number's
# hidden digits may be another's shown birth date (found by a CI run).
SHOWN_BY_A_MASK = re.compile(r"\d{6}-\d")


@settings(max_examples=200, deadline=None)
@given(scenario())
@example(
    _upload_and_alerts(
        "고객 000101-1000504 / 여권 M10000000", "고객 000504-1000000 / 여권 M10000000"
    )
)
def test_no_raw_identifier_from_a_snippet_reaches_a_finding(events: list[dict[str, Any]]) -> None:
    found = _run(events)
    output = "\n".join(f.model_dump_json() for f in found)
    masked = " ".join(f.details.get("snippet_masked", "") for f in found)
    hidden_by_masks = SHOWN_BY_A_MASK.sub("#", masked)
    for e in events:
        if e["stream"] == "dlp_alert":
            number, passport = e["snippet"].split(" ")[1], e["snippet"].split(" ")[-1]
            assert number not in output and number.replace("-", "") not in output
            assert passport not in output
            # What the masks hide is nowhere in the masked snippets either.
            assert number[8:] not in hidden_by_masks
            assert passport[:5] not in masked


def _required_failures(value: dict[str, Any]) -> list[str]:
    require = POLICY.posture.require
    return [
        c
        for c in POSTURE_CONTROLS
        if c in value
        and (
            value[c] > require.os_patch_age_days_max
            if c == "os_patch_age_days"
            else value[c] != getattr(require, c)
        )
    ]


def _merged(postures: list[dict[str, Any]], at: float, max_age: float) -> dict[str, Any]:
    """The slow, obvious reading of the posture as of an access: per control,
    the latest posture (larger event id on a tie) that asserts it, at or
    before the access and no older than max_age."""
    value: dict[str, Any] = {}
    for c in POSTURE_CONTROLS:
        said = [
            (datetime.fromisoformat(p["timestamp"]).timestamp(), p["event_id"], p[c])
            for p in postures
            if p[c] is not None
        ]
        said = [s for s in said if s[0] <= at and at - s[0] <= max_age]
        if said:
            value[c] = max(said)[2]
    return value


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario())
def test_posture_rules_judge_the_merge_of_every_posture_per_control(
    events: list[dict[str, Any]],
) -> None:
    # A short max_age, so that controls age out inside the scenario's span.
    policy = POLICY.model_copy(
        update={"posture": POLICY.posture.model_copy(update={"max_age": timedelta(minutes=30)})}
    )
    found = Engine(policy, now=lambda: cases.FIXED_NOW).run(
        EventAdapter.validate_python(e) for e in events
    )
    got = {
        f.evidence_event_ids[0]: (f.rule_id, f.details.get("failed_controls"))
        for f in found
        if f.rule_id in ("SEP-006", "SEP-007")
    }
    want = {}
    for a in events:
        if a["stream"] != "saas_access" or a["network_zone"] != "internal":
            continue
        at = datetime.fromisoformat(a["timestamp"]).timestamp()
        mine = [
            p
            for p in events
            if p["stream"] == "device_posture" and p["device_id"] == a["device_id"]
        ]
        value = _merged(mine, at, 1800.0) if a["device_id"] else {}
        failed = _required_failures(value)
        if failed:
            want[a["event_id"]] = ("SEP-006", failed)
        elif len(value) < len(POSTURE_CONTROLS):
            want[a["event_id"]] = ("SEP-007", None)
    assert got == want
