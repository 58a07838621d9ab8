"""The alert router: the findings topic to notifications on the channels.

It reads PREFIXfindings with its own consumer group (PREFIXalerts), groups
findings (grouping.py), delivers each notification to its route's channels
with bounded concurrency and retries, and dead-letters what cannot be
delivered. At least once: a batch's offsets are committed only after every
notification it caused is delivered or dead-lettered, and after the ids of its
findings are written to PREFIXnotified (compacted, keyed by finding id, in the
partition of the finding's own partition). A router that starts, or is given
a partition in a rebalance, first reads those ids back, so a finding read
again after a crash never notifies twice.

The group clock is the largest finding event time seen, so a replay groups as
the live stream did. When no finding arrives for `alerts_idle_s` of wall
time, the clock runs on with the wall clock from there, so the last groups of
a quiet stream still close (Flink's source idleness, applied to the router).

Group state is held in memory: after a restart, a group still open at the
crash opens again with its next finding, which notifies once more; findings
folded into it and not yet reported are not in any notification (they are in
Elasticsearch and in the metrics). With several workers, the findings topic's
partitions are shared among their routers (findings are keyed by id), so a
group's findings may meet in different routers and notify once in each.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, KafkaError
from pydantic import ValidationError

from detectors.dead_letters import dead_letter
from schemas import Finding, Policy
from streams import metrics
from streams.alerts.channels import (
    Channel,
    DeliveryResult,
    RetryPolicy,
    build_channels,
    channel_problems,
    deliver,
)
from streams.alerts.grouping import (
    DEFAULT_SEEN_HORIZON,
    Notification,
    NotificationGroups,
    route_problems,
)
from streams.kafka_io import ensure_topic
from streams.lag import records_behind
from streams.settings import Settings
from streams.topics import Topics

log = logging.getLogger("sepwatch.alerts")

LAG_SECONDS = 5.0


class AlertConfigError(ValueError):
    """Routes and channels that cannot work together, every problem listed."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("the alert router cannot start:\n" + "\n".join(f"  {p}" for p in problems))


class _Assigned(ConsumerRebalanceListener):  # type: ignore[misc]
    """Marks assigned partitions whose settled ids must be read back. The
    reading happens in the router's loop, before any record is admitted:
    aiokafka may hand out records of a new assignment while a listener is
    still awaiting, and it only logs a listener's exception."""

    def __init__(self, router: AlertRouter) -> None:
        self.router = router

    async def on_partitions_revoked(self, revoked: Any) -> None:
        return None

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.router.unread |= {tp.partition for tp in assigned}


class AlertRouter:
    def __init__(
        self,
        settings: Settings,
        policy: Policy,
        *,
        channels: dict[str, Channel] | None = None,
        seen_horizon: timedelta = DEFAULT_SEEN_HORIZON,
        batch_size: int = 500,
        linger_ms: int = 500,
    ) -> None:
        problems = channel_problems(settings.channels) + route_problems(
            policy.alerting.routes, settings.channels
        )
        if problems:
            raise AlertConfigError(problems)
        self.settings = settings
        self.topics = Topics(settings.topic_prefix)
        self.policy = policy
        self.channels = channels or build_channels(
            settings.channels, link_base=settings.alerts_link_base
        )
        self.retry = RetryPolicy(
            attempts=settings.alerts_attempts,
            first_s=settings.alerts_backoff_s,
            cap_s=settings.alerts_backoff_cap_s,
        )
        self.seen_horizon = seen_horizon
        self.groups = NotificationGroups(policy.alerting, seen_horizon=seen_horizon)
        self.batch_size = batch_size
        self.linger_ms = linger_ms
        self.newest: datetime | None = None  # largest finding event time seen
        self._heard = time.monotonic()  # wall time the newest finding came
        self._slots = asyncio.Semaphore(settings.alerts_concurrency)
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._notified_partitions = settings.partitions
        self.unread: set[int] = set()  # findings partitions whose settled ids are not read
        self.delivered = 0
        self.dead_lettered = 0

    def adopt(self, policy: Policy) -> None:
        """A policy version the rules took (streams/topology.py, the one
        watcher): its routes and window, unless they are unusable (then the
        running ones stay, said in the log)."""
        try:
            self.set_policy(policy)
        except AlertConfigError as exc:
            log.warning("alert router keeps its routes; the new policy's are unusable: %s", exc)
            return
        log.warning("alert router: routes of the new policy version loaded")

    def set_policy(self, policy: Policy) -> None:
        """A replaced policy: its routes and window apply to what comes next.
        Refused (the running one stays) if a route names an unknown channel."""
        problems = route_problems(policy.alerting.routes, self.channels)
        if problems:
            raise AlertConfigError(problems)
        self.policy = policy
        self.groups.set_policy(policy.alerting)

    # --- the loop --------------------------------------------------------------

    async def run(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        await self._ensure_notified_topic()
        self._producer = AIOKafkaProducer(
            **self.settings.kafka.client_options(), acks="all", enable_idempotence=True
        )
        self._consumer = AIOKafkaConsumer(
            **self.settings.kafka.client_options(),
            group_id=f"{self.settings.topic_prefix}alerts",
            **self.settings.group_membership,
            enable_auto_commit=False,
            # A finding of an aborted transaction was never made (docs/exactly-once.md).
            isolation_level="read_committed",
            auto_offset_reset="earliest",
            # A batch waits for its deliveries (retries and backoff included).
            max_poll_interval_ms=3600 * 1000,
        )
        self._consumer.subscribe([self.topics.findings], listener=_Assigned(self))
        await self._producer.start()
        await self._consumer.start()
        last_lag = 0.0
        try:
            while not stop.is_set():
                batch = await self._consumer.getmany(
                    timeout_ms=self.linger_ms, max_records=self.batch_size
                )
                if self.unread:
                    partitions, self.unread = self.unread, set()
                    await self.load_notified(partitions)
                records = [r for rs in batch.values() for r in rs]
                if not await self._settle(records, stop):
                    break  # stopping mid-delivery: not committed, read again later
                if records:
                    try:
                        await self._consumer.commit()
                    except CommitFailedError:
                        # The partitions moved: the new owner reads the batch again
                        # and the notified ids written above keep it from notifying.
                        log.warning("alert router: commit refused after a rebalance")
                if time.monotonic() - last_lag > LAG_SECONDS:
                    last_lag = time.monotonic()
                    await self._report_lag()
        finally:
            await self._consumer.stop()
            await self._producer.stop()
            for channel in self.channels.values():
                await channel.close()

    async def _settle(self, records: list[Any], stop: asyncio.Event) -> bool:
        """Group a batch, deliver what it causes, record its finding ids."""
        notifications: list[Notification] = []
        admitted: list[tuple[str, int]] = []
        for r in records:
            try:
                finding = Finding.model_validate_json(r.value)
            except ValidationError:
                # The Elasticsearch sink dead-letters it; nothing to notify.
                log.warning(
                    "alert router: not a finding at %s:%d:%d", r.topic, r.partition, r.offset
                )
                continue
            notifications += self.groups.admit(finding)
            admitted.append((finding.finding_id, r.partition))
            if self.newest is None or finding.timestamp > self.newest:
                self.newest = finding.timestamp
                self._heard = time.monotonic()
        now = self.clock()
        if now is not None:
            notifications += self.groups.close_due(now)
        for reason, n in self.groups.suppressed.items():
            metrics.NOTIFICATIONS_SUPPRESSED.labels(reason).inc(n)
        self.groups.suppressed.clear()
        if not await self._dispatch(notifications, stop):
            return False
        await self._record_notified(admitted)
        return True

    def clock(self) -> datetime | None:
        """The group clock: the newest finding's event time, running on with
        the wall clock once no newer finding has come for alerts_idle_s."""
        if self.newest is None:
            return None
        idle = time.monotonic() - self._heard
        if idle < self.settings.alerts_idle_s:
            return self.newest
        return self.newest + timedelta(seconds=idle)

    async def _dispatch(self, notifications: list[Notification], stop: asyncio.Event) -> bool:
        """Deliver every notification to each of its channels. One group's
        notifications go to one channel in order (a close never overtakes its
        trigger); groups and channels go concurrently, within the bound."""
        queues: dict[tuple[str, str], list[Notification]] = defaultdict(list)
        for n in notifications:
            if not n.channels:
                metrics.NOTIFICATIONS_SUPPRESSED.labels("no_route").inc()
                continue
            for name in n.channels:
                if self.channels[name].wants(n):
                    queues[(n.group_key, name)].append(n)

        async def drain(name: str, queue: list[Notification]) -> bool:
            channel = self.channels[name]
            for n in queue:
                async with self._slots:
                    result = await deliver(channel, n, self.retry, stop)
                if result.stopped:
                    return False
                if result.delivered:
                    self.delivered += 1
                else:
                    await self._dead_letter(channel, n, result)
            return True

        results = await asyncio.gather(*(drain(name, q) for (_, name), q in queues.items()))
        return all(results)

    async def _dead_letter(self, channel: Channel, n: Notification, result: DeliveryResult) -> None:
        assert self._producer is not None
        raw = json.dumps(n.as_dict(), ensure_ascii=False).encode()
        reason = (
            f"notification undeliverable to channel {channel.name} ({channel.kind}) "
            f"after {result.attempts} attempt(s): {result.reason}"
        )
        where = {
            "source": "alert_router",
            "channel": channel.name,
            "channel_kind": channel.kind,
            "notification_id": n.id,
            "notification_kind": n.kind,
            "group_key": n.group_key,
            "rule_id": n.rule_id,
            "finding_ids": list(n.finding_ids),
            "attempts": result.attempts,
        }
        letter = dead_letter(raw, reason, where=where)
        await self._producer.send_and_wait(
            self.topics.dead_letters, json.dumps(letter, ensure_ascii=False).encode()
        )
        metrics.NOTIFICATIONS_FAILED.labels(channel.name, "dead_lettered").inc()
        metrics.DEAD_LETTERS.labels("notification_undeliverable").inc()
        self.dead_lettered += 1
        log.error(
            "notification %s to %s dead-lettered after %d attempt(s): %s",
            n.id,
            channel.name,
            result.attempts,
            result.reason,
        )

    # --- finding ids already settled -------------------------------------------

    async def _ensure_notified_topic(self) -> None:
        """Compacted (one record per id) and deleted after the horizon: ids
        older than that are forgotten anyway. Its partition count is read back,
        as it may predate this router."""
        horizon_ms = int(self.seen_horizon.total_seconds() * 1000)
        self._notified_partitions = await asyncio.to_thread(
            ensure_topic,
            self.settings.kafka,
            self.topics.notified,
            self.settings.partitions,
            {"cleanup.policy": "compact,delete", "retention.ms": str(horizon_ms)},
            # As `sepwatch worker` resolved them for the cluster.
            self.settings.replication_factor,
            self.settings.min_insync_replicas,
        )

    async def load_notified(self, partitions: set[int] | None = None) -> int:
        """Read back the ids settled for these findings partitions (all: None)."""
        count = self._notified_partitions
        wanted = set(range(count)) if partitions is None else {p % count for p in partitions}
        if not wanted:
            return 0
        parts = [TopicPartition(self.topics.notified, p) for p in sorted(wanted)]
        reader = AIOKafkaConsumer(
            **self.settings.kafka.client_options(),
            enable_auto_commit=False,
            isolation_level="read_committed",
        )
        await reader.start()
        try:
            reader.assign(parts)
            await reader.seek_to_beginning(*parts)
            end = await reader.end_offsets(parts)
            entries: list[tuple[datetime, str]] = []
            deadline = time.monotonic() + 120
            while [tp for tp in parts if await reader.position(tp) < end[tp]]:
                if time.monotonic() > deadline:
                    raise KafkaError(f"{self.topics.notified} did not reach its end in time")
                batch = await reader.getmany(timeout_ms=500)
                for records in batch.values():
                    for r in records:
                        if r.key is None or r.value is None:
                            continue
                        with contextlib.suppress(ValueError, KeyError, TypeError):
                            at = datetime.fromisoformat(json.loads(r.value)["at"])
                            entries.append((at, r.key.decode()))
            for at, finding_id in sorted(entries):
                self.groups.remember(finding_id, at)
            log.info("alert router: %d settled finding ids read back", len(entries))
            return len(entries)
        finally:
            await reader.stop()

    async def _record_notified(self, admitted: list[tuple[str, int]]) -> None:
        if not admitted:
            return
        assert self._producer is not None
        at = self.groups.clock
        value = json.dumps({"at": at.isoformat() if at else None}).encode()
        sends = [
            await self._producer.send(
                self.topics.notified,
                value,
                key=finding_id.encode(),
                partition=partition % self._notified_partitions,
            )
            for finding_id, partition in admitted
        ]
        await asyncio.gather(*sends)

    # --- housekeeping ------------------------------------------------------------

    async def _report_lag(self) -> None:
        if self._consumer is None:
            return
        behind = await records_behind(self._consumer)
        if behind is None:
            return
        metrics.CONSUMER_LAG.labels("alerts", self.topics.findings).set(behind)
