"""The Elasticsearch sink: the findings topic into monthly findings indices.

At least once, and never twice: a batch's Kafka offsets are committed only
once every finding in it is settled (written, found already there, or
dead-lettered for its content), and each document is created under its
finding id, so a batch read again after a crash or a rebalance changes
nothing (and never overwrites an analyst's acknowledgement). While
Elasticsearch is down or throttling, the sink retries the same batch with
exponential backoff, reads no further, and reports the backlog on /metrics;
when it returns, the sink catches up from its committed offsets.

The sink only ever creates documents: it deletes nothing (retention is an
administrator's `sepwatch elasticsearch retention`), and its role may not.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import CommitFailedError, IllegalStateError
from elasticsearch import ApiError as EsApiError
from elasticsearch import AsyncElasticsearch, TransportError
from pydantic import ValidationError

from detectors.dead_letters import dead_letter
from detectors.masking import mask_text
from schemas import Finding
from streams import metrics
from streams.backoff import Backoff
from streams.elastic import (
    async_client,
    connection_options,
    document,
    index_for,
    replicas_for,
    template_body,
)
from streams.lag import records_behind
from streams.lifecycle import lifecycle_index
from streams.lifecycle import template_body as lifecycle_template_body
from streams.settings import Settings
from streams.topics import Topics

log = logging.getLogger("sepwatch.sink")

# Per-item statuses worth another attempt; any other 4xx is the document's fault.
RETRY_STATUSES = {429, 500, 502, 503, 504}


@dataclass
class InFlight:
    """A batch being written, and the offsets to commit once it is settled."""

    task: asyncio.Task[bool]
    offsets: dict[Any, int]


@dataclass
class BulkOutcome:
    """What one bulk request settled, and what must be tried again."""

    created: int = 0
    present: int = 0
    rejected: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    retry: list[dict[str, Any]] = field(default_factory=list)


def bulk_body(actions: Sequence[dict[str, Any]]) -> bytes:
    """The NDJSON body, encoded here once (orjson) rather than line by line."""
    lines: list[bytes] = []
    for a in actions:
        lines.append(orjson.dumps({"create": {"_index": a["_index"], "_id": a["_id"]}}))
        lines.append(orjson.dumps(a["_source"]))
    lines.append(b"")
    return b"\n".join(lines)


def settle(actions: Sequence[dict[str, Any]], response: dict[str, Any]) -> BulkOutcome:
    """Sort a bulk response's items: 409 means the finding is already stored."""
    out = BulkOutcome()
    for action, item in zip(actions, response["items"], strict=True):
        result = item.get("create") or next(iter(item.values()))
        status = int(result.get("status", 500))
        if status in (200, 201):
            out.created += 1
        elif status == 409:
            out.present += 1
        elif status in RETRY_STATUSES:
            out.retry.append(action)
        else:
            error = result.get("error") or {}
            reason = f"{error.get('type', status)}: {error.get('reason', '')}"
            out.rejected.append((action, mask_text(reason)))
    return out


class FindingsSink:
    """Consumes PREFIXfindings with its own group (PREFIXes-sink) into ES."""

    def __init__(
        self,
        settings: Settings,
        *,
        batch_size: int = 1000,
        linger_ms: int = 200,
        es: AsyncElasticsearch | None = None,
    ) -> None:
        self.settings = settings
        self.topics = Topics(settings.topic_prefix)
        self.index = settings.es_index
        self.batch_size = batch_size
        self.linger_ms = linger_ms
        self.es = es or async_client(
            settings.es_url, request_timeout=10, **connection_options(settings)
        )
        self.backoff = Backoff()
        self.pending = 0  # findings in the batch being written, not yet settled
        self.waiting = 0  # findings of the next batch, built and waiting
        self.settled = 0
        # A least-privilege key may not install templates: an admin did (setup).
        self._template_ready = not settings.es_install_template
        # Called with the ids each bulk request stored, in order (benchmarks).
        self.on_written: Callable[[list[str]], None] | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None

    async def run(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        self._consumer = AIOKafkaConsumer(
            self.topics.findings,
            **self.settings.kafka.client_options(),
            group_id=f"{self.settings.topic_prefix}es-sink",
            **self.settings.group_membership,
            enable_auto_commit=False,
            # A finding of an aborted transaction was never made (docs/exactly-once.md).
            isolation_level="read_committed",
            auto_offset_reset="earliest",
            # While ES is down the sink holds its batch and does not poll: a
            # long poll interval keeps it in the group meanwhile.
            max_poll_interval_ms=24 * 3600 * 1000,
        )
        self._producer = AIOKafkaProducer(
            **self.settings.kafka.client_options(), acks="all", enable_idempotence=True
        )
        await self._consumer.start()
        await self._producer.start()
        # One batch in flight while the next is read and built: Elasticsearch
        # works on one while Python prepares the other. Offsets are committed
        # batch by batch, in order, once each is settled.
        in_flight: InFlight | None = None
        try:
            while not stop.is_set():
                batch = await self._gather()
                records = [r for rs in batch.values() for r in rs]
                await self._report_lag(len(records))
                if records:
                    actions, appended = await self._prepare(records)
                    offsets = {tp: rs[-1].offset + 1 for tp, rs in batch.items() if rs}
                    if in_flight is not None and not await self._finish(in_flight):
                        break
                    self.waiting = 0
                    task = asyncio.create_task(self._settle(actions, appended, stop))
                    in_flight = InFlight(task, offsets)
                elif in_flight is not None and in_flight.task.done():
                    if not await self._finish(in_flight):
                        break
                    in_flight = None
            if in_flight is not None and in_flight.task.done():
                await self._finish(in_flight)  # settled before the stop: commit it
        finally:
            if in_flight is not None and not in_flight.task.done():
                # Not settled: not committed, read again by the next owner.
                in_flight.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await in_flight.task
            await self._consumer.stop()
            await self._producer.stop()
            await self.es.close()

    async def _gather(self) -> dict[Any, list[Any]]:
        """The findings that arrive within `linger_ms` of the first, up to
        `batch_size`: a bulk request costs Elasticsearch about as much for 20
        documents as for 200 (the request, the translog sync), and findings
        trickle in a few at a time."""
        assert self._consumer is not None
        batch: dict[Any, list[Any]] = await self._consumer.getmany(
            timeout_ms=self.linger_ms, max_records=self.batch_size
        )
        count = sum(len(rs) for rs in batch.values())
        deadline = time.monotonic() + self.linger_ms / 1000
        while 0 < count < self.batch_size:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            more = await self._consumer.getmany(
                timeout_ms=max(1, int(left * 1000)), max_records=self.batch_size - count
            )
            for tp, rs in more.items():
                batch.setdefault(tp, []).extend(rs)
                count += len(rs)
        return batch

    async def _finish(self, batch: InFlight) -> bool:
        """Wait for a batch to settle and commit its offsets; False if it was
        stopped before settling (then nothing is committed)."""
        if not await batch.task:
            return False
        assert self._consumer is not None
        # A rebalance may have taken partitions since the batch was read: their
        # new owner writes the same findings again, and create-by-id makes that
        # harmless. Committing them would fail (and once stopped the worker).
        owned = self._consumer.assignment()
        offsets = {tp: offset for tp, offset in batch.offsets.items() if tp in owned}
        if not offsets:
            return True
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError):
            log.warning("es sink: commit refused after a rebalance")
        return True

    async def _prepare(self, records: list[Any]) -> tuple[list[dict[str, Any]], dict[str, float]]:
        """Documents to create; records that are not findings go to the dead letters."""
        actions: list[dict[str, Any]] = []
        appended: dict[str, float] = {}
        seen: set[str] = set()
        now = datetime.now(UTC)
        for r in records:
            try:
                finding = Finding.model_validate_json(r.value)
            except ValidationError as exc:
                where = {"topic": r.topic, "partition": r.partition, "offset": r.offset}
                reason = f"not a finding: {exc.error_count()} validation errors"
                await self._dead(dead_letter(r.value or b"", reason, where=where), "es_rejected")
                continue
            if finding.finding_id in seen:
                continue  # the same finding twice in one batch (a re-emission)
            seen.add(finding.finding_id)
            appended[finding.finding_id] = r.timestamp / 1000
            actions.append(
                {
                    "_index": index_for(finding.timestamp, self.index),
                    "_id": finding.finding_id,
                    "_source": document(finding, ingested=now),
                }
            )
        self.waiting = len(actions)
        return actions, appended

    async def _settle(
        self, actions: list[dict[str, Any]], appended: dict[str, float], stop: asyncio.Event
    ) -> bool:
        """Bulk-create until every document is stored, present or refused."""
        self.pending = len(actions)
        while actions and not stop.is_set():
            outcome = await self._bulk(actions)
            if outcome is None:
                await self._pause(stop)
                continue
            metrics.SINK_INDEXED.labels("created").inc(outcome.created)
            metrics.SINK_INDEXED.labels("already_present").inc(outcome.present)
            done = time.time()
            again = {a["_id"] for a in outcome.retry}
            if self.on_written is not None:
                self.on_written([a["_id"] for a in actions if a["_id"] not in again])
            for a in actions:
                if a["_id"] not in again:
                    metrics.SINK_LATENCY.observe(max(0.0, done - appended[a["_id"]]))
            for action, reason in outcome.rejected:
                metrics.SINK_ERRORS.labels("rejected").inc()
                raw = json.dumps(action["_source"], ensure_ascii=False).encode()
                where = {"index": action["_index"], "finding_id": action["_id"]}
                await self._dead(
                    dead_letter(raw, f"Elasticsearch refused the document: {reason}", where=where),
                    "es_rejected",
                )
            self.settled += outcome.created + outcome.present + len(outcome.rejected)
            actions = outcome.retry
            self.pending = len(actions)
            if actions:
                metrics.SINK_ERRORS.labels("throttled").inc()
                await self._pause(stop)
            else:
                self.backoff.reset()
        return not actions

    async def _put_template(self) -> None:
        replicas = self.settings.es_replicas
        data_nodes = 0
        if replicas is None:
            data_nodes = (await self.es.cluster.health())["number_of_data_nodes"]
        body = template_body(self.index, replicas=replicas_for(replicas, data_nodes))
        await self.es.indices.put_index_template(name=self.index, **body)

    async def _bulk(self, actions: list[dict[str, Any]]) -> BulkOutcome | None:
        """One bulk request; None if Elasticsearch could not take it at all."""
        try:
            if not self._template_ready:
                await self._put_template()
                # The lifecycle records' too, unless one is there (an admin's,
                # with the pipeline that stamps who acted: never replaced).
                records = lifecycle_index(self.index)
                if not await self.es.indices.exists_index_template(name=records):
                    await self.es.indices.put_index_template(
                        name=records, **lifecycle_template_body(self.index)
                    )
                self._template_ready = True
            # Encoded once (bulk_body); the client sends bytes as they are, though
            # its annotation names only the decoded form.
            response = await self.es.bulk(
                operations=bulk_body(actions),  # type: ignore[arg-type]
                refresh=False,
            )
        except EsApiError as exc:
            metrics.SINK_UP.set(0)
            metrics.SINK_ERRORS.labels("unavailable").inc()
            if exc.meta.status in (401, 403):
                # Credentials or privileges: retried too (a key may be rotated), but said plainly.
                log.error(
                    "es sink: Elasticsearch refused the sink's credentials (%s %s); retrying",
                    exc.meta.status,
                    "installing the template" if not self._template_ready else "writing",
                )
            else:
                log.warning("es sink: Elasticsearch unavailable (%s); retrying", type(exc).__name__)
            return None
        except (TransportError, OSError) as exc:
            metrics.SINK_UP.set(0)
            metrics.SINK_ERRORS.labels("unavailable").inc()
            log.warning("es sink: Elasticsearch unavailable (%s); retrying", type(exc).__name__)
            return None
        metrics.SINK_UP.set(1)
        return settle(actions, dict(response))

    async def _pause(self, stop: asyncio.Event) -> None:
        await self._report_lag(0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=self.backoff.next_delay())

    async def _dead(self, letter: dict[str, Any], reason: str) -> None:
        assert self._producer is not None
        metrics.DEAD_LETTERS.labels(reason).inc()
        value = json.dumps(letter, ensure_ascii=False).encode()
        await self._producer.send_and_wait(self.topics.dead_letters, value)

    async def _report_lag(self, in_hand: int) -> None:
        """Backlog = findings held plus those on the topic not yet read."""
        if self._consumer is None:
            return
        behind = await records_behind(self._consumer)
        if behind is None:
            return
        metrics.CONSUMER_LAG.labels("es_sink", self.topics.findings).set(behind)
        metrics.SINK_BACKLOG.set(behind + self.pending + max(self.waiting, in_hand))
