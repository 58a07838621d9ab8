"""The exactly-once stage path's pieces that need no broker (the transactions
themselves are tested on one: tests/integration/test_exactly_once.py)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from aiokafka.structs import ConsumerRecord, TopicPartition
from pydantic import ValidationError

from detectors.pseudonyms import Pseudonymiser
from schemas.policy_file import load_policy
from streams.adapter_offsets import adapters_groups
from streams.exactly_once import (
    CAUGHT_UP_SECONDS,
    COMMIT_SECONDS,
    ExactlyOnceStages,
    OwnTable,
    PartitionTxn,
    Written,
    _Event,
    forget_partition,
)
from streams.settings import Settings
from streams.stages.store import PartitionStore, TableChanges
from streams.topics import Topics
from streams.topology import build_app

POLICY = Path(__file__).parents[1] / "deploy" / "policy" / "example.yaml"


def test_the_guarantee_is_exactly_once_unless_asked_and_nothing_else_is_taken() -> None:
    assert Settings().processing_guarantee == "exactly_once"
    assert Settings(processing_guarantee="at_least_once").processing_guarantee == "at_least_once"
    with pytest.raises(ValidationError):
        Settings(processing_guarantee="exactly-once")


def test_a_stage_record_reads_as_faust_gives_it_time_in_seconds() -> None:
    record = ConsumerRecord(
        "p.stage-device", 2, 41, 1_700_000_000_250, 0, b"k", b"v", None, 1, 1, [("s", b"x")]
    )
    event = _Event.of(record)
    assert (event.message.topic, event.message.partition, event.message.offset) == (
        "p.stage-device",
        2,
        41,
    )
    assert event.message.timestamp == 1_700_000_000.25
    assert (event.key, event.value, dict(event.headers)) == (b"k", b"v", {"s": b"x"})


def test_an_own_table_takes_changes_as_a_faust_table_and_forgets_one_partition() -> None:
    table = OwnTable("p.worker-device-postures-changelog")
    changes = TableChanges(None)
    two, three = PartitionStore(table, 2, changes), PartitionStore(table, 3, changes)
    two["dev"] = {"managed": True}
    three["dev"] = {"managed": False}
    del two["dev"]
    two["other"] = 1
    assert changes.changed[(table.changelog, 2)] == {"2|dev": None, "2|other": 1}
    assert changes.changed[(table.changelog, 3)] == {"3|dev": {"managed": False}}
    forget_partition([table], 2)
    assert table.data == {"3|dev": {"managed": False}}


def test_exactly_once_the_stages_leave_faust_and_faust_joins_a_group_of_its_own(
    tmp_path: Path,
) -> None:
    """One consumer group cannot mix Faust's assignor and aiokafka's: the
    stages' consumer keeps the group PREFIXworker (and its offsets)."""
    settings = Settings(state_dir=tmp_path, web_port=0, processing_guarantee="exactly_once")
    app = build_app(settings, load_policy(POLICY), pseudonyms=Pseudonymiser(b"eos-test-key"))
    assert app.conf.id == f"{settings.topic_prefix}adapters"
    assert not app.tables.changelog_topics
    assert not [a for a in app.agents if "stage-" in a]
    before = build_app(
        Settings(state_dir=tmp_path, web_port=0, processing_guarantee="at_least_once"),
        load_policy(POLICY),
        pseudonyms=Pseudonymiser(b"eos-test-key"),
    )
    assert before.conf.id == f"{settings.topic_prefix}worker"


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_the_adapters_offsets_are_carried_into_the_group_faust_joins(
    tmp_path: Path, guarantee: str
) -> None:
    """streams.adapter_offsets names the groups as streams.topology does."""
    settings = Settings(state_dir=tmp_path, web_port=0, processing_guarantee=guarantee)
    app = build_app(settings, load_policy(POLICY), pseudonyms=Pseudonymiser(b"eos-test-key"))
    ours, theirs = adapters_groups(settings)
    assert app.conf.id == ours
    assert {ours, theirs} == {f"{settings.topic_prefix}worker", f"{settings.topic_prefix}adapters"}


def test_a_finding_decided_again_is_not_written_again_until_the_state_is_rebuilt() -> None:
    """The validator routes at least once: a stage record routed twice makes
    the engines decide its findings again (same ids); exactly once, the
    partition's transaction writes each id once, and remembers it in the meta
    table's changelog, in the same transaction."""
    meta = OwnTable("p.worker-device-meta-changelog")
    changes = TableChanges(None)
    written = Written(meta, changes, 1)
    assert written.add(b"SEP-001-ab")
    assert not written.add(b"SEP-001-ab")
    assert written.add(b"SEP-002-cd")
    assert changes.changed[(meta.changelog, 1)] == {
        "1|written|SEP-001-ab": True,
        "1|written|SEP-002-cd": True,
    }
    forget_partition([meta], 1)  # an aborted transaction: rebuilt from the changelog
    assert Written(meta, TableChanges(None), 1).add(b"SEP-001-ab")


def test_the_written_ids_are_bounded_and_the_oldest_dropped_with_a_tombstone() -> None:
    """Without a bound the meta table would keep every finding id of the
    partition's life. The newest `kept` stay (a copy routed again comes soon
    after its first: still refused); the oldest go, deleted from the
    changelog in the same transaction, and a restore keeps that order."""
    meta = OwnTable("p.worker-device-meta-changelog")
    meta.data["2|written|SEP-009-other-partition"] = True
    changes = TableChanges(None)
    written = Written(meta, changes, 1, kept=3)
    for n in range(5):
        assert written.add(f"SEP-00{n}".encode())
    assert not written.add(b"SEP-004")  # the newest: never written twice
    assert not written.add(b"SEP-002")
    assert sorted(k for k in meta.data if k.startswith("1|")) == [
        "1|written|SEP-002",
        "1|written|SEP-003",
        "1|written|SEP-004",
    ]
    assert "2|written|SEP-009-other-partition" in meta.data
    changed = changes.changed[(meta.changelog, 1)]
    assert changed["1|written|SEP-000"] is None and changed["1|written|SEP-001"] is None
    # Restored (the table's keys in the order written), the bound holds on.
    again = Written(meta, TableChanges(None), 1, kept=3)
    assert again.add(b"SEP-005")
    assert "1|written|SEP-002" not in meta.data and "1|written|SEP-003" in meta.data


class _Fetched:
    """What commit_due asks of the stages' consumer: the assignment and each
    partition's end (high watermark) as of the last fetch."""

    def __init__(self, ends: dict[TopicPartition, int]) -> None:
        self.ends = ends

    def assignment(self) -> set[TopicPartition]:
        return set(self.ends)

    def highwater(self, tp: TopicPartition) -> int:
        return self.ends[tp]


@pytest.mark.parametrize(
    ("age", "judged_to", "due"),
    [
        (0.05, 100, False),  # caught up, but younger than CAUGHT_UP_SECONDS
        (CAUGHT_UP_SECONDS, 100, True),  # caught up: its findings go out now
        (0.5, 60, False),  # records still waiting: the transaction takes more
        (COMMIT_SECONDS, 60, True),  # a backlog commits once a second
    ],
)
def test_a_transaction_commits_soon_once_its_partition_is_caught_up(
    tmp_path: Path, age: float, judged_to: int, due: bool
) -> None:
    """Read-committed readers see a finding only once its transaction
    commits: a partition judged up to its end commits after
    CAUGHT_UP_SECONDS, not COMMIT_SECONDS, and one with records still
    waiting batches up to COMMIT_SECONDS (each commit costs round trips)."""
    tp = TopicPartition("p.stage-device", 1)
    stages = ExactlyOnceStages(
        Settings(state_dir=tmp_path, web_port=0), {}, Topics("p."), judge_for=lambda r, p: None
    )
    stages.consumer = _Fetched({tp: 100})  # type: ignore[assignment]
    meta = OwnTable("p.worker-device-meta-changelog")
    txn = PartitionTxn("device", None, "p.findings", Written(meta, TableChanges(None), 1))  # type: ignore[arg-type]
    txn.open, txn.began, txn.offset = True, time.monotonic() - age, judged_to
    stages.txns[tp] = txn
    committed: list[TopicPartition] = []

    async def commit(tp: TopicPartition, txn: PartitionTxn) -> None:
        committed.append(tp)

    async def decide() -> None:
        stages.commit = commit  # type: ignore[method-assign]
        stages.commit_due()
        await asyncio.gather(*stages.committing.values())

    asyncio.run(decide())
    assert committed == ([tp] if due else [])
