"""The findings topic's consumers read committed records only (issue 19): a
finding written in a Kafka transaction that was then aborted never happened
(a worker's transaction fails, or a zombie is fenced, and the records are
judged again), so the Elasticsearch sink, the alert router and `findings
export` must not see it. On a real broker, with aiokafka's transactional
producer writing one finding in an aborted transaction and one in a
committed one, into the same partition, the aborted one first."""

from __future__ import annotations

import asyncio
import io
import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from elasticsearch import Elasticsearch
from kafka import TopicPartition

from schemas import Finding
from streams.alerts.router import AlertRouter
from streams.kafka_io import admin, ensure_topics, export_findings
from streams.settings import ChannelSettings, Settings
from streams.sink import FindingsSink
from streams.topics import Topics
from tests.integration.receivers import HttpReceiver, wait_for
from tests.integration.settle import committed as committed_offsets
from tests.integration.settle import committed_past
from tests.integration.test_alerts import SECRET, _policy, _settings, finding, pd

pytestmark = pytest.mark.integration


async def _write(broker: str, topic: str, aborted: Finding, committed: Finding) -> int:
    """The committed finding's offset."""
    producer = AIOKafkaProducer(
        bootstrap_servers=broker, transactional_id=f"test-{uuid.uuid4().hex[:8]}"
    )
    await producer.start()
    try:
        for f, commit in ((aborted, False), (committed, True)):
            await producer.begin_transaction()
            sent = await producer.send_and_wait(
                topic, f.model_dump_json().encode(), key=f.finding_id.encode(), partition=0
            )
            if commit:
                await producer.commit_transaction()
            else:
                await producer.abort_transaction()
        return int(sent.offset)
    finally:
        await producer.stop()


def _two_findings(broker: str, topics: Topics) -> tuple[Finding, int]:
    """One aborted, one committed (returned, with its offset); different rules
    and users, so that the router would notify each on its own."""
    ensure_topics(broker, topics, partitions=2, retention_ms=3_600_000)
    at = datetime.now(UTC).replace(microsecond=0)
    aborted = finding(1, at, rule_id="SEP-002", user_id="u-aborted")
    committed = finding(2, at, user_id="u-committed")
    offset = asyncio.run(_write(broker, topics.findings, aborted, committed))
    return committed, offset


def test_findings_export_leaves_out_an_aborted_transaction(broker: str, prefix: str) -> None:
    topics = Topics(prefix)
    committed, _ = _two_findings(broker, topics)
    out = io.StringIO()
    assert export_findings(broker, topics, out) == 1
    assert [json.loads(line)["finding_id"] for line in out.getvalue().splitlines()] == [
        committed.finding_id
    ]


def test_the_sink_indexes_only_committed_findings(
    broker: str, prefix: str, elasticsearch: str
) -> None:
    topics = Topics(prefix)
    committed, _ = _two_findings(broker, topics)
    index = f"{prefix.rstrip('.')}-findings"
    settings = Settings(broker=broker, topic_prefix=prefix, es_url=elasticsearch, es_index=index)

    async def main() -> None:
        stop = asyncio.Event()
        sink = FindingsSink(settings)
        task = asyncio.create_task(sink.run(stop))
        # The aborted record precedes the committed one in their partition: a
        # sink that read it has settled it by the time the other is settled.
        deadline = time.monotonic() + 60
        while sink.settled < 1 and not task.done() and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        stop.set()
        await task

    asyncio.run(main())
    es = Elasticsearch(elasticsearch, request_timeout=30)
    try:
        es.indices.refresh(index=index)
        hits = es.search(index=index, query={"match_all": {}}, size=10)["hits"]["hits"]
    finally:
        es.close()
    assert [h["_id"] for h in hits] == [committed.finding_id]
    # Settled: committed past the committed finding, though one short of the
    # partition's end (the commit marker follows it).
    committed_past(broker, f"{prefix}es-sink", [topics.findings], timeout=30)


def test_the_alert_router_notifies_only_committed_findings(broker: str, prefix: str) -> None:
    topics = Topics(prefix)
    committed, offset = _two_findings(broker, topics)
    client = admin(broker)

    def past_committed() -> bool:
        """The router has committed past the committed finding: every batch
        up to it delivered, the aborted finding's included had it been read."""
        done = committed_offsets(client, f"{prefix}alerts")
        return done.get(TopicPartition(topics.findings, 0), 0) > offset

    async def main() -> list[dict[str, Any]]:
        async with HttpReceiver() as hook:
            config = ChannelSettings(kind="webhook", url=hook.url, secret=SECRET)
            router = AlertRouter(
                _settings(broker, prefix, {"hook": config, "pager": pd()}), _policy()
            )
            stop = asyncio.Event()
            task = asyncio.create_task(router.run(stop))

            await wait_for(past_committed, 60, "the router committed past the finding", task)
            stop.set()
            await task
            return [r.json() for r in hook.accepted()]

    try:
        sent = asyncio.run(main())
    finally:
        client.close()
    assert sorted(i for n in sent for i in n["finding_ids"]) == [committed.finding_id]
