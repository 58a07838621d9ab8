"""A bank's own policy on a real broker: a vendor mapping that names apps the
policy lacks keeps the raw vendor topics unread, every problem logged, and
the rules still judge canonical events."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from adapters.mapping import DEFAULT_MAPPING, load_mapping
from bench.harness import wait_until
from streams.kafka_io import ensure_topics, export_findings, produce
from streams.topics import Topics
from tests.integration.conftest import MARKER_KEY, ROOT, Worker
from tests.integration.settle import settled

pytestmark = pytest.mark.integration

OWN_POLICY = """\
version: 1
registry:
  - app_id: box
    category: document
    evaluated: true
    evaluation_valid_from: 2026-04-20
    evaluation_valid_until: 2027-04-19
"""
ACCESS = {
    "stream": "saas_access",
    "event_id": "own-1",
    "timestamp": "2026-11-23T09:00:00+09:00",
    "entity": "HQ",
    "user_id": "u-hq-00001",
    "device_id": "lt-hq-00001",
    "saas_app": "m365-sharepoint",
    "action": "download",
    "network_zone": "internal",
    "source": "m365",
}


def test_a_mapping_naming_apps_the_policy_lacks_stops_only_the_raw_intake(
    broker: str, prefix: str, tmp_path: Path
) -> None:
    policy = tmp_path / "own.yaml"
    policy.write_text(OWN_POLICY, encoding="utf-8")
    shipped = ROOT / DEFAULT_MAPPING
    lacking = sorted(a.app_id for a in load_mapping(shipped).apps if a.app_id != "box")
    assert lacking
    topics = Topics(prefix)
    ensure_topics(broker, topics, 4, retention_ms=3_600_000)
    worker = Worker(
        broker,
        prefix,
        tmp_path / "state",
        tmp_path / "worker.log",
        policy,
        env={"SEPWATCH_MAPPING": str(shipped)},
    )
    try:
        worker.wait_ready()  # it refused to start, exit 2, before
        log = worker.log.read_text(errors="replace")
        assert "raw vendor topics are not read" in log
        for app_id in lacking:
            assert f"{app_id!r} is not in the policy registry" in log, app_id
        produce(
            [json.dumps(ACCESS).encode() + b"\n"],
            broker,
            topics,
            end_of_input=True,
            marker_key=MARKER_KEY,
        )

        def exported() -> list[dict[str, object]]:
            sink = io.StringIO()
            export_findings(broker, topics, sink)
            return [json.loads(line) for line in sink.getvalue().splitlines()]

        wait_until(lambda: len(exported()) >= 3, "three findings", 60)
        settled(broker, topics)  # an extra finding is on the topic by now
        found = exported()
        # An app the policy does not list, from a device with no posture, at an
        # entity with no review since the baseline.
        assert sorted((f["rule_id"], tuple(f["evidence_event_ids"])) for f in found) == [
            ("SEP-001", ("own-1",)),
            ("SEP-007", ("own-1",)),
            ("SEP-008", ()),
        ], found
    finally:
        worker.stop()
