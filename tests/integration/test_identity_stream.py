"""Device identity learned from posture feeds, on a real Kafka broker: with
the device stage on one partition (SEPWATCH_LEARNED_IDENTITY), the stream
finds what replay finds, also across a worker killed mid-run (the identity
graph restored from its changelog)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streams.kafka_io import ensure_topics, produce
from streams.topics import Topics
from tests.integration.conftest import MARKER_KEY, POLICY, Worker
from tests.integration.settle import settled
from tests.integration.test_stream import (
    PARTITIONS,
    _compare,
    _day,
    _exported,
    _replayed,
    _wait_for,
)

pytestmark = pytest.mark.integration


def _as_two_vendors(lines: list[bytes]) -> list[bytes]:
    """Each posture as Intune (under the Entra id) and Falcon (under its agent
    id) would each give part of it, naming serial and hostname; every other
    access names its device by hostname, as a web proxy does."""
    out = []
    for i, line in enumerate(lines):
        e: dict[str, Any] = json.loads(line)
        if e["stream"] == "saas_access" and e.get("device_id") and i % 2:
            out.append(json.dumps({**e, "device_id": f"host-{e['device_id']}"}).encode() + b"\n")
            continue
        if e["stream"] != "device_posture":
            out.append(line)
            continue
        d = e["device_id"]
        shared = [
            {"kind": "serial", "value": f"sn-{d}"},
            {"kind": "hostname", "value": f"host-{d}"},
        ]
        intune = {
            **e,
            "event_id": f"{e['event_id']}:intune",
            "edr_running": None,
            "os_patch_age_days": None,
            "device_aliases": [{"kind": "entra_device_id", "value": d}, *shared],
        }
        falcon = {
            **e,
            "event_id": f"{e['event_id']}:falcon",
            "device_id": f"aid-{d}",
            "managed": None,
            "disk_encrypted": None,
            "screen_lock": None,
            "jailbroken": None,
            "device_aliases": [{"kind": "falcon_aid", "value": f"aid-{d}"}, *shared],
        }
        out.extend(json.dumps(p).encode() + b"\n" for p in (intune, falcon))
    return out


@pytest.fixture
def started(broker: str, prefix: str, tmp_path: Path) -> Iterator[list[Worker]]:
    ensure_topics(broker, Topics(prefix), PARTITIONS, retention_ms=3_600_000)
    workers: list[Worker] = []
    yield workers
    for w in workers:
        w.stop()


def test_a_two_vendor_day_on_the_stream_finds_what_its_canonical_form_finds_across_a_kill(
    broker: str, prefix: str, tmp_path: Path, started: list[Worker]
) -> None:
    canonical = _day(seed=6)
    lines = _as_two_vendors(canonical)
    want = _replayed(lines)
    assert set(want) == set(_replayed(canonical))  # no extra SEP-007, no missed SEP-006
    assert any(f["details"].get("device_alias", "").startswith("host-") for f in want.values())
    assert {f["rule_id"] for f in want.values()} >= {"SEP-006", "SEP-007"}
    env = {"SEPWATCH_LEARNED_IDENTITY": "true"}

    def worker(name: str) -> Worker:
        w = Worker(
            broker, prefix, tmp_path / f"state-{name}", tmp_path / f"{name}.log", POLICY, env=env
        )
        started.append(w)
        return w

    first = worker("a")
    first.wait_ready()
    half = len(lines) // 2
    produce(lines[:half], broker, Topics(prefix), end_of_input=False)
    _wait_for(lambda: len(_exported(broker, Topics(prefix))) > 0, timeout=60)
    first.kill()
    produce(lines[half:], broker, Topics(prefix), end_of_input=True, marker_key=MARKER_KEY)
    again = worker("b")
    again.wait_ready()
    _wait_for(lambda: len(_exported(broker, Topics(prefix))) >= len(want), timeout=120)
    settled(broker, Topics(prefix))  # a duplicate or an extra is on the topic by now
    got = _exported(broker, Topics(prefix))
    _compare(want, got)
    for k, f in want.items():
        assert got[k]["device_id"] == f["device_id"], k
