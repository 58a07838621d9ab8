"""A stage restored after its worker is SIGKILLed judges an event late, or
not, exactly as before the crash (issue 19: its clock was kept once a minute
of event time, so a restore could resume up to a minute behind)."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from kafka import KafkaConsumer, TopicPartition

from bench.harness import free_port, wait_until
from schemas.policy_file import load_policy
from streams.kafka_io import ensure_topics, produce
from streams.topics import Topics, partition_of
from tests.cases import DEFAULTS
from tests.integration.conftest import POLICY, Worker

PARTITIONS = 4
DEVICE = "d-restore"


def _posture(event_id: str, at: datetime) -> bytes:
    body = {**DEFAULTS["device_posture"], "device_id": DEVICE, "event_id": event_id}
    return json.dumps({**body, "stream": "device_posture", "timestamp": at.isoformat()}).encode()


def _metric(port: int, name: str, labels: str) -> float | None:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(f"{name}{{{labels}}} "):
                return float(line.split()[-1])
    return None


def test_a_stage_restored_after_sigkill_judges_a_late_ish_event_as_before(
    broker: str, prefix: str, tmp_path: Path
) -> None:
    topics = Topics(prefix)
    ensure_topics(broker, topics, PARTITIONS, retention_ms=3_600_000)
    lateness = load_policy(POLICY).allowed_lateness.total_seconds()
    # Two postures in one minute of event time, ten minutes ago: the device
    # stage's clock moves to the second without crossing a minute.
    minute = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=10)
    last = minute + timedelta(seconds=50)
    stage = TopicPartition(topics.stage("device"), partition_of(DEVICE, PARTITIONS))
    first_port, second_port = free_port(), free_port()
    first = Worker(broker, prefix, tmp_path / "a", tmp_path / "a.log", web_port=first_port)
    second: Worker | None = None
    group = KafkaConsumer(
        bootstrap_servers=broker, group_id=f"{prefix}worker", enable_auto_commit=False
    )
    try:
        first.wait_ready()

        def clock_at(at: datetime) -> Callable[[], bool]:
            def check() -> bool:
                lag = _metric(first_port, "sepwatch_watermark_lag_seconds", 'stage="device"')
                return lag is not None and lag <= time.time() - at.timestamp() + 1

            return check

        # One move, then another within the same minute of event time.
        for event_id, at in (("p1", minute + timedelta(seconds=10)), ("p2", last)):
            produce([_posture(event_id, at)], broker, topics)
            wait_until(clock_at(at), f"the device stage's clock at {event_id}")
        # Everything judged so far is committed, its table changes before it.
        end = group.end_offsets([stage])[stage]
        wait_until(lambda: (group.committed(stage) or 0) >= end, "the stage's commit")
        first.kill()
        second = Worker(broker, prefix, tmp_path / "b", tmp_path / "b.log", web_port=second_port)
        second.wait_ready()
        # Late by 5 s against the clock before the crash (not against a minute earlier).
        late_ish = last - timedelta(seconds=lateness + 5)
        produce([_posture("p3", late_ish)], broker, topics)
        wait_until(
            lambda: _metric(second_port, "sepwatch_late_events_total", 'stage="device"') == 1.0,
            "the restored stage to judge the event late, as before the crash",
        )
    finally:
        group.close()
        first.stop()
        if second is not None:
            second.stop()
