"""The adapters' place in the raw vendor topics, kept when the guarantee changes.

The adapters' agent is Faust's, and Faust's consumer group follows the
processing guarantee (streams.topology._faust_app): `PREFIXworker` at least
once, `PREFIXadapters` exactly once (the stages' own consumer then holds
`PREFIXworker`). A group starting with no offset reads the raw topics from
their start: after a switch, every vendor record adapted already would be
adapted again, and its events judged again.

So a worker starting copies, partition by partition, the raw topics' offsets
of the other guarantee's group where they are ahead of its own group's (or
its own has none). Copied from outside the group (an offset commit allowed
only while the group has no members): a worker of the same guarantee already
running has done it, or its group has since moved on.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from kafka import KafkaAdminClient, TopicPartition
from kafka.errors import KafkaError, NoError
from kafka.structs import OffsetAndMetadata

from adapters import ADAPTERS
from streams.backoff import Backoff
from streams.kafka_io import KafkaUnavailable, admin
from streams.settings import Settings
from streams.topics import Topics

log = logging.getLogger("sepwatch")
# How long a group's offsets are asked for before the worker refuses to start.
READ_S = 30.0


def adapters_groups(settings: Settings) -> tuple[str, str]:
    """(the adapters' group under this guarantee, under the other)."""
    worker, adapters = f"{settings.topic_prefix}worker", f"{settings.topic_prefix}adapters"
    if settings.processing_guarantee == "exactly_once":
        return adapters, worker
    return worker, adapters


def carry_adapter_offsets(settings: Settings) -> dict[TopicPartition, int]:
    """The raw topics' offsets copied to this guarantee's adapters' group,
    those it was behind on (none if it is not behind anywhere)."""
    ours, theirs = adapters_groups(settings)
    raw = {Topics(settings.topic_prefix).raw(source) for source in ADAPTERS}
    client = admin(settings.kafka)
    try:
        here = _raw_offsets(client, ours, raw)
        there = _raw_offsets(client, theirs, raw)
        ahead = {tp: at for tp, at in there.items() if at > here.get(tp, -1)}
        if not ahead:
            return {}
        try:
            result = _alter_offsets(client, ours, ahead)
        except KafkaError as exc:
            log.warning(
                "adapters: raw topic offsets of %s not carried to %s: %r", theirs, ours, exc
            )
            return {}
    finally:
        client.close()
    refused = {tp: e for tp, e in result.items() if e is not NoError}
    if refused:
        # Members in the group: its own offsets stand (a worker of this
        # guarantee is reading already and carried them when it started).
        log.warning(
            "adapters: raw topic offsets of %s not carried to %s for %d partitions (%s)",
            theirs,
            ours,
            len(refused),
            next(iter(refused.values())).__name__,
        )
    carried = {tp: at for tp, at in ahead.items() if tp not in refused}
    if carried:
        log.info(
            "adapters: %d raw topic partitions go on from group %s's offsets in %s",
            len(carried),
            theirs,
            ours,
        )
    return carried


def _alter_offsets(
    client: KafkaAdminClient, group: str, ahead: dict[TopicPartition, int]
) -> dict[TopicPartition, Any]:
    """The group's offsets set, each partition's error class (NoError when
    set). A coordinator still loading its offsets (a broker just started or
    taken over) answers each partition with a retriable error: asked again
    until READ_S."""
    deadline, backoff = time.monotonic() + READ_S, Backoff(first=0.5, cap=4.0)
    while True:
        result: dict[TopicPartition, Any] = client.alter_group_offsets(
            group, {tp: OffsetAndMetadata(at, "", -1) for tp, at in ahead.items()}
        )
        loading = any(e is not NoError and e.retriable for e in result.values())
        if not loading or time.monotonic() > deadline:
            return result
        time.sleep(backoff.next_delay())


def _raw_offsets(client: KafkaAdminClient, group: str, raw: set[str]) -> dict[TopicPartition, int]:
    """The group's committed offsets of the raw topics. A group's coordinator
    on a broker just lost moves within seconds: tried again until READ_S."""
    deadline, backoff = time.monotonic() + READ_S, Backoff(first=0.5, cap=4.0)
    while True:
        try:
            found = client.list_group_offsets({group: None}).get(group, {})
        except KafkaError as exc:
            if not exc.retriable or time.monotonic() > deadline:
                raise KafkaUnavailable(f"the offsets of group {group}: {exc!r}") from None
            time.sleep(backoff.next_delay())
            continue
        return {tp: o.offset for tp, o in found.items() if tp.topic in raw and o.offset >= 0}
