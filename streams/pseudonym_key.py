"""The deployment's pseudonym key (detectors.pseudonyms): from the settings,
else from Kafka, where the first worker puts one.

Every worker and every replay of one deployment must pseudonymise alike, or a
person's events stop joining. A bank sets `pseudonym_key` (SEPWATCH_PSEUDONYM_KEY
or the secrets directory) in every worker. Where it does not, the key lives on
the topic PREFIXpseudonym-key: one partition, compacted (nothing expires), each
record a candidate key under a record key of its own. The first record of the
log is the key: workers started together may each write a candidate, and all
of them then read the same first one.

Whoever reads that topic can compute the pseudonym of any value they guess; on
a secured cluster only the workers' principal may read or write it (README,
"Identifiers in event fields", gives the ACLs).
"""

from __future__ import annotations

import logging
import secrets
import uuid

from kafka.errors import KafkaError

from streams.kafka_connection import Broker
from streams.kafka_io import KafkaUnavailable, ensure_log, producer, read_topics
from streams.settings import Settings
from streams.topics import Topics

log = logging.getLogger("sepwatch.pseudonym_key")

KEY_BYTES = 32


def settings_key(settings: Settings) -> bytes | None:
    """The key the settings give, if any."""
    if settings.pseudonym_key is None:
        return None
    return settings.pseudonym_key.get_secret_value().encode()


def read_key(broker: Broker, topics: Topics, timeout_s: float = 30.0) -> bytes | None:
    """The key on the deployment's topic: its first record; None if it has none."""
    records = read_topics(broker, [topics.pseudonym_key], timeout_s)
    for record in sorted(records, key=lambda r: r.offset):
        try:
            return bytes.fromhex(record.value.decode())
        except (AttributeError, UnicodeDecodeError, ValueError):
            # Not one of ours: a key nobody can trust, and the first one wins.
            raise KafkaUnavailable(
                f"{topics.pseudonym_key} offset {record.offset} is not a pseudonym key "
                "written by sepwatch; set SEPWATCH_PSEUDONYM_KEY or clear the topic"
            ) from None
    return None


def worker_key(settings: Settings, topics: Topics) -> bytes:
    """The key a worker pseudonymises with: the settings', else the topic's,
    which the first worker writes."""
    key = settings_key(settings)
    if key is not None:
        log.info("pseudonym key: from the settings")
        return key
    ensure_log(
        settings.kafka,
        topics.pseudonym_key,
        settings.replication_factor,
        settings.min_insync_replicas,
    )
    key = read_key(settings.kafka, topics)
    if key is not None:
        log.info("pseudonym key: from %s", topics.pseudonym_key)
        return key
    _offer(settings.kafka, topics)
    key = read_key(settings.kafka, topics)
    if key is None:
        raise KafkaUnavailable(f"wrote a pseudonym key to {topics.pseudonym_key}, read none back")
    log.warning(
        "pseudonym key: none was set; one is now kept on %s for every worker and "
        "replay of this deployment (set SEPWATCH_PSEUDONYM_KEY to hold it yourself)",
        topics.pseudonym_key,
    )
    return key


def _offer(broker: Broker, topics: Topics) -> None:
    """Write a candidate key; another worker's may come first, and wins."""
    send = producer(broker)
    try:
        send.send(
            topics.pseudonym_key,
            key=uuid.uuid4().bytes,
            value=secrets.token_hex(KEY_BYTES).encode(),
        ).get(timeout=30)
    except KafkaError as exc:
        raise KafkaUnavailable(f"writing {topics.pseudonym_key}: {exc}") from None
    finally:
        send.close()
