"""Nothing lost on the stage path (issue 19): a finding the broker refuses is
never committed past, and a stage that raises on one event judges the rest."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition

from bench.harness import wait_for, wait_until
from detectors.masking import mask_text
from streams.kafka_io import admin, ensure_topics, produce, read_dead_letters, set_topic_configs
from streams.topics import STAGES, Topics
from tests.integration.conftest import MARKER_KEY, Worker
from tests.integration.settle import settled
from tests.integration.test_stream import (
    PARTITIONS,
    _compare,
    _day,
    _exported,
    _replayed,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def workers(broker: str, prefix: str, tmp_path: Path) -> Iterator[Callable[..., Worker]]:
    ensure_topics(broker, Topics(prefix), PARTITIONS, retention_ms=3_600_000)
    started: list[Worker] = []

    def start(name: str, guarantee: str, env: dict[str, str] | None = None) -> Worker:
        env = {**(env or {}), "SEPWATCH_PROCESSING_GUARANTEE": guarantee}
        w = Worker(broker, prefix, tmp_path / "state", tmp_path / f"{name}.log", env=env)
        started.append(w)
        return w

    yield start
    for w in started:
        w.stop()


def _findings_limit(broker: str, topic: str, max_bytes: int | None) -> None:
    """The findings topic's max.message.bytes; None: the broker's default again."""
    client = admin(broker)
    try:
        configs = {"max.message.bytes": str(max_bytes) if max_bytes else "1048588"}
        set_topic_configs(client, {topic: configs})
    finally:
        client.close()


def _stage_progress(broker: str, topics: Topics) -> tuple[int, int]:
    """The worker group's committed offsets on the stage topics, summed, and
    the stage topics' end offsets, summed."""
    consumer = KafkaConsumer(bootstrap_servers=broker, group_id=f"{topics.prefix}worker")
    try:
        parts = [TopicPartition(topics.stage(s), p) for s in STAGES for p in range(PARTITIONS)]
        committed = sum(consumer.committed(tp) or 0 for tp in parts)
        end = sum(consumer.end_offsets(parts).values())
        return committed, end
    finally:
        consumer.close()


def _refused_a_commit(worker: Worker) -> bool:
    """Whether the worker has tried to commit since a write failed and was
    refused. Faust commits when an agent crashes and every second, after the
    producer's flush, which raises Undelivered once a write failed
    (streams/topology.py); the failure is kept, so from the first refusal on
    no commit of this worker can pass, and what is committed is final."""
    text = worker.log.read_text(errors="replace")
    return (
        "callback raised: Undelivered(" in text
        or "Crashed reason=Undelivered(" in text
        or worker.proc.poll() is not None
    )


def _stops_saying_why(worker: Worker) -> None:
    wait_until(lambda: worker.proc.poll() is not None, "the worker stopped", timeout=120)
    assert worker.proc.returncode != 0
    text = worker.log.read_text(errors="replace")
    assert "stopping the worker: a write was not delivered" in text


def test_a_refused_finding_is_never_committed_past_and_appears_after_a_restart(
    broker: str, prefix: str, workers: Callable[..., Worker]
) -> None:
    """Issue 19, problem 1: with the findings topic refusing every finding as
    too large, the worker used to log a WARNING per finding and commit its
    stage offsets past them; restarted once the limit was lifted, it never
    wrote them. Now it commits nothing past an undelivered finding (nor
    writes the state changes that made it), and the restarted worker writes
    every finding replay finds. The at-least-once path (the benchmark's
    baseline and the fallback); exactly once aborts the transaction instead
    (tests/integration/test_exactly_once.py)."""
    topics = Topics(prefix)
    lines = _day(users=40, hours=2, seed=3)
    want = _replayed(lines)
    _findings_limit(broker, topics.findings, 200)  # below any finding's size
    first = workers("a", "at_least_once")
    first.wait_ready()
    produce(lines, broker, topics, end_of_input=True, marker_key=MARKER_KEY)
    assert wait_for(lambda: "was not delivered" in first.log.read_text(), timeout=120)
    wait_until(lambda: _refused_a_commit(first), "a commit refused after the failed write")
    # The stage records are read (and some judged) but not all committed: the
    # judging that wanted to write a finding is not.
    committed, end = _stage_progress(broker, topics)
    assert committed < end, (committed, end)
    assert _exported(broker, topics) == {}
    # It does not stay in the group holding its partitions while its agent is
    # restarted again and again: it stops, non-zero, saying why. So does a
    # worker started while the broker still refuses (the fault run's case).
    _stops_saying_why(first)
    second = workers("b", "at_least_once")
    second.wait_ready()
    _stops_saying_why(second)
    _findings_limit(broker, topics.findings, None)
    again = workers("c", "at_least_once")
    again.wait_ready()
    wait_for(lambda: len(_exported(broker, topics)) >= len(want), timeout=180)
    settled(broker, topics)  # anything extra is on the topic by now
    _compare(want, _exported(broker, topics))


@pytest.mark.parametrize("guarantee", ["exactly_once", "at_least_once"])
def test_a_stage_raising_on_one_event_dead_letters_it_and_judges_the_rest(
    broker: str, prefix: str, workers: Callable[..., Worker], guarantee: str
) -> None:
    """Issue 19, problem 2: an exception while judging used to make Faust
    acknowledge the stage record in hand and restart the agent, so the rest of
    the batch's events were never judged while their offset was committed.
    The stages are told to raise on one posture (SEPWATCH_TEST_FAULT_EVENT_ID):
    it is retried, then dead-lettered with the reason, and every other event
    is judged: the findings are replay's of the day without that event.
    Both guarantees judge a record the same way (streams.stages.runner.stage_judge)."""
    topics = Topics(prefix)
    lines = _day(users=40, hours=2, seed=4)
    postures = [n for n, line in enumerate(lines) if b'"device_posture"' in line]
    chosen = postures[len(postures) // 2]
    poison = json.loads(lines[chosen])["event_id"]
    want = _replayed(lines[:chosen] + lines[chosen + 1 :])
    worker = workers("a", guarantee, env={"SEPWATCH_TEST_FAULT_EVENT_ID": poison})
    worker.wait_ready()
    produce(lines, broker, topics, end_of_input=True, marker_key=MARKER_KEY)

    def stage_letters() -> list[dict[str, object]]:
        return [d for d in read_dead_letters(broker, topics) if d.get("stage")]

    # The device stage judges every posture (the review stage only a posture
    # that is its entity's first event of a minute, as a tick).
    assert wait_for(lambda: any(d["stage"] == "device" for d in stage_letters()), timeout=120)
    wait_for(lambda: len(_exported(broker, topics)) >= len(want), timeout=120)
    settled(broker, topics)  # anything extra is on the topic by now
    _compare(want, _exported(broker, topics))
    letters = stage_letters()
    assert {d["stage"] for d in letters} <= {"device", "review"}
    assert len(letters) == len({d["stage"] for d in letters})  # once each, not per retry
    for letter in letters:
        # The id names the event, masked as any text in a dead letter is.
        assert "InjectedFault" in str(letter["reason"])
        assert mask_text(poison) in str(letter["reason"])
        assert mask_text(poison) in str(letter["raw_masked"])
        assert str(letter["topic"]).startswith(prefix) and "offset" in letter
    text = worker.log.read_text()
    assert "judged again in" in text  # retried before it was dead-lettered
