"""Control reviews: recorded as `control_review` events on the control-reviews
input topic (what the engine reads to reset SEP-008 and judge SEP-009), and
read back from it for `review list` and the report.

Several records may describe one review (a first record when it is completed,
a second with the date it was reported to the committee): as the engine does,
records of one entity with the same `completed_at` are one review, reported at
the earliest report date any of them gives.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime

from pydantic import ValidationError

from detectors.calendar import Days, add_months, to_datetime
from schemas import ControlReview, Policy
from streams.kafka_connection import Broker
from streams.kafka_io import KafkaUnavailable, admin, producer, read_topics, set_topic_configs
from streams.topics import Topics
from streams.validator import END_OF_INPUT


@dataclass(frozen=True)
class Review:
    """One review of one entity's controls, its records merged."""

    entity: str
    completed_at: datetime
    reported_at: datetime | None
    reviewer: str
    controls: tuple[str, ...]
    event_ids: tuple[str, ...]


@dataclass(frozen=True)
class JudgedReview:
    """A review against the schedule: was it done by its due date, and
    reported to the committee within the policy's days (SEP-009's test)."""

    review: Review
    due: date
    done_on_time: bool
    report_deadline: datetime
    report: str  # on_time | late | not_reported | pending


@dataclass(frozen=True)
class EntitySchedule:
    entity: str
    baseline: date
    reviews: tuple[JudgedReview, ...]
    next_due: date

    def overdue(self, today: date) -> bool:
        return self.next_due < today


def new_review(
    entity: str,
    completed_at: datetime,
    reviewer: str,
    controls: Iterable[str],
    reported_at: datetime | None = None,
    *,
    recorded_at: datetime | None = None,
) -> ControlReview:
    now = recorded_at or datetime.now(UTC)
    stamp = completed_at.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return ControlReview(
        event_id=f"review-{entity}-{stamp}-{uuid.uuid4().hex[:8]}",
        timestamp=now,
        entity=entity,
        source="sepwatch review record",
        completed_at=completed_at,
        reported_to_committee_at=reported_at,
        reviewer=reviewer,
        controls_reviewed=[c for c in controls if c],
    )


def keep_forever(broker: Broker, topics: Topics) -> None:
    """The control-reviews topic is the audit record of the reviews, read back
    by the report years later: it must not expire like the traffic topics."""
    from kafka.errors import KafkaError

    client = admin(broker)
    try:
        set_topic_configs(client, {topics.input("control_review"): {"retention.ms": "-1"}})
    except (KafkaError, KafkaUnavailable) as exc:
        raise KafkaUnavailable(f"cannot keep the control reviews: {exc}") from None
    finally:
        client.close()


def publish(broker: Broker, topics: Topics, review: ControlReview) -> None:
    """Send one review to the control-reviews topic, keyed by entity (as
    `sepwatch produce` keys it), and wait until the broker has it."""
    from kafka.errors import KafkaError

    out = producer(broker)
    try:
        future = out.send(
            topics.input("control_review"),
            review.model_dump_json().encode(),
            key=review.entity.encode(),
        )
        future.get(timeout=30)
        out.flush()
    except KafkaError as exc:
        raise KafkaUnavailable(f"the review was not accepted: {exc}") from None
    finally:
        out.close()


def read_reviews(broker: Broker, topics: Topics) -> tuple[list[ControlReview], int]:
    """Every review record on the topic, and how many records were not reviews."""
    found: list[ControlReview] = []
    skipped = 0
    for record in read_topics(broker, [topics.input("control_review")]):
        if record.key == END_OF_INPUT:
            continue
        try:
            found.append(ControlReview.model_validate_json(record.value))
        except ValidationError:
            skipped += 1
    return found, skipped


def merge(records: Iterable[ControlReview]) -> list[Review]:
    """Records of one entity and completion time are one review."""
    groups: dict[tuple[str, datetime], list[ControlReview]] = defaultdict(list)
    seen: set[str] = set()
    for r in records:
        if r.event_id in seen:
            continue
        seen.add(r.event_id)
        groups[(r.entity, r.completed_at.astimezone(UTC))].append(r)
    out: list[Review] = []
    for (entity, completed), group in groups.items():
        group.sort(key=lambda r: (r.timestamp, r.event_id))
        reported = [r.reported_to_committee_at for r in group if r.reported_to_committee_at]
        controls: dict[str, None] = {}
        for r in group:
            controls.update(dict.fromkeys(r.controls_reviewed))
        out.append(
            Review(
                entity=entity,
                completed_at=completed,
                reported_at=min(reported).astimezone(UTC) if reported else None,
                reviewer=group[0].reviewer,
                controls=tuple(controls),
                event_ids=tuple(r.event_id for r in group),
            )
        )
    return sorted(out, key=lambda r: (r.entity, r.completed_at))


def schedule(
    reviews: Iterable[Review],
    policy: Policy,
    entities: Iterable[str] = (),
    *,
    now: datetime,
) -> dict[str, EntitySchedule]:
    """Each entity's reviews judged against its due dates, and its next due
    date: `interval_months` after the last review completed (or after its
    baseline), counted in calendar months on days of the policy's zone, as
    SEP-008 counts; the report deadline on that zone's clock, as SEP-009's."""
    rp = policy.review
    days = Days(policy.timezone)
    by_entity: dict[str, list[Review]] = defaultdict(list)
    for r in reviews:
        by_entity[r.entity].append(r)
    names = set(by_entity) | set(entities) | set(rp.entity_baselines)
    out: dict[str, EntitySchedule] = {}
    for entity in sorted(names):
        baseline = rp.entity_baselines.get(entity, rp.baseline)
        anchor = baseline
        judged: list[JudgedReview] = []
        for r in sorted(by_entity.get(entity, ()), key=lambda r: r.completed_at):
            due = add_months(anchor, rp.interval_months)
            completed = r.completed_at.timestamp()
            day = date.fromordinal(days.day_of(completed))
            deadline = to_datetime(days.plus_days(completed, rp.report_within_days))
            if r.reported_at is not None:
                report = "on_time" if r.reported_at <= deadline else "late"
            else:
                report = "pending" if now <= deadline else "not_reported"
            judged.append(JudgedReview(r, due, day <= due, deadline, report))
            anchor = max(anchor, day)
        out[entity] = EntitySchedule(
            entity, baseline, tuple(judged), add_months(anchor, rp.interval_months)
        )
    return out
