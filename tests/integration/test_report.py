"""The semiannual review on real servers: reviews recorded on Kafka, the
report built from findings in a real Elasticsearch."""

from __future__ import annotations

import io
import json
import re
import statistics
import subprocess
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from elasticsearch import Elasticsearch
from elasticsearch.helpers import bulk
from PIL import Image
from typer.testing import CliRunner

from bench.harness import wait_until
from cli.main import app as cli
from detectors import mask_identifier
from detectors.calendar import Days
from review.accesses import count_internal_accesses, store_counts
from review.gather import STATUSES, gather
from review.model import Report
from review.period import Period
from review.reviews import merge, new_review, publish, read_reviews
from schemas import Finding
from schemas.policy import ReviewPolicy
from schemas.policy_file import load_policy
from simulator.day import simulate
from streams.elastic import document, index_for
from streams.indices import put_template
from streams.kafka_io import admin, ensure_topics, topic_config
from streams.lifecycle import os_actor, record
from streams.policy_history import read_versions, record_if_changed
from streams.replay import replay
from streams.settings import Settings
from streams.topics import Topics
from tests.integration.conftest import POLICY

pytestmark = pytest.mark.integration
runner = CliRunner()
KST = ZoneInfo("Asia/Seoul")  # the example policy's zone


def _sep008(policy: Any, lines: list[bytes]) -> list[dict[str, Any]]:
    out = io.StringIO()
    replay(policy, lines, out, io.StringIO())
    found = [json.loads(x) for x in out.getvalue().splitlines()]
    return [f for f in found if f["rule_id"] == "SEP-008"]


def _retention(broker: str, topic: str) -> str | None:
    client = admin(broker)
    try:
        return topic_config(client, [topic], "retention.ms")[topic]
    finally:
        client.close()


def test_a_recorded_review_is_on_the_topic_listed_with_its_next_due_date_and_resets_sep008(
    broker: str, prefix: str
) -> None:
    env = {"SEPWATCH_BROKER": broker, "SEPWATCH_TOPIC_PREFIX": prefix, "COLUMNS": "220"}
    now = datetime.now(UTC)
    completed = (now - timedelta(days=1)).replace(microsecond=0)
    args = ["review", "record", "--entity", "HQ", "--reviewer", "정보보호부 김OO"]
    done = runner.invoke(
        cli,
        [*args, "--completed-at", completed.isoformat(), "--controls", "SEP-001, SEP-006"],
        env=env,
    )
    assert done.exit_code == 0, done.output
    # Kept forever; the broker shows an accepted change a moment later.
    reviews = Topics(prefix).input("control_review")
    wait_until(lambda: _retention(broker, reviews) == "-1", f"{reviews} kept forever", 30)
    # The report to the committee, recorded afterwards for the same review.
    reported = completed + timedelta(hours=5)
    again = runner.invoke(
        cli,
        [
            *args,
            "--completed-at",
            completed.isoformat(),
            "--reported-at",
            reported.isoformat(),
            "--controls",
            "SEP-008",
        ],
        env=env,
    )
    assert again.exit_code == 0, again.output

    records, skipped = read_reviews(broker, Topics(prefix))
    assert (len(records), skipped) == (2, 0)
    [review] = merge(records)
    assert review.reported_at == reported and review.controls == ("SEP-001", "SEP-006", "SEP-008")

    listed = runner.invoke(cli, ["review", "list", "--entity", "HQ"], env=env)
    assert listed.exit_code == 0, listed.output
    # Shown in the policy's zone (the example policy's is Asia/Seoul).
    assert completed.astimezone(KST).strftime("%Y-%m-%d %H:%M") in listed.output
    assert "completed (Asia/Seoul)" in listed.output
    # Next due: six calendar months after the review (181 to 184 days, by the months).
    assert any(
        (completed.date() + timedelta(days=d)).isoformat() in listed.output for d in range(181, 185)
    ), listed.output
    assert "on time" in listed.output  # reported within 30 days

    # What the engine makes of it: an entity whose baseline was five months
    # ago misses its due date a month from now, unless this review counts.
    base = load_policy(POLICY)
    policy = base.model_copy(
        update={"review": ReviewPolicy(baseline=(now - timedelta(days=150)).date())}
    )
    later = (now + timedelta(days=60)).isoformat()
    access = json.dumps(
        {
            "stream": "saas_access",
            "event_id": "a-1",
            "timestamp": later,
            "entity": "HQ",
            "user_id": "u-1",
            "device_id": "d-1",
            "saas_app": "m365-teams",
            "action": "view",
            "network_zone": "external",
        }
    ).encode()
    without = _sep008(policy, [access])
    assert [f["entity"] for f in without] == ["HQ"]
    reviews = [r.model_dump_json().encode() for r in records]
    assert _sep008(policy, [*reviews, access]) == []
    refused = runner.invoke(
        cli,
        [*args, "--completed-at", "2026-10-15T17:00:00", "--controls", "SEP-001"],
        env=env,
    )
    assert refused.exit_code == 2 and "offset" in refused.output


# -- the report's figures, against counts made directly from the findings ------


def _events(start: datetime, seed: int, hours: float = 3) -> list[bytes]:
    return [
        json.dumps(e, ensure_ascii=False).encode() + b"\n"
        for e in simulate(
            load_policy(POLICY),
            users=60,
            devices=66,
            hours=hours,
            violation_rate=0.06,
            seed=seed,
            start=start,
        )
    ]


def _replayed(lines: list[bytes]) -> list[dict[str, Any]]:
    out = io.StringIO()
    replay(load_policy(POLICY), lines, out, io.StringIO())
    return [json.loads(x) for x in out.getvalue().splitlines()]


def _minutes(f: dict[str, Any]) -> int:
    life = f["lifecycle"]
    span = datetime.fromisoformat(life["resolved_at"]) - datetime.fromisoformat(f["detected_at"])
    return int(span.total_seconds()) // 60


def _work_on(findings: list[dict[str, Any]]) -> None:
    """An analyst's half-year: some findings resolved (after known delays),
    some acknowledged, the rest left open."""
    for n, f in enumerate(sorted(findings, key=lambda f: f["finding_id"])):
        if f["status"] != "open":
            continue
        detected = datetime.fromisoformat(f["detected_at"])
        if n % 3 == 0:
            f["status"] = "resolved"
            at = detected + timedelta(minutes=17 * (n % 11) + 3, seconds=n % 60)
            f["lifecycle"] = {
                "resolved_by": "soc",
                "resolved_at": at.isoformat(),
                "resolve_seconds": int((at - detected).total_seconds()),
            }
            # A few go through the analyst's own path: lifecycle records.
            f["_by_transition"] = n % 7 == 0
        elif n % 13 == 2:
            # Resolved, then reopened: open again, and its resolution undone.
            f["_reopened"] = detected + timedelta(minutes=n % 50 + 1)
        elif n % 5 == 1:
            f["status"] = "acknowledged"
            f["lifecycle"] = {"acknowledged_by": "soc", "acknowledged_at": detected.isoformat()}


def _load(es: Elasticsearch, index: str, findings: list[dict[str, Any]]) -> None:
    put_template(es, index)

    def actions() -> Iterator[dict[str, Any]]:
        for f in findings:
            finding = Finding.model_validate(
                {
                    k: v
                    for k, v in f.items()
                    if k not in ("lifecycle", "_by_transition", "_reopened")
                }
            )
            doc = document(finding)
            if f.get("_by_transition"):
                doc["sepwatch"]["status"] = "open"
            elif "lifecycle" in f:
                doc["sepwatch"]["lifecycle"] = f["lifecycle"]
            yield {
                "_op_type": "create",
                "_index": index_for(finding.timestamp, index),
                "_id": finding.finding_id,
                **doc,
            }

    ok, errors = bulk(es, actions(), chunk_size=1000, refresh="wait_for")
    assert ok == len(findings) and not errors
    for n, f in enumerate(findings):
        if f.get("_by_transition"):
            at = datetime.fromisoformat(f["lifecycle"]["resolved_at"])
            if n % 2:
                record(es, index, f["finding_id"], "acknowledge", at=at - timedelta(seconds=1))
            record(es, index, f["finding_id"], "resolve", at=at, reason="patched")
        if f.get("_reopened"):
            at = f["_reopened"]
            record(es, index, f["finding_id"], "resolve", at=at, reason="thought so")
            record(es, index, f["finding_id"], "reopen", at=at, reason="it came back")


@pytest.fixture
def es(elasticsearch: str) -> Iterator[Elasticsearch]:
    client = Elasticsearch(elasticsearch, request_timeout=60)
    yield client
    client.close()


@pytest.fixture(scope="module")
def history() -> tuple[list[bytes], list[dict[str, Any]]]:
    """Three stretches of simulated traffic replayed: two in 2026H2 (August
    and November), one in the previous half-year (May)."""
    seoul = KST
    lines: list[bytes] = []
    findings: dict[str, dict[str, Any]] = {}
    for start, seed in (
        (datetime(2026, 5, 12, 9, tzinfo=seoul), 3),
        (datetime(2026, 8, 12, 9, tzinfo=seoul), 4),
        (datetime(2026, 11, 23, 9, tzinfo=seoul), 5),
    ):
        chunk = _events(start, seed)
        lines += chunk
        for f in _replayed(chunk):
            findings.setdefault(f["finding_id"], f)
    _work_on(list(findings.values()))
    return lines, list(findings.values())


REVIEWS = [
    new_review(
        "HQ",
        datetime(2026, 10, 15, 8, tzinfo=UTC),
        "정보보호부 김OO",
        ["SEP-001", "SEP-006"],
        reported_at=datetime(2026, 10, 28, 1, tzinfo=UTC),
    ),
    new_review("BR-SEOUL-GN", datetime(2026, 10, 30, 8, tzinfo=UTC), "lee", ["SEP-003"]),
]
AS_OF = date(2026, 12, 1)


def _gather(es: Elasticsearch, index: str, period: str, entity: str | None = None) -> Report:
    return gather(
        es,
        index,
        Period.parse(period, "Asia/Seoul"),
        policy=load_policy(POLICY),
        reviews=REVIEWS,
        entity=entity,
        now=datetime(2026, 12, 1, 9, tzinfo=UTC),
        as_of=AS_OF,
    )


def _in(period: Period, f: dict[str, Any]) -> bool:
    return period.start <= datetime.fromisoformat(f["timestamp"]) < period.end


def _month(f: dict[str, Any]) -> str:
    return datetime.fromisoformat(f["timestamp"]).astimezone(KST).strftime("%Y-%m")


@pytest.fixture(scope="module")
def loaded(elasticsearch: str, history: tuple[list[bytes], list[dict[str, Any]]]) -> str:
    """The history's findings in a fresh findings index, and its access tally."""
    lines, findings = history
    index = f"t{uuid.uuid4().hex[:8]}-findings"
    with Elasticsearch(elasticsearch, request_timeout=60) as es:
        _load(es, index, findings)
        tally, bad = count_internal_accesses(lines, Days("Asia/Seoul"))
        assert bad == 0
        store_counts(es, index, tally)
    return index


def test_every_figure_of_the_report_equals_a_count_made_from_the_findings(
    es: Elasticsearch, history: tuple[list[bytes], list[dict[str, Any]]], loaded: str
) -> None:
    lines, findings = history
    index = loaded
    period = Period.parse("2026H2", "Asia/Seoul")
    mine = [f for f in findings if _in(period, f)]
    before = [f for f in findings if _in(period.previous, f)]
    assert mine and before, "the history should reach both periods"
    statuses = Counter(f["status"] for f in mine)
    assert all(statuses[s] for s in ("open", "acknowledged", "resolved", "waived")), statuses

    report = _gather(es, index, "2026H2")

    assert report.total.current == len(mine) and report.total.previous == len(before)
    for s, change in report.by_status.items():
        assert change.current == statuses[s], s
        assert change.previous == sum(f["status"] == s for f in before), s
    for sev, change in report.by_severity.items():
        assert change.current == sum(f["severity"] == sev for f in mine), sev
    month = Counter(_month(f) for f in mine)  # months of the policy's zone
    assert {m.month: m.count for m in report.by_month} == {m: month[m] for m in period.months()}
    for r in report.rules:
        of = [f for f in mine if f["rule_id"] == r.rule_id]
        assert r.count.current == len(of), r.rule_id
        assert r.count.previous == sum(f["rule_id"] == r.rule_id for f in before), r.rule_id
        assert r.by_status == {s: sum(f["status"] == s for f in of) for s in STATUSES}
        assert [m.count for m in r.by_month] == [
            sum(_month(f) == m for f in of) for m in period.months()
        ]
        resolved = [_minutes(f) for f in of if f["status"] == "resolved"]
        assert r.resolved == r.resolved_timed == len(resolved)
        assert r.median_minutes_to_resolve == (statistics.median(resolved) if resolved else None)
        for top, key, mask in (
            (r.top_users, "user_id", True),
            (r.top_devices, "device_id", True),
            (r.top_apps, "saas_app", False),
        ):
            counted = Counter(f[key] for f in of if f[key])
            want = sorted(counted.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
            assert [(t.label, t.count) for t in top.items] == [
                (mask_identifier(k) if mask else k, n) for k, n in want
            ], (r.rule_id, key)
            assert top.exact
        still = sorted(
            (f for f in of if f["status"] in ("open", "acknowledged")),
            key=lambda f: (f["timestamp"], f["finding_id"]),
        )
        assert r.open_count == len(still)
        assert [i.finding_id for i in r.oldest_open] == [f["finding_id"] for f in still[:10]]
    assert any(r.median_minutes_to_resolve for r in report.rules)
    assert sum(bool(f.get("_by_transition")) for f in mine) >= 2
    # Resolved then reopened by records: counted open, their resolution undone.
    assert sum(bool(f.get("_reopened")) for f in mine) >= 2

    for e in report.entities:
        of = [f for f in mine if f["entity"] == e.entity]
        assert e.total == len(of)
        assert e.by_rule == dict(Counter(f["rule_id"] for f in of))
        assert e.by_status == {s: sum(f["status"] == s for f in of) for s in STATUSES}
    assert {e.entity for e in report.entities} == {f["entity"] for f in mine}

    # Device measure: internal accesses counted from the events themselves.
    internal = Counter()
    for line in lines:
        ev = json.loads(line)
        ts = datetime.fromisoformat(ev["timestamp"])
        if (
            ev["stream"] == "saas_access"
            and ev["network_zone"] == "internal"
            and period.start <= ts < period.end
        ):
            internal[ev["entity"]] += 1
    assert internal
    for d in report.devices:
        of = [f for f in mine if f["entity"] == d.entity]
        assert d.internal_accesses == internal[d.entity]
        assert d.failing_posture == sum(f["rule_id"] == "SEP-006" for f in of)
        assert d.unknown_posture == sum(f["rule_id"] == "SEP-007" for f in of)
        assert d.compliant == internal[d.entity] - d.noncompliant
        assert d.compliant_share == pytest.approx(d.compliant / internal[d.entity])
    assert report.devices_all.internal_accesses == sum(internal.values())

    apps = Counter(f["saas_app"] for f in mine if f["saas_app"])
    for a in report.apps:
        assert a.findings == apps[a.app_id], a.app_id
    by_app = {a.app_id: a for a in report.apps}
    assert by_app["box"].status == "expired" and by_app["dropbox"].status == "not_evaluated"

    waived = Counter(f["waiver"]["id"] for f in mine if f["waiver"])
    assert {w.waiver_id: w.findings_waived for w in report.waivers} == {
        w: waived[w] for w in ("WV-2026-014", "WV-2026-021")
    }

    still = sorted(
        (f for f in mine if f["status"] in ("open", "acknowledged")),
        key=lambda f: (f["timestamp"], f["finding_id"]),
    )
    assert report.open_total == len(still) and report.appendix_truncated == 0
    assert [i.finding_id for i in report.appendix] == [f["finding_id"] for f in still]
    # Who set a status comes from the lifecycle records: the reopened findings
    # name the actor of their "reopen" (here the OS user, said to be unproven);
    # a finding no record touched names nobody.
    by = {i.finding_id: i.status_by for i in report.appendix}
    reopened = {f["finding_id"] for f in still if f.get("_reopened")}
    assert reopened and {by[f] for f in reopened} == {f"{os_actor()['username']} (unauthenticated)"}
    assert {by[f] for f in by.keys() - reopened} == {None}

    hq = [r for r in report.reviews if r.entity == "HQ"]
    assert [(r.done_on_time, r.report) for r in hq] == [(True, "on_time")]
    gn = [r for r in report.reviews if r.entity == "BR-SEOUL-GN"]
    assert [r.report for r in gn] == ["not_reported"]  # its 30 days ended 2026-11-29 08:00

    # One entity alone: the same counts, restricted.
    alone = _gather(es, index, "2026H2", entity="HQ")
    assert alone.total.current == sum(f["entity"] == "HQ" for f in mine)
    assert [e.entity for e in alone.entities] == ["HQ"]
    assert [d.entity for d in alone.devices] == ["HQ"]


def test_a_half_year_ends_at_midnight_in_the_policy_zone(es: Elasticsearch) -> None:
    # 2026-06-30T14:59:59Z is 23:59:59 KST on the last day of 2026H1;
    # 15:00:00Z is the first second of 2026H2 (and of July) in Seoul.
    index = f"t{uuid.uuid4().hex[:8]}-findings"
    edge = [
        {**_edge_finding("SEP-001-h1"), "timestamp": "2026-06-30T14:59:59+00:00"},
        {**_edge_finding("SEP-001-h2"), "timestamp": "2026-06-30T15:00:00+00:00"},
    ]
    _load(es, index, edge)
    report = _gather(es, index, "2026H2")
    assert (report.total.current, report.total.previous) == (1, 1)
    assert report.period.start == datetime(2026, 6, 30, 15, tzinfo=UTC)
    assert [(m.month, m.count) for m in report.by_month][:2] == [("2026-07", 1), ("2026-08", 0)]
    assert [i.finding_id for i in report.appendix] == ["SEP-001-h2"]


def _edge_finding(finding_id: str) -> dict[str, Any]:
    return {
        "finding_id": finding_id,
        "rule_id": "SEP-001",
        "rule_name": "SaaS used from the internal network without a valid evaluation",
        "severity": "high",
        "status": "open",
        "timestamp": "2026-06-30T15:00:00+00:00",
        "detected_at": "2026-06-30T15:01:00+00:00",
        "entity": "HQ",
        "user_id": "u-hq-00001",
        "device_id": "lt-hq-00001",
        "saas_app": "dropbox",
        "evidence_event_ids": [finding_id],
        "summary": "u-hq-00001 used dropbox, which is not in the registry.",
        "regulation": "only SaaS evaluated by the agency",
    }


# -- the files: report.json, report.html, report.pdf ----------------------------

# Raw identifiers as the simulator writes them into DLP snippets (RRN, card numbers).
RAW_ID = re.compile(r"\b\d{6}-[1-4]\d{6}\b|\b\d{4}-\d{4}-\d{4}-\d{4}\b|\b\d{13,16}\b")


def _pdf_text(pdf: Path) -> str:
    done = subprocess.run(
        ["pdftotext", "-layout", str(pdf), "-"], capture_output=True, check=True, timeout=60
    )
    return done.stdout.decode()


def _first_page_png(pdf: Path, tmp: Path) -> Path:
    subprocess.run(
        ["pdftoppm", "-png", "-r", "60", "-f", "1", "-l", "1", str(pdf), str(tmp / "page")],
        check=True,
        timeout=60,
    )
    [png] = sorted(tmp.glob("page*.png"))
    return png


def _report(env: dict[str, str], out: Path, *args: str) -> Any:
    return runner.invoke(
        cli,
        ["report", "--as-of", "2026-12-01", "--out", str(out), "--policy", str(POLICY), *args],
        env=env,
    )


@pytest.fixture
def env(broker: str, prefix: str, elasticsearch: str, loaded: str) -> dict[str, str]:
    topics = Topics(prefix)
    ensure_topics(broker, topics, 4, retention_ms=3_600_000)
    for review in REVIEWS:
        publish(broker, topics, review)
    # The policy version the workers recorded: the report cites it for each waiver.
    record_if_changed(Settings(broker=broker, topic_prefix=prefix), load_policy(POLICY), "p.yaml")
    return {
        "SEPWATCH_BROKER": broker,
        "SEPWATCH_TOPIC_PREFIX": prefix,
        "SEPWATCH_ES_URL": elasticsearch,
        "SEPWATCH_ES_INDEX": loaded,
        "COLUMNS": "200",
    }


def test_the_report_files_carry_the_same_figures_in_korean_with_nothing_raw(
    broker: str,
    env: dict[str, str],
    history: tuple[list[bytes], list[dict[str, Any]]],
    tmp_path: Path,
) -> None:
    lines, findings = history
    period = Period.parse("2026H2", "Asia/Seoul")
    mine = [f for f in findings if _in(period, f)]
    made = _report(env, tmp_path / "ko", "--period", "2026H2")
    assert made.exit_code == 0, made.output
    figures = json.loads((tmp_path / "ko" / "report.json").read_text())
    assert figures["total"]["current"] == len(mine) and not figures["empty"]
    assert figures["lang"] == "ko" and figures["sources"]["reviews_topic"]
    assert {r["entity"] for r in figures["reviews"]} == {"HQ", "BR-SEOUL-GN"}
    [version] = read_versions(broker, Topics(env["SEPWATCH_TOPIC_PREFIX"]).policy)
    assert figures["waivers"] and {w["policy_version"] for w in figures["waivers"]} == {
        version.version
    }

    pdf = tmp_path / "ko" / "report.pdf"
    text = _pdf_text(pdf)
    flat = " ".join(text.split())
    for heading in (
        "정보보호위원회",
        "반기 점검",
        "요약",
        "통제 항목별 현황",
        "이용 중인 SaaS",
        "보호조치 충족 단말에서의 접속 비율",
        "승인된 예외",
        "반기 점검 실시 현황",
        "미조치 항목",
        "평가받지 않은 SaaS의 내부망 이용",
    ):
        assert heading in flat, heading
    assert f"{len(mine):,}" in flat
    share = figures["devices_all"]["compliant_share"]
    assert f"{100 * share:.1f}%" in flat
    for rule in figures["rules"]:
        if rule["count"]["current"]:
            assert f"{rule['rule_id']} " in flat
    # Every open finding is in the appendix of the PDF, by its id.
    assert all(i["finding_id"] in text for i in figures["appendix"])
    # ... with who set its status, where a lifecycle record did.
    setters = {i["status_by"] for i in figures["appendix"]} - {None}
    assert setters and all(f"처리자 {who}" in flat for who in setters)

    png = _first_page_png(pdf, tmp_path)
    with Image.open(png) as page:
        gray = page.convert("L")
        dark = sum(gray.histogram()[:128])
        assert gray.size[0] > 300 and dark > 0.005 * gray.size[0] * gray.size[1], dark

    # The ids a waiver names are the policy's own words, shown in its scope.
    named = {i for w in load_policy(POLICY).waivers for i in (w.user_id, w.device_id) if i}
    raw = {f[k] for f in findings for k in ("user_id", "device_id") if f[k] and len(f[k]) > 4}
    raw -= named
    raw |= {m for line in lines for m in RAW_ID.findall(line.decode())}
    assert raw
    outputs = {
        name: (tmp_path / "ko" / name).read_text(encoding="utf-8")
        for name in ("report.json", "report.html")
    }
    outputs["report.pdf"] = text
    for name, body in outputs.items():
        leaked = sorted(r for r in raw if r in body)
        assert not leaked, f"{name} carries raw identifiers: {leaked[:5]}"

    english = _report(env, tmp_path / "en", "--period", "2026H2", "--lang", "en")
    assert english.exit_code == 0, english.output
    en = " ".join(_pdf_text(tmp_path / "en" / "report.pdf").split())
    assert "Information Protection Committee" in en and "Appendix: every open finding" in en
    en_figures = json.loads((tmp_path / "en" / "report.json").read_text())
    assert en_figures["rules"] == figures["rules"] and en_figures["total"] == figures["total"]


def test_a_period_with_no_findings_gives_a_valid_report_that_says_so(
    env: dict[str, str], tmp_path: Path
) -> None:
    made = _report(env, tmp_path, "--period", "2025H1")
    assert made.exit_code == 0, made.output
    figures = json.loads((tmp_path / "report.json").read_text())
    assert figures["empty"] and figures["total"]["current"] == 0 and figures["appendix"] == []
    assert all(r["count"]["current"] == 0 for r in figures["rules"])
    text = " ".join(_pdf_text(tmp_path / "report.pdf").split())
    assert "이 기간에 기록된 탐지 결과가 없습니다" in text and "2025H1" in text


def test_a_malformed_period_or_an_unreachable_elasticsearch_is_a_clear_error(
    env: dict[str, str], tmp_path: Path
) -> None:
    bad = _report(env, tmp_path, "--period", "2026Q3")
    assert bad.exit_code == 2 and "YYYYH1" in bad.output
    down = _report({**env, "SEPWATCH_ES_URL": "http://127.0.0.1:9"}, tmp_path, "--period", "2026H2")
    assert down.exit_code == 2 and "unreachable" in down.output, down.output
    wrong = _report({**env, "SEPWATCH_ES_INDEX": "nothing-here"}, tmp_path, "--period", "2026H2")
    assert wrong.exit_code == 2 and "no findings index" in wrong.output, wrong.output
    assert not (tmp_path / "report.pdf").exists()
