"""The validator's routing (streams/validator.py) against an in-memory
producer: events reach the stage partitions that judge them in batches, in
the order read; markers follow the data read before them; what the broker
refuses is dead-lettered or read again, never dropped."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError
from aiokafka.structs import TopicPartition
from pydantic import SecretStr

from detectors.pseudonyms import Pseudonymiser
from schemas import EventAdapter
from streams.end_of_input import signed_marker
from streams.partition_clock import CLOCK, CLOCK_MARK, GRID_SECONDS, is_clock_mark
from streams.settings import Settings
from streams.topics import Topics, partition_of, stage_keys
from streams.validator import (
    BATCH_BYTES,
    END_OF_INPUT,
    EVENTS,
    Entry,
    InputValidator,
    TimeOnly,
    Undeliverable,
    _Handover,
    events_record,
    read_events,
)
from tests.hostile import BASE, TEMPLATES

TOPICS = Topics("v.")
PARTITIONS = 4
APPENDED_MS = int(BASE.timestamp() * 1000) + 30_000


@dataclass
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp: int = APPENDED_MS


@dataclass
class Sent:
    topic: str
    key: bytes | None
    value: bytes
    partition: int | None
    headers: list[tuple[str, bytes]]


class Broker:
    """Takes what the validator sends; refuses what `refuse` says."""

    def __init__(self, refuse: Any = None) -> None:
        self.sent: list[Sent] = []
        self.refuse = refuse or (lambda sent: None)

    async def send(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        partition: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> asyncio.Future[Any]:
        sent = Sent(topic, key, value, partition, headers or [])
        delivery: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.deliver(sent, delivery)
        return delivery

    def deliver(self, sent: Sent, delivery: asyncio.Future[Any]) -> None:
        error = self.refuse(sent)
        if error is None:
            self.sent.append(sent)
            delivery.set_result(None)
        else:
            delivery.set_exception(error)

    def batches(self) -> dict[tuple[str, int | None], list[list[tuple[str, bytes]]]]:
        out: dict[tuple[str, int | None], list[list[tuple[str, bytes]]]] = {}
        for s in self.sent:
            if s.key == EVENTS:
                events = [e for e in read_events(s.value) if not clock_entry(e)]
                if events:
                    out.setdefault((s.topic, s.partition), []).append(events)
        return out

    def clock_entries(self) -> dict[tuple[str, int | None], list[tuple[str, float]]]:
        """The input partitions' clocks passed on, by stage partition."""
        out: dict[tuple[str, int | None], list[tuple[str, float]]] = {}
        for s in self.sent:
            if s.key == EVENTS:
                for source, raw in read_events(s.value):
                    if isinstance(raw, TimeOnly) and raw.stream == CLOCK:
                        out.setdefault((s.topic, s.partition), []).append((source, raw.ts))
        return out


def clock_entry(entry: tuple[str, Any]) -> bool:
    return isinstance(entry[1], TimeOnly) and entry[1].stream == CLOCK


MARKER_KEY = SecretStr("validator-test-key")


def validator(broker: Broker) -> InputValidator:
    settings = Settings(topic_prefix="v.", end_of_input_key=MARKER_KEY)
    v = InputValidator(settings, partitions=PARTITIONS, pseudonyms=Pseudonymiser(b"k"))
    v._producer = broker  # type: ignore[assignment]
    return v


def record(event: dict[str, Any], offset: int, partition: int = 0) -> Record:
    topic = TOPICS.input(event["stream"])
    return Record(topic, partition, offset, b"k", json.dumps(event).encode())


def accesses(n: int, action: str = "upload") -> list[dict[str, Any]]:
    """Internal uploads: every stage they go to takes all of them."""
    access = {**TEMPLATES[0], "action": action}
    return [
        {**access, "event_id": f"a{i}", "user_id": f"u{i % 7}", "device_id": f"d{i % 5}"}
        for i in range(n)
    ]


def test_events_reach_the_stage_partitions_that_judge_them_in_one_batch_each() -> None:
    broker = Broker()
    events = accesses(40)
    asyncio.run(validator(broker).route([record(e, i) for i, e in enumerate(events)]))
    batches = broker.batches()
    for stage in ("device", "user"):
        for p in range(PARTITIONS):
            want = [
                e["event_id"]
                for e in events
                if partition_of(stage_keys(EventAdapter.validate_python(e))[stage], PARTITIONS) == p
            ]
            got = batches.get((TOPICS.stage(stage), p), [])
            assert len(got) == (1 if want else 0)
            entries = got[0] if got else []
            assert [json.loads(raw)["event_id"] for _, raw in entries] == want
            assert all(source == f"{TOPICS.input('saas_access')}:0" for source, _ in entries)


def test_with_learned_identity_the_device_stage_is_one_partition_in_arrival_order() -> None:
    broker = Broker()
    v = validator(broker)
    v.settings = Settings(topic_prefix="v.", end_of_input_key=MARKER_KEY, learned_identity=True)
    events = accesses(40)
    asyncio.run(v.route([record(e, i) for i, e in enumerate(events)]))
    batches = broker.batches()
    device = {
        p: batches[TOPICS.stage("device"), p]
        for p in range(PARTITIONS)
        if (TOPICS.stage("device"), p) in batches
    }
    assert len(device) == 1  # five devices, one partition
    (entries,) = next(iter(device.values()))
    assert [json.loads(raw)["event_id"] for _, raw in entries] == [e["event_id"] for e in events]
    assert len({p for (topic, p) in batches if topic == TOPICS.stage("user")}) > 1


def test_with_learned_identity_a_posture_with_aliases_reaches_every_user_partition() -> None:
    """Their copies of the identity graph name the devices of the DLP alerts
    each judges; a posture that names its device one way stays off them."""
    broker = Broker()
    v = validator(broker)
    v.settings = Settings(topic_prefix="v.", end_of_input_key=MARKER_KEY, learned_identity=True)
    posture = next(t for t in TEMPLATES if t["stream"] == "device_posture")
    aliased = {
        **posture,
        "event_id": "p-aliased",
        "device_aliases": [
            {"kind": "falcon_aid", "value": "f-1"},
            {"kind": "serial", "value": "s"},
        ],
    }
    asyncio.run(v.route([record(posture, 0), record(aliased, 1)]))
    batches = broker.batches()
    user = {
        p: [
            json.loads(raw)["event_id"]
            for batch in batches.get((TOPICS.stage("user"), p), [])
            for _, raw in batch
        ]
        for p in range(PARTITIONS)
    }
    assert user == {p: ["p-aliased"] for p in range(PARTITIONS)}
    device = [p for (topic, p) in batches if topic == TOPICS.stage("device")]
    assert len(device) == 1


def test_the_user_stage_gets_only_the_time_of_an_access_it_does_not_keep() -> None:
    broker = Broker()
    views, uploads = accesses(20, action="view"), accesses(20)
    events = [e for pair in zip(views, uploads, strict=True) for e in pair]
    for i, e in enumerate(events):
        e["event_id"] = f"e{i}"
        e["timestamp"] = (BASE + timedelta(seconds=i)).isoformat()
    asyncio.run(validator(broker).route([record(e, i) for i, e in enumerate(events)]))
    batches = broker.batches()
    for stage in ("device", "user"):
        got = [
            raw
            for p in range(PARTITIONS)
            for batch in batches.get((TOPICS.stage(stage), p), [])
            for _, raw in batch
        ]
        assert len(got) == len(events)
        whole = sorted(json.loads(raw)["event_id"] for raw in got if isinstance(raw, bytes))
        times = sorted(raw.ts for raw in got if isinstance(raw, TimeOnly))
        if stage == "device":  # judges every access
            assert whole == sorted(e["event_id"] for e in events) and not times
        else:  # remembers uploads; a view only moves its clock
            assert whole == sorted(e["event_id"] for e in uploads)
            assert times == sorted(
                datetime.fromisoformat(e["timestamp"]).timestamp() for e in views
            )
            assert all(raw.stream == "saas_access" for raw in got if isinstance(raw, TimeOnly))


def test_an_end_of_input_marker_follows_the_data_read_before_it() -> None:
    broker = Broker()
    events = accesses(10)
    signed = signed_marker(MARKER_KEY, TOPICS.input("saas_access"), 0, 1.0, APPENDED_MS / 1000)
    marker = Record(TOPICS.input("saas_access"), 0, 5, END_OF_INPUT, signed)
    records = [record(e, i) for i, e in enumerate(events[:5])] + [marker]
    records += [record(e, 6 + i) for i, e in enumerate(events[5:])]
    asyncio.run(validator(broker).route(records))
    first = {e["event_id"] for e in events[:5]}
    for stage in ("device", "user", "review"):
        for p in range(PARTITIONS):
            # What this stage partition reads, in order: event ids, and "END".
            reads: list[str] = []
            for s in broker.sent:
                if (s.topic, s.partition) != (TOPICS.stage(stage), p):
                    continue
                if s.key == END_OF_INPUT:
                    reads.append("END")
                else:
                    reads += [
                        json.loads(e[1])["event_id"]
                        for e in read_events(s.value)
                        if not clock_entry(e)
                    ]
            assert reads.count("END") == 1
            end = reads.index("END")
            assert set(reads[:end]) <= first
            assert not set(reads[end + 1 :]) & first


def test_a_batch_over_the_size_limit_is_split_between_events_never_inside_one() -> None:
    broker = Broker()
    # Unknown fields travel with the event (schemas/events.py): they make it big.
    events = [{**e, "vendor_note": "x" * 2000} for e in accesses(400)]
    asyncio.run(validator(broker).route([record(e, i) for i, e in enumerate(events)]))
    assert all(len(s.value) <= BATCH_BYTES + 4096 for s in broker.sent)
    user = broker.batches()
    assert sorted(routed_ids(broker, "user")) == sorted(e["event_id"] for e in events)
    assert max(len(v) for v in user.values()) > 1  # some partition needed two records


def test_an_event_the_broker_refuses_as_too_large_becomes_a_dead_letter_without_it() -> None:
    huge = {**TEMPLATES[0], "event_id": "huge", "vendor_note": "y" * 300_000}

    def refuse(sent: Sent) -> Exception | None:
        return MessageSizeTooLargeError() if len(sent.value) > 200_000 else None

    broker = Broker(refuse)
    asyncio.run(validator(broker).route([record(huge, 3), record(TEMPLATES[0], 4)]))
    letters = [json.loads(s.value) for s in broker.sent if s.topic == TOPICS.dead_letters]
    assert len(letters) == 1  # once, though it was on its way to three stages
    where = (letters[0]["topic"], letters[0]["partition"], letters[0]["offset"])
    assert where == (TOPICS.input("saas_access"), 0, 3)
    assert "MessageSizeTooLargeError" in letters[0]["reason"]
    assert "y" * 100 not in json.dumps(letters[0])
    routed = [raw for batch in broker.batches().values() for b in batch for _, raw in b]
    assert any(json.loads(raw)["event_id"] == TEMPLATES[0]["event_id"] for raw in routed)


def test_a_batch_the_broker_does_not_take_is_undeliverable_and_so_read_again() -> None:
    broker = Broker(lambda sent: KafkaTimeoutError() if sent.key == EVENTS else None)
    with pytest.raises(Undeliverable, match="KafkaTimeoutError"):
        asyncio.run(validator(broker).route([record(e, i) for i, e in enumerate(accesses(3))]))


def test_a_record_that_is_not_an_event_is_a_dead_letter_and_the_rest_is_routed() -> None:
    broker = Broker()
    bad = Record(TOPICS.input("saas_access"), 1, 9, b"k", b'{"stream": "saas_access", "rrn": 1')
    asyncio.run(validator(broker).route([bad, record(TEMPLATES[0], 10, partition=1)]))
    letters = [json.loads(s.value) for s in broker.sent if s.topic == TOPICS.dead_letters]
    assert [letter["offset"] for letter in letters] == [9]
    assert sum(len(b) for bs in broker.batches().values() for b in bs) == 3  # three stages


BATCH: list[Entry] = [
    ("v.saas-access:0", b'{\n "stream": "saas_access",\n "note": "\xed\x95\x9c\\n"}'),
    ("v.saas-access:2", TimeOnly("saas_access", 1795000000.123456)),
    ("v.dlp-alerts:3", b"{}"),
    ("v.saas-access:1", b'{"a": "\\u0000"}'),
]


def test_a_batch_record_gives_back_each_event_as_read_newlines_and_unicode_included() -> None:
    assert read_events(events_record(BATCH)) == BATCH
    with pytest.raises(ValueError, match="not"):
        read_events(events_record(BATCH)[:-2])


def test_a_batch_record_carries_no_append_time_and_one_written_with_them_still_reads() -> None:
    """The stage records an older validator wrote, each entry with its input
    record's append time second, are judged after an upgrade as before."""
    value = events_record(BATCH)
    head = json.loads(value.partition(b"\n")[0])
    assert head[:2] == [
        ["v.saas-access:0", len(BATCH[0][1])],
        ["v.saas-access:2", None, "saas_access", 1795000000.123456],
    ]
    appended = [1.5, 1.75, 2.25, 3.0]
    old_head = [[item[0], at, *item[1:]] for item, at in zip(head, appended, strict=True)]
    old = json.dumps(old_head).encode() + value[value.index(b"\n") :]
    assert read_events(old) == BATCH


def routed_ids(broker: Broker, stage: str) -> list[str]:
    """The ids of the whole events routed to a stage's partitions."""
    return [
        json.loads(raw)["event_id"]
        for (topic, _), batches in broker.batches().items()
        if topic == TOPICS.stage(stage)
        for batch in batches
        for _, raw in batch
        if isinstance(raw, bytes)
    ]


def test_a_batch_read_again_after_a_failed_delivery_sends_its_review_ticks_again() -> None:
    down = {"broker": True}
    broker = Broker(lambda sent: KafkaTimeoutError() if down["broker"] else None)
    v = validator(broker)
    records = [record(e, i) for i, e in enumerate(accesses(3))]
    with pytest.raises(Undeliverable):
        asyncio.run(v.route(records))
    down["broker"] = False
    asyncio.run(v.route(records))
    # One tick a minute per entity: the first access of the minute.
    assert routed_ids(broker, "review") == ["a0"]


class Consumer:
    """What the validator asks of its consumer when it commits or reads again."""

    def __init__(self, owned: set[TopicPartition]) -> None:
        self.owned = owned
        self.seeks: dict[TopicPartition, int] = {}
        self.commits: list[dict[TopicPartition, int]] = []

    def assignment(self) -> set[TopicPartition]:
        return self.owned

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks[tp] = offset

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))


def _read(events: list[dict[str, Any]], first: int) -> dict[TopicPartition, list[Any]]:
    records = [record(e, first + i) for i, e in enumerate(events)]
    return {TopicPartition(records[0].topic, 0): records}


def test_a_batch_sent_while_the_one_before_failed_is_read_again_with_it() -> None:
    down = {"broker": True}
    broker = Broker(lambda sent: KafkaTimeoutError() if down["broker"] else None)
    v = validator(broker)
    tp = TopicPartition(TOPICS.input("saas_access"), 0)
    v._consumer = Consumer({tp})  # type: ignore[assignment]
    events = accesses(6)
    first, second = _read(events[:3], 0), _read(events[3:], 3)

    async def run() -> None:
        assert not await v.take(first)  # in flight; its delivery fails
        await asyncio.sleep(0)  # its records reach the producer
        down["broker"] = False
        with pytest.raises(Undeliverable):
            await v.take(second)  # delivered, but read after a batch that was not

    asyncio.run(run())
    assert v.routed == {}  # nothing may be committed past the failed batch
    assert v._consumer.seeks == {tp: 0}  # type: ignore[union-attr]
    assert v.in_flight is None

    async def again() -> None:
        await v.take(first)
        assert await v.take(second)
        await v.settle_in_flight()

    asyncio.run(again())
    assert v.routed == {tp: 6}
    routed = routed_ids(broker, "user")
    assert sorted(set(routed)) == sorted(e["event_id"] for e in events)


def test_partitions_taken_away_commit_the_batch_in_flight_once_it_is_delivered() -> None:
    v = validator(Broker())
    tp = TopicPartition(TOPICS.input("saas_access"), 0)
    consumer = Consumer({tp})
    v._consumer = consumer  # type: ignore[assignment]

    async def run() -> None:
        await v.take(_read(accesses(3), 0))
        assert v.routed == {}  # in flight
        await _Handover(v).on_partitions_revoked({tp})

    asyncio.run(run())
    assert consumer.commits == [{tp: 3}]


class SlowBroker(Broker):
    """Deliveries stay pending until the test settles them."""

    def __init__(self) -> None:
        super().__init__()
        self.pending: list[asyncio.Future[Any]] = []

    def deliver(self, sent: Sent, delivery: asyncio.Future[Any]) -> None:
        self.pending.append(delivery)


def test_partitions_taken_away_while_a_batch_settles_never_commit_the_batch_after_it() -> None:
    """aiokafka calls the rebalance listener from its own task: it can come
    while the loop waits for a batch, with the next one already sent."""
    broker = SlowBroker()
    v = validator(broker)
    tp = TopicPartition(TOPICS.input("saas_access"), 0)
    consumer = Consumer({tp})
    v._consumer = consumer  # type: ignore[assignment]

    async def run() -> None:
        await v.take(_read(accesses(3), 0))
        await asyncio.sleep(0)
        first = list(broker.pending)
        taking = asyncio.create_task(v.take(_read(accesses(3), 3)))
        await asyncio.sleep(0.01)
        revoking = asyncio.create_task(_Handover(v).on_partitions_revoked({tp}))
        await asyncio.sleep(0.01)
        for delivery in broker.pending:  # the second batch arrives, the first does not
            if delivery in first:
                delivery.set_exception(KafkaTimeoutError())
            else:
                delivery.set_result(None)
        with pytest.raises(Undeliverable):
            await taking
        await revoking

    asyncio.run(run())
    assert consumer.commits == []
    assert v.routed == {}
    assert consumer.seeks == {tp: 0}


def test_a_clock_mark_reaches_every_stage_partition_its_topic_feeds_after_the_data() -> None:
    broker = Broker()
    access = TOPICS.input("saas_access")
    mark = Record(access, 1, 7, CLOCK_MARK, json.dumps({"ts": BASE.timestamp()}).encode())
    asyncio.run(validator(broker).route([record(accesses(1)[0], 6, partition=1), mark]))
    clocks = broker.clock_entries()
    # saas-access feeds every stage; each of its partitions learns the mark
    assert {(t, p) for t, p in clocks} == {
        (TOPICS.stage(s), p) for s in ("device", "user", "review") for p in range(PARTITIONS)
    }
    for entries in clocks.values():
        assert entries[-1] == (f"{access}:1", BASE.timestamp())


def test_a_clock_mark_ahead_of_its_append_time_is_capped_as_an_event_would_be() -> None:
    broker = Broker()
    far = APPENDED_MS / 1000 + 86_400
    mark = Record(TOPICS.input("dlp_alert"), 0, 0, CLOCK_MARK, json.dumps({"ts": far}).encode())
    asyncio.run(validator(broker).route([mark]))
    (entries,) = {tuple(e) for e in broker.clock_entries().values()}
    assert entries == ((f"{TOPICS.input('dlp_alert')}:0", APPENDED_MS / 1000 + 300.0),)


def test_an_input_partition_crossing_a_grid_line_tells_every_stage_partition_it_feeds() -> None:
    broker = Broker()
    first = accesses(1)[0]
    later = {
        **first,
        "event_id": "a-later",
        "timestamp": (
            datetime.fromisoformat(first["timestamp"]) + timedelta(minutes=2)
        ).isoformat(),
    }
    asyncio.run(validator(broker).route([record(first, 0), record(later, 1)]))
    for entries in broker.clock_entries().values():
        lines = [ts for _, ts in entries]
        assert lines == sorted(lines) and len(lines) == 2  # one per grid line crossed
        assert all(ts % GRID_SECONDS == 0 for ts in lines)


def test_review_ticks_are_kept_per_input_partition() -> None:
    """Which event of a minute ticks the review stage is its own partition's
    to say, whatever the validator read before from another partition."""
    broker = Broker()
    a, b = accesses(2)
    b = {**b, "timestamp": a["timestamp"]}
    asyncio.run(validator(broker).route([record(a, 0, partition=0), record(b, 0, partition=1)]))
    review = [
        raw
        for (t, _), bs in broker.batches().items()
        if t == TOPICS.stage("review")
        for b_ in bs
        for _, raw in b_
    ]
    assert len(review) == 2


class _Consumer:
    """Two input partitions, both read to their end."""

    def __init__(self, tps: list[TopicPartition]) -> None:
        self.tps = tps

    def assignment(self) -> set[TopicPartition]:
        return set(self.tps)

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: 5 for tp in tps}

    async def position(self, tp: TopicPartition) -> int:
        return 5


def test_a_quiet_partition_gets_a_clock_mark_written_into_it_once_per_move() -> None:
    """So it holds no stage's decisions while the others move on, and a
    re-read finds the mark where it was (it is in the input topic)."""
    broker = Broker()
    v = validator(broker)
    busy, quiet = (TopicPartition(TOPICS.input("saas_access"), p) for p in (0, 1))
    v._consumer = _Consumer([busy, quiet])  # type: ignore[assignment]
    access = accesses(1)[0]
    off_grid = datetime.fromisoformat(access["timestamp"]) + timedelta(seconds=7)
    asyncio.run(v.route([record({**access, "timestamp": off_grid.isoformat()}, 0)]))
    clock = v.clocks.clock[f"{busy.topic}:0"]
    v.heard = {busy: 0.0, quiet: 0.0}  # nothing read from either for long
    broker.sent.clear()
    asyncio.run(v._mark_quiet())
    marks = [s for s in broker.sent if is_clock_mark(s)]
    # The busy one too: the stages that got none of its events know only its grid line.
    assert sorted((s.topic, s.partition, json.loads(s.value)["ts"]) for s in marks) == [
        (busy.topic, 0, clock),
        (quiet.topic, 1, clock),
    ]
    broker.sent.clear()
    asyncio.run(v._mark_quiet())
    assert broker.sent == []  # not again until the clock moves


class _SlowToQueueBigRecords(Broker):
    """As the Kafka client does: a record that does not fit its partition's
    current batch is queued only after that batch is sent."""

    async def send(self, topic: str, value: bytes, **kwargs: Any) -> asyncio.Future[Any]:
        await asyncio.sleep(len(value) / 10_000_000)  # the bigger, the later
        return await super().send(topic, value, **kwargs)


def test_a_stage_partition_gets_an_input_partitions_events_in_their_order() -> None:
    """Else its later events come first and its earlier ones read as late."""
    broker = _SlowToQueueBigRecords()
    events = [{**e, "vendor_note": "x" * 2000} for e in accesses(1000)]
    asyncio.run(validator(broker).route([record(e, i) for i, e in enumerate(events)]))
    for p in range(PARTITIONS):
        got = [e for b in broker.batches().get((TOPICS.stage("user"), p), []) for e in b]
        ids = [json.loads(raw)["event_id"] for _, raw in got]
        assert ids == sorted(ids, key=lambda i: int(i[1:])), p
