"""On a real three-broker KRaft cluster (deploy/local/kafka.sh up --brokers 3,
its own ports): every topic sepwatch creates is replicated, a worker refuses
topics that are not, and a worker loses nothing when a broker is SIGKILLed
and restarted under it (issue 19)."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from kafka.admin import NewTopic

from bench.harness import wait_until
from schemas.policy_file import load_policy
from simulator.day import simulate
from streams.kafka_io import (
    Replication,
    admin,
    ensure_topics,
    export_findings,
    produce,
    under_replicated,
)
from streams.policy_history import record_if_changed
from streams.pseudonym_key import worker_key
from streams.replay import replay
from streams.settings import Settings
from streams.topics import Topics
from tests.integration.conftest import KAFKA, MARKER_KEY, POLICY, ROOT, Worker

pytestmark = pytest.mark.integration
PORT = int(os.environ.get("SEPWATCH_TEST_CLUSTER_PORT", "27192"))
BROKERS = 3
RUN = Path(os.environ.get("SEPWATCH_RUN_DIR", Path.home() / ".cache" / "sepwatch" / "run"))


def _kafka(*args: str) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "SEPWATCH_KAFKA_PORT": str(PORT)}
    return subprocess.run([str(KAFKA), *args], env=env, timeout=600, check=False)


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """Three brokers, each its own controller too; stopped after unless they
    were running before."""
    brokers = ("--brokers", str(BROKERS))
    ours = _kafka("status", *brokers).returncode != 0
    assert _kafka("up", *brokers).returncode == 0
    try:
        yield ",".join(f"127.0.0.1:{PORT + 2 * n}" for n in range(BROKERS))
    finally:
        if ours:
            pids = [_pid(n) for n in range(1, BROKERS + 1)]
            # A plain `down`, as one types it, stops every broker of the cluster.
            assert _kafka("down").returncode == 0
            assert [p for p in pids if _alive(p)] == []


def _alive(pid: int) -> bool:
    """Running: a process exited but not yet reaped (a zombie) is not."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def _pid(node: int) -> int:
    home = RUN / f"kafka-{PORT}"
    return int((home if node == 1 else home / f"node-{node}").joinpath("kafka.pid").read_text())


def test_topics_are_replicated_and_a_worker_refuses_those_that_are_not(
    cluster: str, prefix: str
) -> None:
    topics = Topics(prefix)
    assert ensure_topics(cluster, topics, 4, retention_ms=3_600_000) == Replication(3, 2)
    client = admin(cluster)
    try:
        names = [*topics.inputs, topics.findings, topics.dead_letters, *topics.changelogs]
        names += [topics.stage("device"), topics.raw("okta")]
        assert set(names) <= set(client.list_topics())
        assert under_replicated(client, names, Replication(3, 2)) == []
        # A deployment's topic made by hand with one copy, as every topic was before.
        other = Topics(prefix.rstrip(".") + "-old.")
        client.create_topics([NewTopic(other.findings, 4, 1)])
    finally:
        client.close()
    started = subprocess.run(
        [sys.executable, "-m", "cli.main", "worker", "--broker", cluster,
         "--prefix", other.prefix, "--web-port", "0"],
        capture_output=True, text=True, cwd=ROOT, timeout=120, check=False,
    )  # fmt: skip
    assert started.returncode == 2, started.stderr
    said = " ".join(started.stderr.split())
    assert f"{other.findings} has 1 replica(s), not 3" in said, said
    assert "Traceback" not in said
    # `sepwatch produce` before any worker: the topics are not left to the
    # broker's auto-creation (one copy).
    fresh = Topics(prefix.rstrip(".") + "-new.")
    subprocess.run(
        [sys.executable, "-m", "cli.main", "produce", "--broker", cluster,
         "--prefix", fresh.prefix, "-e", "/dev/null"],
        cwd=ROOT, timeout=120, check=True,
    )  # fmt: skip
    client = admin(cluster)
    try:
        assert set(fresh.inputs) <= set(client.list_topics())
        assert under_replicated(client, fresh.inputs, Replication(3, 2)) == []
    finally:
        client.close()


def test_the_policy_history_and_the_pseudonym_key_are_replicated(cluster: str, prefix: str) -> None:
    """The two one-partition logs a worker keeps beside its topics: a copy on
    one broker is lost, or out of reach, with that broker."""
    topics = Topics(prefix)
    settings = Settings(broker=cluster, topic_prefix=prefix)
    record_if_changed(settings, load_policy(POLICY), str(POLICY))
    assert worker_key(settings, topics)
    client = admin(cluster)
    try:
        names = [topics.policy, topics.pseudonym_key]
        assert under_replicated(client, names, Replication(3, 2)) == []
    finally:
        client.close()


def _day() -> list[bytes]:
    start = datetime(2026, 11, 23, 9, tzinfo=ZoneInfo("Asia/Seoul"))
    events = simulate(
        load_policy(POLICY), users=60, devices=68, hours=3, violation_rate=0.05, seed=19,
        start=start,
    )  # fmt: skip
    return [json.dumps(e, ensure_ascii=False).encode() + b"\n" for e in events]


def _findings(broker: str, topics: Topics) -> dict[str, dict[str, Any]]:
    sink = io.StringIO()
    export_findings(broker, topics, sink, timeout_s=60)
    return {f["finding_id"]: f for f in map(json.loads, sink.getvalue().splitlines())}


def test_a_worker_loses_nothing_when_a_broker_is_killed_and_restarted(
    cluster: str, prefix: str, tmp_path: Path
) -> None:
    topics = Topics(prefix)
    ensure_topics(cluster, topics, 4, retention_ms=3_600_000)
    lines = _day()
    out = io.StringIO()
    replay(load_policy(POLICY), lines, out, io.StringIO())
    want = {f["finding_id"]: f for f in map(json.loads, out.getvalue().splitlines())}
    assert {f["rule_id"] for f in want.values()} >= {"SEP-001", "SEP-003", "SEP-006"}
    worker = Worker(cluster, prefix, tmp_path / "state", tmp_path / "worker.log")
    third = len(lines) // 3
    try:
        worker.wait_ready()
        produce(lines[:third], cluster, topics)
        wait_until(lambda: _findings(cluster, topics), "the first findings", timeout=180)
        os.kill(_pid(2), signal.SIGKILL)  # mid-stream, with its replicas in sync
        produce(lines[third : 2 * third], cluster, topics)  # written with one broker gone
        # `up` restarts the killed broker only.
        assert _kafka("up", "--brokers", str(BROKERS)).returncode == 0
        produce(lines[2 * third :], cluster, topics, end_of_input=True, marker_key=MARKER_KEY)

        def all_found() -> bool:
            return len(_findings(cluster, topics)) >= len(want)

        wait_until(all_found, "every finding replay makes", timeout=300)
        got = _findings(cluster, topics)
        assert sorted(set(want) - set(got)) == [] and sorted(set(got) - set(want)) == []
        for key, finding in want.items():
            assert got[key]["evidence_event_ids"] == finding["evidence_event_ids"], key
        assert worker.proc.poll() is None, worker.log.read_text()[-3000:]
    finally:
        worker.stop()
