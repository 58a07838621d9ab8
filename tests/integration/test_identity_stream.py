"""Device identity learned from posture feeds, on a real Kafka broker: the
simulated multi-vendor day (Intune, Falcon, Entra sign-ins through the real
adapters, no hand-written device entry) with the device stage on one
partition (SEPWATCH_LEARNED_IDENTITY) finds what replay finds, and what the
same day in canonical form finds, also across a worker killed mid-run (the
identity graph restored from its changelog)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.kafka_io import ensure_topics
from streams.topics import Topics
from tests.integration.conftest import POLICY, Worker
from tests.integration.test_stream import PARTITIONS, _compare, _found_across_a_kill, _replayed
from tests.vendor_day import canonical_lines, day, judged, vendor_lines

pytestmark = pytest.mark.integration


@pytest.fixture
def started(broker: str, prefix: str, tmp_path: Path) -> Iterator[list[Worker]]:
    ensure_topics(broker, Topics(prefix), PARTITIONS, retention_ms=3_600_000)
    workers: list[Worker] = []
    yield workers
    for w in workers:
        w.stop()


def test_the_vendor_day_on_the_stream_finds_what_its_canonical_form_finds_across_a_kill(
    broker: str, prefix: str, tmp_path: Path, started: list[Worker]
) -> None:
    d = day()
    lines = vendor_lines(d)
    want = _replayed(lines)
    # No extra SEP-007, no missed SEP-006: the canonical day's findings, one id a device.
    assert judged(list(want.values()), d) == judged(list(_replayed(canonical_lines(d)).values()), d)
    assert {f["rule_id"] for f in want.values()} >= {"SEP-006", "SEP-007"}
    assert any(str(f["details"].get("device_alias", "")).startswith("WS-") for f in want.values())
    env = {"SEPWATCH_LEARNED_IDENTITY": "true"}

    def worker(name: str) -> Worker:
        w = Worker(
            broker, prefix, tmp_path / f"state-{name}", tmp_path / f"{name}.log", POLICY, env=env
        )
        started.append(w)
        return w

    got = _found_across_a_kill(lines, len(want), broker, Topics(prefix), worker)
    _compare(want, got)
    for k, f in want.items():
        assert got[k]["device_id"] == f["device_id"], k
