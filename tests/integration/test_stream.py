"""The worker on a real Kafka broker: parity with replay, crashes, scale, bad input."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from kafka import KafkaProducer

from bench.harness import wait_for
from schemas.policy_file import load_policy
from simulator.day import simulate
from streams.kafka_io import (
    ensure_topics,
    export_findings,
    produce,
    producer,
    read_dead_letters,
)
from streams.policy_history import read_versions, record_if_changed
from streams.replay import replay
from streams.settings import Settings
from streams.topics import STAGES, Topics
from streams.validator import SOURCE_IDLE, feeds
from tests.integration.conftest import MARKER_KEY, POLICY, Worker
from tests.integration.settle import each_holds_partitions, settled
from tests.test_policy_history import notion_access

pytestmark = pytest.mark.integration
PARTITIONS = 4


def _day(users: int = 80, hours: float = 4, seed: int = 2, partial: bool = False) -> list[bytes]:
    """Simulated traffic, out of order within the lateness, every rule in it.
    With `partial`, every third access with a device also brings the partial
    posture an access log carries (as the Okta adapter emits it)."""
    start = datetime(2026, 11, 23, 9, tzinfo=ZoneInfo("Asia/Seoul"))
    events = simulate(
        load_policy(POLICY),
        users=users,
        devices=users + 8,
        hours=hours,
        violation_rate=0.05,
        seed=seed,
        start=start,
    )
    out = []
    for i, e in enumerate(events):
        out.append(json.dumps(e, ensure_ascii=False).encode() + b"\n")
        if partial and e["stream"] == "saas_access" and e.get("device_id") and i % 3 == 0:
            seen = {
                "stream": "device_posture",
                "event_id": f"{e['event_id']}:posture",
                **{k: e[k] for k in ("timestamp", "entity", "device_id", "source")},
                "managed": i % 2 == 0,
                "edr_running": None,
                "disk_encrypted": i % 5 != 0,
                "screen_lock": True,
                "jailbroken": None,
                "os_patch_age_days": None,
            }
            out.append(json.dumps(seen).encode() + b"\n")
    return out


def _replayed(lines: list[bytes]) -> dict[str, dict[str, object]]:
    out = io.StringIO()
    replay(load_policy(POLICY), lines, out, io.StringIO())
    return {f["finding_id"]: f for f in map(json.loads, out.getvalue().splitlines())}


def _exported(broker: str, topics: Topics) -> dict[str, dict[str, object]]:
    sink = io.StringIO()
    export_findings(broker, topics, sink)
    return {f["finding_id"]: f for f in map(json.loads, sink.getvalue().splitlines())}


def _compare(want: dict[str, dict[str, object]], got: dict[str, dict[str, object]]) -> None:
    missing = sorted((want[k]["rule_id"], k) for k in set(want) - set(got))
    extra = sorted((got[k]["rule_id"], k) for k in set(got) - set(want))
    assert not missing and not extra, f"missing {missing[:5]}, extra {extra[:5]}"
    for k, f in want.items():
        assert got[k]["evidence_event_ids"] == f["evidence_event_ids"], k
        assert got[k]["status"] == f["status"], k


@pytest.fixture
def workers(broker: str, prefix: str, tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    ensure_topics(broker, Topics(prefix), PARTITIONS, retention_ms=3_600_000)
    started: list[Worker] = []

    def start(name: str, policy: Path = POLICY) -> Worker:
        w = Worker(broker, prefix, tmp_path / f"state-{name}", tmp_path / f"{name}.log", policy)
        started.append(w)
        return w

    yield start
    for w in started:
        w.stop()


def test_stream_gives_exactly_the_findings_of_replay(
    broker: str, prefix: str, workers: Callable[..., Worker]
) -> None:
    lines = _day()
    want = _replayed(lines)
    assert {f["rule_id"] for f in want.values()} >= {
        "SEP-001",
        "SEP-002",
        "SEP-003",
        "SEP-006",
        "SEP-010",
        "SEP-011",
    }
    worker = workers("a")
    worker.wait_ready()
    produce(lines, broker, Topics(prefix), end_of_input=True, marker_key=MARKER_KEY)
    wait_for(lambda: len(_exported(broker, Topics(prefix))) >= len(want))
    settled(broker, Topics(prefix))  # a duplicate or an extra is on the topic by now
    _compare(want, _exported(broker, Topics(prefix)))


def test_partial_postures_from_access_logs_give_the_findings_of_replay(
    broker: str, prefix: str, workers: Callable[..., Worker]
) -> None:
    """Postures that speak for some controls only, merged per control in the
    device stage's changelogged table, as in replay."""
    lines = _day(seed=5, partial=True)
    want = _replayed(lines)
    reasons = {f["details"].get("reason") for f in want.values() if f["rule_id"] == "SEP-007"}
    assert "unknown_controls" in reasons
    assert any(":posture" in " ".join(f["evidence_event_ids"]) for f in want.values())
    worker = workers("a")
    worker.wait_ready()
    produce(lines, broker, Topics(prefix), end_of_input=True, marker_key=MARKER_KEY)
    wait_for(lambda: len(_exported(broker, Topics(prefix))) >= len(want))
    settled(broker, Topics(prefix))  # a duplicate or an extra is on the topic by now
    got = _exported(broker, Topics(prefix))
    _compare(want, got)
    for k, f in want.items():
        assert got[k]["details"] == f["details"], k


def test_two_workers_find_what_one_finds(
    broker: str, prefix: str, workers: Callable[..., Worker]
) -> None:
    lines = _day(seed=5)
    want = _replayed(lines)
    first, second = workers("a"), workers("b")
    first.wait_ready()
    second.wait_ready()
    # Two workers only if both hold partitions of the stages and of the inputs.
    topics = Topics(prefix)
    each_holds_partitions(broker, f"{prefix}worker", [topics.stage(s) for s in STAGES], 2)
    each_holds_partitions(broker, f"{prefix}validator", topics.inputs, 2)
    produce(lines, broker, Topics(prefix), end_of_input=True, marker_key=MARKER_KEY)
    wait_for(lambda: len(_exported(broker, Topics(prefix))) >= len(want))
    settled(broker, Topics(prefix))
    _compare(want, _exported(broker, Topics(prefix)))


def test_a_worker_killed_mid_run_loses_nothing(
    broker: str, prefix: str, workers: Callable[..., Worker]
) -> None:
    lines = _day(users=120, seed=9)
    want = _replayed(lines)
    _compare(want, _found_across_a_kill(lines, len(want), broker, Topics(prefix), workers))


def _found_across_a_kill(
    lines: list[bytes], want: int, broker: str, topics: Topics, start: Callable[[str], Worker]
) -> dict[str, dict[str, object]]:
    """The first half of `lines` to a worker SIGKILLed once it has exported a
    finding, the rest to its successor: the findings exported once the
    successor has `want` and has settled (a duplicate or an extra is there by then)."""
    worker = start("a")
    worker.wait_ready()
    half = len(lines) // 2
    produce(lines[:half], broker, topics, end_of_input=False)
    wait_for(lambda: len(_exported(broker, topics)) > 0, timeout=60)
    worker.kill()
    produce(lines[half:], broker, topics, end_of_input=True, marker_key=MARKER_KEY)
    again = start("b")
    again.wait_ready()
    wait_for(lambda: len(_exported(broker, topics)) >= want, timeout=120)
    settled(broker, topics)
    return _exported(broker, topics)


def test_idle_marks_of_a_dead_validator_release_nothing_early(
    broker: str, prefix: str, workers: Callable[..., Worker]
) -> None:
    """Validators before clock marks marked their input partitions idle once a
    second; such marks may still sit in the stage topics, uncommitted, after
    an upgrade. By then the inputs have a backlog: were the sources taken as
    idle, the first partition routed would carry every stage's clock past
    postures not yet routed, and accesses would be judged against stale ones
    (CI once saw two extra SEP-006 after a SIGKILL this way). The stages skip
    them; here the old validator's last words are written directly."""
    lines = _day(users=120, seed=9)
    want = _replayed(lines)
    topics = Topics(prefix)
    out = producer(broker)
    for stage in STAGES:
        for source in topics.inputs:
            if source not in feeds(topics)[stage]:
                continue
            for input_partition in range(PARTITIONS):
                name = f"{source}:{input_partition}".encode()
                for p in range(PARTITIONS):
                    out.send(
                        topics.stage(stage),
                        key=SOURCE_IDLE,
                        value=b"",
                        partition=p,
                        headers=[("sepwatch-source", name)],
                    )
    out.flush()
    out.close()
    produce(lines, broker, topics, end_of_input=True, marker_key=MARKER_KEY)
    worker = workers("a")
    worker.wait_ready()
    wait_for(lambda: len(_exported(broker, topics)) >= len(want), timeout=120)
    settled(broker, topics)
    _compare(want, _exported(broker, topics))


def test_bad_records_go_to_the_dead_letters_and_the_worker_goes_on(
    broker: str, prefix: str, workers: Callable[..., Worker]
) -> None:
    topics = Topics(prefix)
    worker = workers("a")
    worker.wait_ready()
    raw = KafkaProducer(bootstrap_servers=broker, max_request_size=4 << 20)
    bad = {
        b"not json at all 900101-1234568": "json",
        b'{"stream": "saas_access", "event_id": "x1"}': "timestamp",
        b'{"stream": "dlp_alert", "event_id": "x2", '
        b'"timestamp": "2026-11-23T10:00:00"}': "timezone",
        b'{"stream": "x", "pad": "' + b"9" * (1 << 20) + b'"}': "limit",
    }
    for record in bad:
        raw.send(topics.input("saas_access"), record)
    raw.flush()
    raw.close()
    good = json.dumps(
        {
            "stream": "saas_access",
            "event_id": "after-bad",
            "timestamp": "2026-11-23T10:00:00Z",
            "entity": "HQ",
            "user_id": "u1",
            "device_id": "d1",
            "saas_app": "notion",
            "action": "view",
            "network_zone": "internal",
            "source": "test",
        }
    ).encode()
    produce([good], broker, topics, end_of_input=True, marker_key=MARKER_KEY)
    wait_for(lambda: len(read_dead_letters(broker, topics)) >= len(bad))
    letters = read_dead_letters(broker, topics)
    assert len(letters) == len(bad)
    reasons = " | ".join(d["reason"].lower() for d in letters)
    for word in ("json", "timestamp", "timezone", "limit"):
        assert word in reasons, reasons
    assert "1234568" not in json.dumps(letters)
    wait_for(lambda: any(f["rule_id"] == "SEP-001" for f in _exported(broker, topics).values()))
    assert any(
        f["evidence_event_ids"] == ["after-bad"] and f["rule_id"] == "SEP-001"
        for f in _exported(broker, topics).values()
    )


def test_a_policy_edited_while_running_applies_to_events_from_then_on(
    broker: str, prefix: str, workers: Callable[..., Worker], tmp_path: Path
) -> None:
    topics = Topics(prefix)
    policy = tmp_path / "policy.yaml"
    original = POLICY.read_text(encoding="utf-8")
    policy.write_text(original, encoding="utf-8")
    worker = workers("a", policy)
    worker.wait_ready()

    def access(event_id: str) -> bytes:
        return json.dumps(
            {
                "stream": "saas_access",
                "event_id": event_id,
                "entity": "HQ",
                "timestamp": datetime.now(ZoneInfo("UTC")).isoformat(),
                "user_id": "u1",
                "device_id": None,
                "saas_app": "notion",
                "action": "view",
                "network_zone": "internal",
                "source": "test",
            }
        ).encode()

    def sep001() -> set[str]:
        return {
            f["evidence_event_ids"][0]
            for f in _exported(broker, topics).values()
            if f["rule_id"] == "SEP-001"
        }

    produce([access("under-old")], broker, topics, end_of_input=False)
    assert wait_for(lambda: "under-old" in sep001())
    # notion joins the registry: accesses stamped from the load on are fine.
    policy.write_text(
        original.replace(
            "registry:\n",
            "registry:\n  - {app_id: notion, "
            "category: collaboration, evaluated: true, evaluation_valid_from: "
            "2026-04-20, evaluation_valid_until: 2027-12-31}\n",
            1,
        ),
        encoding="utf-8",
    )
    assert wait_for(lambda: "it judges events stamped" in worker.log.read_text(), timeout=30)
    produce([access("under-new")], broker, topics, end_of_input=False)
    # A policy that does not validate is refused; the running one stays.
    policy.write_text(original.replace("max_age: 24h", "max_age: soon"), encoding="utf-8")
    assert wait_for(lambda: "the running policy stays" in worker.log.read_text(), timeout=30)
    produce([access("still-new")], broker, topics, end_of_input=False)
    settled(broker, topics)  # all three judged: a finding for a later one is there now
    assert sep001() == {"under-old"}
    assert "posture.max_age" in worker.log.read_text()


def test_a_started_worker_judges_earlier_events_by_the_recorded_version_not_its_file(
    broker: str, prefix: str, workers: Callable[..., Worker], tmp_path: Path
) -> None:
    topics = Topics(prefix)
    settings = Settings(broker=broker, topic_prefix=prefix)
    changed = datetime.now(UTC) - timedelta(minutes=30)
    # What the workers recorded: notion unregistered, then registered from `changed` on.
    record_if_changed(settings, load_policy(POLICY), "v1", at=changed - timedelta(days=1))
    today = tmp_path / "policy.yaml"
    today.write_text(
        POLICY.read_text(encoding="utf-8").replace(
            "registry:\n",
            "registry:\n  - {app_id: notion, category: collaboration, evaluated: true, "
            "evaluation_valid_from: 2026-04-20, evaluation_valid_until: 2027-12-31}\n",
            1,
        ),
        encoding="utf-8",
    )
    record_if_changed(settings, load_policy(today), "v2", at=changed)
    # A worker (re)started with today's file.
    worker = workers("a", today)
    worker.wait_ready()
    lines = [
        notion_access("before", changed - timedelta(minutes=10)).encode(),
        notion_access("after", changed + timedelta(minutes=10)).encode(),
    ]
    produce(lines, broker, topics, end_of_input=True, marker_key=MARKER_KEY)

    def sep001() -> set[str]:
        return {
            f["evidence_event_ids"][0]
            for f in _exported(broker, topics).values()
            if f["rule_id"] == "SEP-001"
        }

    assert wait_for(lambda: "before" in sep001(), timeout=120)
    assert sep001() == {"before"}, "the later access was judged by the older version"
    # Its file is the newest version already: nothing new recorded.
    assert len(read_versions(broker, topics.policy)) == 2


def test_the_worker_refuses_to_start_without_a_broker_or_with_wrong_partitions(
    broker: str, prefix: str
) -> None:
    def worker(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cli.main", "worker", "--web-port", "0", *args],
            capture_output=True,
            text=True,
            timeout=120,
        )

    nobody = worker("--broker", "127.0.0.1:1")
    assert nobody.returncode == 2
    assert "no Kafka broker answers at 127.0.0.1:1" in " ".join(nobody.stderr.split())
    ensure_topics(broker, Topics(prefix), PARTITIONS, retention_ms=3_600_000)
    wrong = worker("--broker", broker, "--prefix", prefix, "--partitions", "2")
    assert wrong.returncode == 2
    assert "co-partitioning" in wrong.stderr and "has 4 partitions, not 2" in " ".join(
        wrong.stderr.split()
    )


def test_the_stage_changelogs_exist_with_their_partitions_before_a_worker_starts(
    broker: str, prefix: str
) -> None:
    """Two workers started together once left one of them with metadata of a
    changelog the other was creating: its stage agent crashed on every table
    write, losing records (the two-worker test above, under load)."""
    from streams.kafka_io import admin

    topics = Topics(prefix)
    ensure_topics(broker, topics, PARTITIONS, retention_ms=3_600_000)
    client = admin(broker)
    try:
        described = {
            info.get("name") or info.get("topic"): len(info.get("partitions") or [])
            for info in client.describe_topics(topics.changelogs)
        }
    finally:
        client.close()
    assert len(topics.changelogs) == 21  # 3 stages x 7 stores, identities and sessions included
    assert described == {name: PARTITIONS for name in topics.changelogs}
