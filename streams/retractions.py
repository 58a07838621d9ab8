"""Vendor retractions of DLP matches: each one resolves the findings of the
match it undoes, as a lifecycle record by the worker's own Elasticsearch user.

A DLP product can take a match back (M365 `DlpRuleUndo`: a user's override,
a false positive report, a document or policy change). The adapter maps it
to a `dlp_alert` with `retraction` set (schemas.DlpAlert); the rules ignore
it, and this step, beside the Elasticsearch sink in every worker, reads the
dlp-alerts topic with its own consumer group. Each retraction is admitted as
the validator admits events (the same pseudonyms, so its user and object
compare equal to its match's), then:

- Its findings are those of SEP-003/004/005 of the same user, stamped no
  later than the retraction, whose `details.match_ref` names the same source,
  workload and object, and rules that the retraction all undoes (a match of
  rules A and B stands when only A is undone: the data still left under B).
  Never the vendor's record id alone: Microsoft documents no link from an
  undo to its match's `Id`. Findings are never changed: each matching open
  or acknowledged finding gets a `resolve` record, reason "vendor retracted
  the DLP match: ...", copied to the lifecycle topic like an analyst's.
- A retraction that matches no finding yet is held and tried again: an
  Exchange match's finding waits for its correlation window, and the sink
  may be behind. When the hold (`dlp_retraction_hold_s`) ends it is counted
  as `matched_nothing` on /metrics and logged with what it named: most
  undone matches made no finding (not SaaS-bound, no regulated type), and a
  SOC looks for a finding it expected to see resolved by that line.
  Its offset is committed only once it is settled, so a restart reads it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from aiokafka.structs import TopicPartition
from elasticsearch import ApiError, Elasticsearch, TransportError

from detectors.pseudonyms import Pseudonymiser
from schemas import DlpAlert
from streams import metrics
from streams.admission import Admitted, admit
from streams.backoff import Backoff
from streams.elastic import client, connection_options
from streams.kafka_io import KafkaUnavailable
from streams.lifecycle import TransitionRefused, publish_copy, record, records_of
from streams.settings import Settings
from streams.topics import Topics

log = logging.getLogger("sepwatch.retractions")

DLP_RULES = ("SEP-003", "SEP-004", "SEP-005")
RETRY_S = 30.0
# A user's DLP findings looked at per retraction, newest first.
SEARCH_SIZE = 1000
# Held retractions beyond this are settled at once (counted, logged): memory stays bounded.
MAX_HELD = 10_000
REASON = "vendor retracted the DLP match: "


@dataclass
class Held:
    """A retraction read and not yet settled."""

    tp: TopicPartition
    offset: int
    event: DlpAlert
    until: float  # monotonic: when it is counted as matching nothing


def undoes(details: dict[str, Any], retraction: DlpAlert) -> bool:
    """Whether a finding's details name the match the retraction undoes: the
    same source, workload and object, and none of its rules left standing."""
    ref, undone = details.get("match_ref"), retraction.match_ref
    if not isinstance(ref, dict) or undone is None:
        return False
    rules = ref.get("rule_ids")
    return (
        ref.get("source") == retraction.source
        and ref.get("workload") == undone.workload
        and ref.get("object_id") == undone.object_id
        and isinstance(rules, list)
        and bool(rules)
        and set(rules) <= set(undone.rule_ids)
    )


def marker_of(retraction: DlpAlert) -> str:
    """What the reason of every record a retraction adds begins with."""
    assert retraction.retraction is not None
    return f"{REASON}{retraction.retraction.operation} {retraction.event_id}"


def reason_of(retraction: DlpAlert) -> str:
    assert retraction.retraction is not None and retraction.match_ref is not None
    said = retraction.retraction.reason or "no reason given"
    return f"{marker_of(retraction)} ({retraction.match_ref.workload}): {said}"


class Retractions:
    """The step: PREFIXdlp-alerts, group PREFIXdlp-retractions, into lifecycle records."""

    def __init__(
        self,
        settings: Settings,
        pseudonyms: Pseudonymiser,
        *,
        es: Elasticsearch | None = None,
        retry_s: float = RETRY_S,
    ) -> None:
        self.settings = settings
        self.topics = Topics(settings.topic_prefix)
        self.index = settings.es_index
        self.pseudonyms = pseudonyms
        self.hold_s = settings.dlp_retraction_hold_s
        self.retry_s = min(retry_s, self.hold_s / 2)
        self.es = es or client(settings.es_url, request_timeout=10, **connection_options(settings))
        self.held: dict[tuple[TopicPartition, int], Held] = {}
        self.read_to: dict[TopicPartition, int] = {}
        self.committed: dict[TopicPartition, int] = {}
        self.backoff = Backoff()
        for outcome in ("resolved", "already_settled", "matched_nothing"):
            metrics.DLP_RETRACTIONS.labels(outcome)  # every series from 0

    async def run(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        consumer = AIOKafkaConsumer(
            self.topics.input("dlp_alert"),
            **self.settings.kafka.client_options(),
            group_id=f"{self.settings.topic_prefix}dlp-retractions",
            **self.settings.group_membership,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            # Held retractions are retried between polls, for as long as ES is away.
            max_poll_interval_ms=24 * 3600 * 1000,
        )
        await consumer.start()
        next_try = 0.0
        try:
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=1000, max_records=500)
                fresh = self._take(batch)
                if (fresh or time.monotonic() >= next_try) and self.held:
                    settled = await self._try_held(stop)
                    next_try = time.monotonic() + (
                        self.retry_s if settled else self.backoff.next_delay()
                    )
                    if settled:
                        self.backoff.reset()
                metrics.DLP_RETRACTIONS_HELD.set(len(self.held))
                await self._commit(consumer)
        finally:
            await consumer.stop()
            self.es.close()

    def _take(self, batch: dict[TopicPartition, list[Any]]) -> bool:
        """Hold the retractions of a batch; True if it had any."""
        fresh = False
        for tp, records in batch.items():
            for r in records:
                self.read_to[tp] = r.offset + 1
                raw: bytes = r.value or b""
                # Most DLP alerts are no retraction: not parsed twice (the validator did).
                if b'"retraction"' not in raw:
                    continue
                where = {"topic": r.topic, "partition": r.partition, "offset": r.offset}
                # Refused ones are the validator's to dead-letter, from the same topic.
                decision = admit(raw, where=where, pseudonyms=self.pseudonyms)
                event = decision.event if isinstance(decision, Admitted) else None
                if not isinstance(event, DlpAlert) or event.retraction is None:
                    continue
                until = time.monotonic() + self.hold_s
                self.held.setdefault((tp, r.offset), Held(tp, r.offset, event, until))
                fresh = True
        while len(self.held) > MAX_HELD:
            oldest = min(self.held, key=lambda k: self.held[k].until)
            self._nothing(self.held.pop(oldest), "too many held")
        return fresh

    async def _try_held(self, stop: asyncio.Event) -> bool:
        """Apply each held retraction; False if Elasticsearch or Kafka was away
        (the rest wait for the next try)."""
        for key, held in sorted(self.held.items(), key=lambda kv: kv[0][1]):
            if stop.is_set():
                return True
            try:
                outcome = await asyncio.to_thread(self.apply, held.event)
            except (ApiError, TransportError, OSError, KafkaUnavailable) as exc:
                log.warning(
                    "dlp retractions: Elasticsearch or Kafka unavailable (%s); retrying",
                    type(exc).__name__,
                )
                return False
            if outcome is None:
                if time.monotonic() < held.until:
                    continue
                self._nothing(held, f"no finding of its match in {self.hold_s:.0f} s")
            else:
                metrics.DLP_RETRACTIONS.labels(outcome).inc()
            del self.held[key]
        return True

    def _nothing(self, held: Held, why: str) -> None:
        metrics.DLP_RETRACTIONS.labels("matched_nothing").inc()
        ev, ref = held.event, held.event.match_ref
        assert ref is not None
        log.warning(
            "dlp retraction %s %s of %s matched no finding (%s): workload %s, object %s, rules %s",
            ev.source,
            ev.event_id,
            ev.user_id,
            why,
            ref.workload,
            ref.object_id,
            ",".join(ref.rule_ids),
        )

    def apply(self, retraction: DlpAlert) -> str | None:
        """Resolve the findings of the retracted match: `resolved`,
        `already_settled` (all were resolved, waived or retracted before), or
        None when no finding names that match (yet)."""
        found = self.findings_of(retraction)
        if not found:
            return None
        resolved = False
        for finding_id in found:
            resolved = self._resolve(finding_id, retraction) or resolved
        return "resolved" if resolved else "already_settled"

    def findings_of(self, retraction: DlpAlert) -> list[str]:
        """The ids of the findings made from the match the retraction undoes."""
        resp = self.es.search(
            index=self.index,
            query={
                "bool": {
                    "filter": [
                        {"terms": {"rule.id": list(DLP_RULES)}},
                        {"term": {"user.id": retraction.user_id}},
                        {"range": {"@timestamp": {"lte": retraction.timestamp.isoformat()}}},
                    ]
                }
            },
            sort=[{"@timestamp": "desc"}],
            size=SEARCH_SIZE,
            ignore_unavailable=True,
            allow_no_indices=True,
        )
        return [
            str(hit["_source"]["sepwatch"]["finding_id"])
            for hit in resp["hits"]["hits"]
            if undoes(hit["_source"].get("sepwatch", {}).get("details") or {}, retraction)
        ]

    def _resolve(self, finding_id: str, retraction: DlpAlert) -> bool:
        """Add the `resolve` record and its copy on the lifecycle topic; False
        if the finding was settled already (by this retraction too: read again)."""
        marker = marker_of(retraction)
        for seq, rec in enumerate(records_of(self.es, self.index, finding_id), start=1):
            if str(rec.get("event", {}).get("reason", "")).startswith(marker):
                # Added before a restart, perhaps not copied: the copy again is harmless.
                publish_copy(self.settings, f"{finding_id}.{seq}", rec)
                return False
        try:
            record_id, stored = record(
                self.es,
                self.index,
                finding_id,
                "resolve",
                at=datetime.now(UTC),
                reason=reason_of(retraction),
            )
        except TransitionRefused:
            return False  # resolved or waived by an analyst: their record stands
        publish_copy(self.settings, record_id, stored)
        return True

    async def _commit(self, consumer: AIOKafkaConsumer) -> None:
        """Up to the first held retraction of each partition still owned."""
        owned = consumer.assignment()
        for key in [k for k in self.held if k[0] not in owned]:
            del self.held[key]  # its new owner reads it again from the committed offset
        offsets: dict[TopicPartition, int] = {}
        for tp, end in self.read_to.items():
            if tp not in owned:
                continue
            waiting = [offset for (p, offset) in self.held if p == tp]
            offsets[tp] = min(waiting) if waiting else end
        self.read_to = {tp: end for tp, end in self.read_to.items() if tp in owned}
        offsets = {tp: o for tp, o in offsets.items() if self.committed.get(tp) != o}
        if not offsets:
            return
        # Refused after a rebalance: the new owner reads those again, harmlessly.
        with contextlib.suppress(CommitFailedError, IllegalStateError, KafkaError):
            await consumer.commit(offsets)
            self.committed.update(offsets)
