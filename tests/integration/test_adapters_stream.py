"""Raw vendor records on the raw topics of a real broker, through the
worker's adapter agent and the rules: the findings of the scenario, as the
replay gives them (tests/adapters/test_day.py)."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from adapters.mapping import VendorMapping, load_mapping
from schemas.policy_file import load_policy
from streams.end_of_input import signed_marker
from streams.kafka_io import ensure_topics, read_dead_letters, read_events, read_topics
from streams.replay import replay
from streams.topics import Topics
from streams.validator import END_OF_INPUT
from tests.adapters.conftest import MAPPING
from tests.adapters.day import EXPECTED, REVIEW_OVERDUE, canonical_day, judged, raw_arrivals
from tests.integration.conftest import MARKER_KEY, POLICY, Worker
from tests.integration.settle import settled

pytestmark = pytest.mark.integration
PARTITIONS = 4


def _wait_for(check: Callable[[], bool], timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _adapter_series(port: int, prefix: str = "sepwatch_adapter_") -> dict[str, float]:
    url = f"http://127.0.0.1:{port}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    return {
        name: float(value)
        for line in text.splitlines()
        if line.startswith(prefix)
        for name, value in [line.rsplit(" ", 1)]
    }


def _sign_ins(port: int) -> tuple[float, float]:
    """(multi-factor by their session, not saying): SEP-010's counts, summed
    over the stages (the device stage counts sign-ins naming no session, the
    user stage joins the others)."""
    series = _adapter_series(port, "sepwatch_signins_mfa_")
    return tuple(  # type: ignore[return-value]
        sum(v for k, v in series.items() if k.startswith(f"sepwatch_signins_mfa_{name}_total"))
        for name in ("from_session", "unsaid")
    )


def _replayed_sign_ins(mapping: VendorMapping) -> tuple[float, float]:
    lines, _ = canonical_day(mapping)
    stats = replay(load_policy(POLICY), lines, io.StringIO(), io.StringIO()).engine_stats
    return stats["auth.mfa_from_session"], stats["auth.mfa_unknown"]


def test_raw_topics_through_the_adapter_agent_give_the_findings_of_the_scenario(
    broker: str, prefix: str, tmp_path: Path
) -> None:
    topics = Topics(prefix)
    ensure_topics(broker, topics, PARTITIONS, retention_ms=3_600_000)  # the raw topics too
    mapping = load_mapping(MAPPING, load_policy(POLICY))
    arrivals = raw_arrivals(mapping)
    port = _free_port()
    worker = Worker(
        broker,
        prefix,
        tmp_path / "state",
        tmp_path / "worker.log",
        web_port=port,
        env={"SEPWATCH_MAPPING": str(MAPPING)},
    )
    counter = KafkaConsumer(bootstrap_servers=broker)
    inputs = [TopicPartition(t, p) for t in topics.inputs for p in range(PARTITIONS)]
    raw = KafkaProducer(bootstrap_servers=broker)
    try:
        worker.wait_ready()

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
            assert _wait_for(lambda n=expected: canonical() >= n), worker.log.read_text()[-3000:]
        assert canonical() == expected == 18
        # /metrics: every record counted by outcome, skips by vendor type.
        scraped = _adapter_series(port)
        mapped = sum(1 for a in arrivals if a.events)
        assert sum(v for k, v in scraped.items() if 'outcome="event"' in k) == mapped
        assert scraped['sepwatch_adapter_records_total{outcome="dead",source="m365"}'] == 1
        for source, n in (("okta", 2), ("netskope", 1), ("m365", 1)):
            assert (
                scraped[f'sepwatch_adapter_records_total{{outcome="skipped",source="{source}"}}']
                == n
            )
        sign_in = 'kind="AzureActiveDirectory UserLoggedIn",source="m365"'
        assert scraped[f"sepwatch_adapter_skipped_total{{{sign_in}}}"] == 1
        assert scraped['sepwatch_adapter_records_total{outcome="dead",source="okta"}'] == 0
        # The end of the input, as `sepwatch produce` marks it.
        last = max(a.at for a in arrivals if a.at is not None)
        for tp in inputs:
            marker = signed_marker(
                MARKER_KEY, tp.topic, tp.partition, last.timestamp(), time.time()
            )
            raw.send(tp.topic, marker, key=END_OF_INPUT, partition=tp.partition)
        raw.flush()

        def findings() -> list[dict[str, object]]:
            return [json.loads(r.value) for r in read_topics(broker, [topics.findings])]

        want = len(EXPECTED) + len(REVIEW_OVERDUE)
        assert _wait_for(lambda: len(findings()) >= want, timeout=90), worker.log.read_text()
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
        assert _wait_for(lambda: _sign_ins(port) == want_sign_ins), _sign_ins(port)
    finally:
        raw.close()
        counter.close()
        worker.stop()


def test_produce_format_publishes_canonical_events_or_raw_records(broker: str, prefix: str) -> None:
    topics = Topics(prefix)
    ensure_topics(broker, topics, PARTITIONS, retention_ms=3_600_000)
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
