"""Raw vendor records on the raw topics of a real broker, through the
worker's adapter agent and the rules: the findings of the scenario, as the
replay gives them (tests/adapters/test_day.py)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from kafka import TopicPartition

from adapters.mapping import VendorMapping, load_mapping
from bench.harness import wait_for
from schemas.policy_file import load_policy
from streams.end_of_input import signed_marker
from streams.kafka_io import ensure_topics, read_dead_letters, read_events, read_topics
from streams.replay import replay
from streams.topics import Topics
from streams.validator import END_OF_INPUT
from tests.adapters.conftest import MAPPING
from tests.adapters.day import EXPECTED, REVIEW_OVERDUE, canonical_day, judged, raw_arrivals
from tests.integration.conftest import ADAPTER_PARTITIONS, MARKER_KEY, POLICY, AdapterWorker
from tests.integration.settle import settled

pytestmark = pytest.mark.integration


def _sign_ins(w: AdapterWorker) -> tuple[float, float]:
    """(multi-factor by their session, not saying): SEP-010's counts, summed
    over the stages (the device stage counts sign-ins naming no session, the
    user stage joins the others)."""
    series = w.series("sepwatch_signins_mfa_")
    return tuple(  # type: ignore[return-value]
        sum(v for k, v in series.items() if k.startswith(f"sepwatch_signins_mfa_{name}_total"))
        for name in ("from_session", "unsaid")
    )


def _replayed_sign_ins(mapping: VendorMapping) -> tuple[float, float]:
    lines, _ = canonical_day(mapping)
    stats = replay(load_policy(POLICY), lines, io.StringIO(), io.StringIO()).engine_stats
    return stats["auth.mfa_from_session"], stats["auth.mfa_unknown"]


def test_raw_topics_through_the_adapter_agent_give_the_findings_of_the_scenario(
    broker: str, adapter_worker: Callable[..., AdapterWorker]
) -> None:
    mapping = load_mapping(MAPPING, load_policy(POLICY))
    arrivals = raw_arrivals(mapping)
    w = adapter_worker()
    topics, worker, raw = w.topics, w.worker, w.raw
    inputs = [TopicPartition(t, p) for t in topics.inputs for p in range(ADAPTER_PARTITIONS)]

    def canonical() -> int:
        # Events only: a quiet input partition also gets the validator's
        # clock marks (streams/partition_clock.py).
        return len(read_events(broker, topics.inputs, 10))

    # One record at a time, each adapted before the next is sent: the
    # canonical topics then see the day in the order it happened, as a
    # live feed would deliver it.
    expected = 0
    for arrival in arrivals:
        raw.send(topics.raw(arrival.source), arrival.record.raw).get(timeout=10)
        expected += arrival.events
        assert wait_for(lambda n=expected: canonical() >= n, 60), worker.log.read_text()[-3000:]
    assert canonical() == expected == 18
    # /metrics: every record counted by outcome, skips by vendor type.
    scraped = w.series()
    mapped = sum(1 for a in arrivals if a.events)
    assert sum(v for k, v in scraped.items() if 'outcome="event"' in k) == mapped
    assert scraped['sepwatch_adapter_records_total{outcome="dead",source="m365"}'] == 1
    for source, n in (("okta", 2), ("netskope", 1), ("m365", 1)):
        assert (
            scraped[f'sepwatch_adapter_records_total{{outcome="skipped",source="{source}"}}'] == n
        )
    sign_in = 'kind="AzureActiveDirectory UserLoggedIn",source="m365"'
    assert scraped[f"sepwatch_adapter_skipped_total{{{sign_in}}}"] == 1
    assert scraped['sepwatch_adapter_records_total{outcome="dead",source="okta"}'] == 0
    # The end of the input, as `sepwatch produce` marks it.
    last = max(a.at for a in arrivals if a.at is not None)
    for tp in inputs:
        marker = signed_marker(MARKER_KEY, tp.topic, tp.partition, last.timestamp(), time.time())
        raw.send(tp.topic, marker, key=END_OF_INPUT, partition=tp.partition)
    raw.flush()

    def findings() -> list[dict[str, object]]:
        return [json.loads(r.value) for r in read_topics(broker, [topics.findings])]

    want = len(EXPECTED) + len(REVIEW_OVERDUE)
    assert wait_for(lambda: len(findings()) >= want, timeout=90), worker.log.read_text()
    # Everything adapted, routed and judged: an extra finding is there now.
    settled(broker, topics, raw={a.source for a in arrivals})
    assert judged(findings()) == (EXPECTED, REVIEW_OVERDUE)
    letters = read_dead_letters(broker, topics)
    assert [(d["source"], d["field"]) for d in letters] == [("m365", "CreationTime")]
    assert letters[0]["topic"] == topics.raw("m365")
    # SEP-010's session join (no finding either way): Jiwoo's SharePoint
    # SSO multi-factor by her session's push, Minseo's and Thanh's unsaid,
    # on the stream as in the replay.
    want_sign_ins = _replayed_sign_ins(mapping)
    assert want_sign_ins == (1, 2)
    assert wait_for(lambda: _sign_ins(w) == want_sign_ins, 60), _sign_ins(w)


def test_produce_format_publishes_canonical_events_or_raw_records(broker: str, prefix: str) -> None:
    topics = Topics(prefix)
    ensure_topics(broker, topics, ADAPTER_PARTITIONS, retention_ms=3_600_000)
    day = Path(__file__).resolve().parents[1] / "fixtures" / "vendors" / "day" / "m365.json"

    def sepwatch(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cli.main", "produce", "--broker", broker,
             "--prefix", prefix, "-e", str(day), *args],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    adapted = sepwatch("--format", "m365")
    assert adapted.returncode == 0, adapted.stderr
    canonical = [json.loads(r.value) for r in read_events(broker, topics.inputs)]
    events = [e for e in canonical if "stream" in e]  # the rest: end-of-input markers
    assert sorted(e["stream"] for e in events) == ["dlp_alert"] * 2 + ["saas_access"] * 3
    [letter] = read_dead_letters(broker, topics)
    assert (letter["source"], letter["field"]) == ("m365", "CreationTime")
    raw = sepwatch("--format", "m365", "--raw")
    assert raw.returncode == 0, raw.stderr
    assert len(read_topics(broker, [topics.raw("m365")])) == 7
