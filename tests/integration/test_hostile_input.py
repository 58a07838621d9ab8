"""Hostile input on a real broker (issue 7, part 3): a few hundred
hypothesis-generated hostile records among the events of a known day; the
worker goes on, finds what replay finds, dead-letters every hostile record
with a reason, lets no identifier out, keeps its memory bounded, and an event
stamped far ahead does not release a decision still waiting for its events."""

from __future__ import annotations

import io
import json
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from kafka import KafkaProducer

from bench.harness import wait_until
from schemas.policy_file import load_policy
from simulator.day import simulate
from streams.kafka_io import admin, ensure_topics, produce, read_topics, topic_config
from streams.replay import replay
from streams.topics import STAGES, Topics, input_key
from tests.hostile import broker_hostile_records, leaks
from tests.integration.conftest import MARKER_KEY, POLICY, Worker
from tests.integration.settle import each_holds_partitions, settled

pytestmark = [pytest.mark.integration, pytest.mark.slow]
PARTITIONS = 4
HOSTILE = 300
# The probe: an access whose device posture (30 s earlier, within the 60 s
# lateness) is sent only after the far-ahead events. Decided before the
# posture arrives, it would be a wrong SEP-007 ("no posture").
PROBE_AT = datetime(2026, 11, 23, 12, 10, tzinfo=ZoneInfo("Asia/Seoul"))
PROBE_ACCESS = {
    "stream": "saas_access",
    "event_id": "probe-access",
    "timestamp": PROBE_AT.isoformat(),
    "entity": "HQ",
    "user_id": "u-probe",
    "device_id": "d-probe",
    "saas_app": "m365-teams",
    "action": "upload",
    "network_zone": "internal",
    "source": "test",
}
PROBE_POSTURE = {
    "stream": "device_posture",
    "event_id": "probe-posture",
    "timestamp": (PROBE_AT - timedelta(seconds=30)).isoformat(),
    "entity": "HQ",
    "device_id": "d-probe",
    "user_id": "u-probe",
    "managed": True,
    "edr_running": True,
    "disk_encrypted": True,
    "screen_lock": True,
    "os_patch_age_days": 1,
    "source": "test",
}


def _line(event: dict[str, Any]) -> bytes:
    return json.dumps(event, ensure_ascii=False).encode()


def _day() -> list[bytes]:
    start = datetime(2026, 11, 23, 9, tzinfo=ZoneInfo("Asia/Seoul"))
    events = simulate(
        load_policy(POLICY),
        users=40,
        devices=44,
        hours=3,
        violation_rate=0.05,
        seed=11,
        start=start,
    )
    return [_line(e) for e in events]


def _generated(count: int) -> list[tuple[bytes, list[str]]]:
    """`count` hostile records drawn by hypothesis (generation only: shrinking
    would replay the whole broker run)."""
    drawn: list[tuple[bytes, list[str]]] = []

    @settings(
        max_examples=count,
        phases=[Phase.generate],
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(broker_hostile_records)
    def draw(record: tuple[bytes, list[str]]) -> None:
        drawn.append(record)

    draw()
    return drawn[:count]


def _far_ahead(rrn: str) -> list[bytes]:
    """Valid in every way but their time, a day ahead of the broker's clock, on
    the probe's partitions: let through, they would move the stage clocks."""
    ahead = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    return [
        _line({**PROBE_ACCESS, "event_id": f"ahead-{rrn}", "timestamp": ahead}),
        _line({**PROBE_POSTURE, "event_id": "ahead-posture", "timestamp": ahead}),
        _line({**PROBE_ACCESS, "event_id": "ahead-2", "timestamp": ahead, "user_id": "u-x"}),
    ]


def _findings(broker: str, topics: Topics) -> dict[str, dict[str, Any]]:
    return {r.key.decode(): json.loads(r.value) for r in read_topics(broker, [topics.findings])}


class RssSampler(threading.Thread):
    """The worker's resident set (VmRSS in /proc), sampled twice a second."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self.done = threading.Event()

    def rss(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def run(self) -> None:
        while not self.done.wait(0.5):
            try:
                self.peak = max(self.peak, self.rss())
            except OSError:
                return


def test_hostile_records_are_dead_letters_and_the_worker_goes_on_finding(
    broker: str, prefix: str, tmp_path: Path
) -> None:
    topics = Topics(prefix)
    ensure_topics(broker, topics, PARTITIONS, retention_ms=3_600_000)
    client = admin(broker)
    try:
        stamped = topic_config(client, [topics.input("saas_access")], "message.timestamp.type")
    finally:
        client.close()
    assert stamped == {topics.input("saas_access"): "LogAppendTime"}

    day = _day()
    half = len(day) // 2
    valid = [*day, _line(PROBE_ACCESS), _line(PROBE_POSTURE)]
    out = io.StringIO()
    replay(load_policy(POLICY), valid, out, io.StringIO())
    want = {f["finding_id"]: f for f in map(json.loads, out.getvalue().split("\n")[:-1])}
    assert not any("probe-access" in f["evidence_event_ids"] for f in want.values())

    hostile = _generated(HOSTILE)
    planted = [r for _, p in hostile for r in p]
    rrn = "900101-1234567"  # made up; in the far-ahead events' ids
    far = _far_ahead(rrn)
    records = [raw for raw, _ in hostile] + far
    planted.append(rrn)
    size = sum(len(r) for r in records)

    worker = Worker(broker, prefix, tmp_path / "state", tmp_path / "worker.log")
    try:
        worker.wait_ready()
        # Past the start-up allocations: the stages assigned and restored.
        each_holds_partitions(broker, f"{prefix}worker", [topics.stage(s) for s in STAGES], 1)
        sampler = RssSampler(worker.proc.pid)
        ready_rss = sampler.rss()
        sampler.start()

        produce(day[:half], broker, topics, end_of_input=False)
        # The hostile batch, each record on an input topic, keyed like its event
        # where it reads as one (the far-ahead ones land on the probe's partitions).
        raw = KafkaProducer(bootstrap_servers=broker, max_request_size=2 << 20, linger_ms=20)
        sent = []
        for n, record in enumerate(records):
            try:
                event = json.loads(record)
                key = input_key(event).encode() if isinstance(event, dict) else b""
                stream = event.get("stream") if isinstance(event, dict) else None
            except (ValueError, RecursionError):
                key, stream = b"", None
            if not 0 < len(key) <= 256:  # a huge field as the key would pass the broker's limit
                key = f"k{n}".encode()
            name = topics.input(stream) if stream in ("saas_access", "device_posture") else None
            # The far-ahead ones forge their record time to match: the broker's
            # append time (LogAppendTime) replaces it.
            forged = int(time.time() * 1000) + 2 * 86_400_000 if record in far else None
            sent.append(
                raw.send(
                    name or topics.inputs[n % len(topics.inputs)],
                    record,
                    key=key,
                    timestamp_ms=forged,
                )
            )
        raw.flush()
        for future in sent:
            future.get(timeout=60)  # every hostile record is on the broker
        raw.close()
        produce([*day[half:], _line(PROBE_ACCESS)], broker, topics, end_of_input=False)

        def letters() -> list[dict[str, Any]]:
            return [json.loads(r.value) for r in read_topics(broker, [topics.dead_letters])]

        wait_until(
            lambda: len(letters()) >= len(records), "every hostile record dead-lettered", 180
        )
        # All of it routed and judged: a wrongly moved clock has released the probe by now.
        settled(broker, topics, timeout=180)
        early = [
            f
            for f in _findings(broker, topics).values()
            if "probe-access" in f["evidence_event_ids"]
        ]
        assert early == [], "the probe access was decided before its posture arrived"

        produce(
            [_line(PROBE_POSTURE)], broker, topics, end_of_input=True, marker_key=MARKER_KEY
        )  # and the end of input
        wait_until(lambda: len(_findings(broker, topics)) >= len(want), "replay's findings", 180)
        settled(broker, topics, timeout=180)  # a duplicate or an extra is on the topic by now
        got = _findings(broker, topics)
        sampler.done.set()
        sampler.join()

        assert worker.proc.poll() is None, "the worker stopped"
        missing = sorted((want[k]["rule_id"], k) for k in set(want) - set(got))
        extra = sorted((got[k]["rule_id"], k) for k in set(got) - set(want))
        assert not missing and not extra, f"missing {missing[:5]}, extra {extra[:5]}"
        for k, f in want.items():
            assert got[k]["evidence_event_ids"] == f["evidence_event_ids"], k

        dead = letters()
        assert len(dead) == len(records)
        assert all(d["reason"].strip() for d in dead)
        reasons = " | ".join(d["reason"] for d in dead)
        assert reasons.count("ahead of the broker's append time") >= len(far)

        dead_text = "\n".join(r.value.decode() for r in read_topics(broker, [topics.dead_letters]))
        found_text = "\n".join(r.value.decode() for r in read_topics(broker, [topics.findings]))
        log_text = worker.log.read_text(errors="replace")
        assert leaks(dead_text, planted) == []
        assert leaks(found_text, planted) == []
        assert leaks(log_text, planted) == []
        assert "Traceback" not in log_text, log_text[-3000:]

        # A record is held in Faust's stream buffer, decoded once and masked
        # into a dead letter of at most 4 KiB: twice the batch's bytes covers
        # holding all of it at once; 96 MiB is the worker's own churn (topic
        # buffers, the day's engine state). A leak per record would exceed it.
        bound = ready_rss + 2 * size + (96 << 20)
        print(
            f"hostile {len(records)} records, {size / 2**20:.1f} MiB; worker RSS ready "
            f"{ready_rss / 2**20:.0f} MiB, peak {sampler.peak / 2**20:.0f} MiB, "
            f"bound {bound / 2**20:.0f} MiB"
        )
        assert sampler.peak < bound
    finally:
        worker.stop()
