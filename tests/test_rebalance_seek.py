"""`seek_before_fetch`, against a stand-in for Faust 0.15's consumer that keeps
what matters here: which partitions are paused, where each would be fetched
from next, and the read offsets. The end of a recovery is played in Faust's
order: resume the stream partitions, seek, clear the queues, resume the flow.
The killed-worker and two-worker tests in tests/integration/test_stream.py
show the same on a real broker, where the loss depends on timing."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

from faust.types import TP

from streams.stages.faust_compat import seek_before_fetch

CHANGELOG = "w-review-meta-changelog"
COMMITTED = TP("access", 0)  # the group committed offset 7
ZERO = TP("access", 1)  # committed 0
NEVER = TP("posture", 0)  # nothing committed: a new member, or a dead one's first records
LOG = TP(CHANGELOG, 0)
EARLIEST = {COMMITTED: 0, ZERO: 0, NEVER: 3, LOG: 0}


class Client:
    """aiokafka's consumer as far as pausing goes: a paused partition keeps its
    position and is handed over by no fetch."""

    def __init__(self, events: list[str]) -> None:
        self.paused: set[tuple[str, int]] = set()
        self.events = events

    def assignment(self) -> set[tuple[str, int]]:
        return {(tp.topic, tp.partition) for tp in EARLIEST}

    def pause(self, *tps: Any) -> None:
        self.paused |= {(tp.topic, tp.partition) for tp in tps}
        self.events.append("client pause " + ",".join(sorted(f"{t}:{p}" for t, p in tps)))

    def resume(self, *tps: Any) -> None:
        self.paused -= {(tp.topic, tp.partition) for tp in tps}


class Thread:
    """Faust's consumer thread, run inline: its loop runs a callback at once."""

    def __init__(self, client: Client) -> None:
        self._consumer = client
        self.thread_loop = SimpleNamespace(
            is_closed=lambda: False, call_soon_threadsafe=lambda fn, *args: fn(*args)
        )

    async def call_thread(self, fn: Any, *args: Any) -> Any:
        return await fn(*args)


class Consumer:
    def __init__(self) -> None:
        self.events: list[str] = []
        self._thread = Thread(Client(self.events))
        self._paused_partitions: set[TP] = set()
        self._read_offset: defaultdict[TP, int | None] = defaultdict(lambda: None)
        # Where the next fetch starts: each partition has been fetched to 20,
        # records that Faust then clears from the agents' queues.
        self.at = {tp: 20 for tp in EARLIEST}
        # What the next fetch hands over, and what happens while it is under way.
        self.batch: list[Any] = []
        self.during_fetch: Any = None
        self.fetched_during_seek: set[TP] = set()
        self.flow = False

    def assignment(self) -> set[TP]:
        return set(EARLIEST)

    def pause_partitions(self, tps: Any) -> None:
        self._paused_partitions |= set(tps)

    def resume_partitions(self, tps: Any) -> None:
        self._paused_partitions -= set(tps)

    def fetchable(self) -> set[TP]:
        return {tp for tp in EARLIEST if tp not in self._paused_partitions and self.flow}

    async def perform_seek(self) -> None:
        # Faust's seek over the Kafka client's: it moves only partitions whose
        # committed offset is above 0; the flow stays active meanwhile.
        self.fetched_during_seek |= self.fetchable() - {LOG}
        self.events.append("seek")
        committed = {COMMITTED: 7, ZERO: 0, NEVER: None, LOG: None}
        for tp, offset in committed.items():
            if offset:
                self.at[tp] = offset
            self._read_offset[tp] = offset
        await asyncio.sleep(0)

    async def earliest_offsets(self, *tps: TP) -> dict[TP, int]:
        return {tp: EARLIEST[tp] for tp in tps}

    async def seek(self, tp: TP, offset: int) -> None:
        self.at[tp] = offset
        self._read_offset[tp] = offset or None

    def resume_flow(self) -> None:
        self.flow = True

    async def position(self, tp: TP) -> int:
        return self.at[tp]

    async def getmany(self, timeout: float) -> Any:
        if self.during_fetch is not None:
            await self.during_fetch()
        for entry in self.batch:
            if callable(entry):  # something that happens while the batch is handed over
                await entry()
                continue
            tp, offset = entry
            yield tp, SimpleNamespace(offset=offset)


def _app() -> tuple[Any, Consumer]:
    consumer = Consumer()
    app = SimpleNamespace(consumer=consumer, tables=SimpleNamespace(changelog_topics={CHANGELOG}))
    seek_before_fetch(app)  # type: ignore[arg-type]
    consumer.flow = True  # recovery ran with the flow resumed
    return app, consumer


async def _end_of_recovery(consumer: Any, between: Any = None) -> None:
    """Faust 0.15's `Recovery.on_recovery_completed`, the part that matters."""
    consumer.resume_partitions({tp for tp in EARLIEST if tp.topic != CHANGELOG})
    await consumer.perform_seek()
    if between is not None:
        between()
    # app.flow_control.resume() clears the agents' queues here, then:
    consumer.resume_flow()


def test_no_stream_partition_is_fetched_during_the_seek_and_all_resume_with_the_flow() -> None:
    _, consumer = _app()
    consumer.pause_partitions({LOG})  # Faust pauses changelogs once recovered
    asyncio.run(_end_of_recovery(consumer))
    assert consumer.fetched_during_seek == set()
    assert consumer.fetchable() == {COMMITTED, ZERO, NEVER}


def test_the_kafka_client_pauses_what_faust_pauses_and_before_the_seek() -> None:
    """Faust's pause is its own books only: a fetch begun before it handed a
    paused partition's records over after the seek, moving the client's
    position past records Faust dropped (CI: a killed worker's successor
    resumed at 48 after a seek to 18). The client pauses them too, first."""
    _, consumer = _app()
    consumer.pause_partitions({LOG})
    client = consumer._thread._consumer
    assert client.paused == {(LOG.topic, LOG.partition)}

    async def seek_only() -> None:
        consumer.resume_partitions({tp for tp in EARLIEST if tp.topic != CHANGELOG})
        assert client.paused == {(LOG.topic, LOG.partition)}
        await consumer.perform_seek()

    asyncio.run(seek_only())
    streams = ",".join(sorted(f"{tp.topic}:{tp.partition}" for tp in EARLIEST if tp != LOG))
    assert consumer.events[-2:] == [f"client pause {streams}", "seek"]
    assert client.paused == {(tp.topic, tp.partition) for tp in consumer._paused_partitions}
    consumer.resume_flow()
    assert client.paused == {(LOG.topic, LOG.partition)}


def test_every_stream_partition_is_sought_even_with_nothing_committed() -> None:
    _, consumer = _app()
    asyncio.run(_end_of_recovery(consumer))
    # Committed partitions go to their commit; the others to their earliest
    # offset, where the Kafka client alone would have left them at 20, past
    # records the clearing dropped. Changelogs are recovery's business.
    assert consumer.at == {COMMITTED: 7, ZERO: 0, NEVER: 3, LOG: 20}


def test_a_read_offset_moved_by_a_record_handed_out_before_the_pause_is_restored() -> None:
    _, consumer = _app()

    def late_record() -> None:
        consumer._read_offset[COMMITTED] = 19  # would drop offsets 7..19 as already read

    asyncio.run(_end_of_recovery(consumer, between=late_record))
    assert consumer._read_offset[COMMITTED] == 7
    assert consumer._read_offset[NEVER] == 3


def test_a_partition_faust_pauses_after_the_seek_stays_paused() -> None:
    _, consumer = _app()

    def rebalance_again() -> None:
        consumer.pause_partitions({NEVER})

    asyncio.run(_end_of_recovery(consumer, between=rebalance_again))
    assert consumer.fetchable() == {COMMITTED, ZERO, LOG}


def test_a_seek_from_the_fetch_loop_that_the_flow_overtakes_resumes_its_partitions() -> None:
    """Faust's fetch loop seeks back to the commits itself when a rebalance
    stops the flow under a fetch. Were the recovery to resume the flow while
    that seek awaits the broker, nothing would resume its partitions after it."""
    _, consumer = _app()

    async def run() -> None:
        fetch_loop = asyncio.create_task(consumer.perform_seek())
        await asyncio.sleep(0)  # it has paused its partitions and awaits the broker
        consumer.resume_flow()
        await fetch_loop

    asyncio.run(run())
    assert consumer.fetchable() == {COMMITTED, ZERO, NEVER, LOG}
    assert consumer._read_offset[COMMITTED] == 7


def test_a_seek_from_the_fetch_loop_overlapping_the_recovery_s_leaves_nothing_paused() -> None:
    _, consumer = _app()

    async def run() -> None:
        fetch_loop = asyncio.create_task(consumer.perform_seek())
        await asyncio.sleep(0)
        await _end_of_recovery(consumer)
        await fetch_loop

    asyncio.run(run())
    assert consumer.fetchable() == {COMMITTED, ZERO, NEVER, LOG}
    assert consumer.at == {COMMITTED: 7, ZERO: 0, NEVER: 3, LOG: 20}


async def _fetched(consumer: Any) -> list[tuple[TP, int]]:
    return [(tp, m.offset) async for tp, m in consumer.getmany(timeout=1.0)]


def test_records_a_fetch_hands_over_after_their_partition_s_seek_go_again_from_the_first() -> None:
    """The fetch in the consumer's thread was under way when the recovery
    sought: it hands over records read past the seek, and the client's
    position is past them. Queued, they would be cleared with the agents'
    queues (CI: a killed worker's successor judged none of some inputs)."""
    _, consumer = _app()

    async def seek_meanwhile() -> None:
        await _end_of_recovery(consumer)
        consumer.at[COMMITTED] = 12  # the fetch read 7..11 after the seek

    consumer.during_fetch = seek_meanwhile
    consumer.batch = [(COMMITTED, 7), (LOG, 30), (COMMITTED, 8), (COMMITTED, 11)]
    assert asyncio.run(_fetched(consumer)) == [(LOG, 30)]
    assert consumer.at[COMMITTED] == 7
    assert consumer._read_offset[COMMITTED] == 7
    # The next fetch, begun after the seek, hands them over.
    consumer.during_fetch = None
    consumer.batch = [(COMMITTED, 7), (COMMITTED, 8)]
    assert asyncio.run(_fetched(consumer)) == [(COMMITTED, 7), (COMMITTED, 8)]


def test_records_from_before_a_seek_that_lie_ahead_of_the_position_move_nothing() -> None:
    _, consumer = _app()

    async def seek_meanwhile() -> None:
        await _end_of_recovery(consumer)  # back to 7; 7..19 will come again

    consumer.during_fetch = seek_meanwhile
    consumer.batch = [(COMMITTED, 20), (COMMITTED, 21)]
    assert asyncio.run(_fetched(consumer)) == []
    assert consumer.at[COMMITTED] == 7


def test_a_seek_in_the_middle_of_a_batch_reads_again_from_where_it_put_the_partition() -> None:
    """Records 7 and 8 were handed over (queued) before the seek, and are
    cleared with the queues after it; 9..11 come after it: the partition goes
    back to 7, not to 9."""
    _, consumer = _app()

    async def seek_meanwhile() -> None:
        await _end_of_recovery(consumer)
        consumer.at[COMMITTED] = 12

    consumer.batch = [
        (COMMITTED, 7),
        (COMMITTED, 8),
        seek_meanwhile,
        (COMMITTED, 9),
        (COMMITTED, 11),
    ]
    assert asyncio.run(_fetched(consumer)) == [(COMMITTED, 7), (COMMITTED, 8)]
    assert consumer.at[COMMITTED] == 7
    assert consumer._read_offset[COMMITTED] == 7
