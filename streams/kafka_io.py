"""Talking to Kafka outside the worker: topics, producing files, exporting findings."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TextIO

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from kafka.errors import (
    KafkaError,
    KafkaTimeoutError,
    SaslAuthenticationFailedError,
    TopicAlreadyExistsError,
)
from pydantic import SecretStr

from adapters import ADAPTERS
from detectors.dead_letters import dead_letter
from streams.end_of_input import MarkerKeyMissing, signed_marker
from streams.kafka_connection import Broker, connection
from streams.partition_clock import CLOCK_MARK, ProducerClock, is_clock_mark
from streams.topics import INPUT_STREAMS, STAGES, Topics, input_key, partition_of
from streams.validator import END_OF_INPUT

MAX_RECORD = 1 << 20
# Two semiannual review periods and a margin (Settings.evidence_retention_days).
EVIDENCE_RETENTION_MS = 400 * 24 * 3600 * 1000


class KafkaUnavailable(RuntimeError):
    """The broker cannot be reached, or the topics cannot serve this topology."""


@contextlib.contextmanager
def bootstrap_failures() -> Iterator[list[BaseException]]:
    """kafka-python retries a refused login or TLS handshake until it times
    out, and only logs each cause: keep them, to say why it gave up."""
    causes: list[BaseException] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            args = record.args if isinstance(record.args, tuple) else ()
            causes.extend(a for a in args if isinstance(a, BaseException))

    handler = Keep(logging.WARNING)
    logger = logging.getLogger("kafka")
    logger.addHandler(handler)
    try:
        yield causes
    finally:
        logger.removeHandler(handler)


def unavailable(broker: Broker, causes: list[BaseException] | None = None) -> KafkaUnavailable:
    """Why a client could not bootstrap, as far as the settings and the
    broker's last answer tell."""
    kafka = connection(broker)
    reasons = [c for c in causes or () if not isinstance(c, KafkaTimeoutError)]
    # A refused login is followed by the closed connection: the refusal says more.
    refused = [c for c in reasons if isinstance(c, SaslAuthenticationFailedError)]
    # The broker's and the TLS library's reasons name no secret.
    why = f": {(refused or reasons)[-1]}" if reasons else ""
    if kafka.security_protocol == "PLAINTEXT":
        return KafkaUnavailable(
            f"no Kafka broker answers at {kafka}{why}; start one (deploy/local/kafka.sh up) "
            "or set SEPWATCH_BROKER"
        )
    # The clients retry a refused login or handshake until they time out:
    # the likely causes are named here.
    return KafkaUnavailable(
        f"cannot connect to Kafka at {kafka.describe()}{why}; check the user and "
        "password (SEPWATCH_KAFKA_SASL_USERNAME, SEPWATCH_KAFKA_SASL_PASSWORD), the CA file "
        "(SEPWATCH_KAFKA_SSL_CAFILE) and the protocol (SEPWATCH_KAFKA_SECURITY_PROTOCOL) "
        "against the broker's listener"
    )


def admin(broker: Broker) -> KafkaAdminClient:
    with bootstrap_failures() as causes:
        try:
            return KafkaAdminClient(
                **connection(broker).client_options(), request_timeout_ms=10_000
            )
        except KafkaError:
            raise unavailable(broker, causes) from None


@dataclass(frozen=True)
class Replication:
    """How many copies of each sepwatch topic the cluster keeps, and how many
    must have a write before the broker acknowledges it (acks=all)."""

    factor: int
    min_insync: int

    @classmethod
    def for_cluster(
        cls, brokers: int, factor: int | None = None, min_insync: int | None = None
    ) -> Replication:
        """The settings, or the production defaults for a cluster of `brokers`:
        3 replicas (fewer if the cluster is smaller), and all but one in sync,
        so one broker lost loses nothing and writes go on."""
        factor = factor if factor is not None else min(3, brokers)
        min_insync = min_insync if min_insync is not None else max(1, factor - 1)
        if factor > brokers:
            raise KafkaUnavailable(
                f"SEPWATCH_REPLICATION_FACTOR is {factor}, but the cluster has {brokers} "
                f"broker{'s' if brokers != 1 else ''}"
            )
        if min_insync > factor:
            raise KafkaUnavailable(
                f"SEPWATCH_MIN_INSYNC_REPLICAS is {min_insync}, more than the "
                f"replication factor {factor}: no write could succeed"
            )
        return cls(factor, min_insync)

    def configs(self) -> dict[str, str]:
        return {"min.insync.replicas": str(self.min_insync)}


def replication(
    client: KafkaAdminClient, factor: int | None = None, min_insync: int | None = None
) -> Replication:
    brokers = len(client.describe_cluster()["brokers"])
    return Replication.for_cluster(brokers, factor, min_insync)


def under_replicated(
    client: KafkaAdminClient,
    names: list[str],
    wanted: Replication,
    described: list[dict[str, Any]] | None = None,
) -> list[str]:
    """Why each of the existing topics `names` keeps fewer copies than wanted;
    `described`: their descriptions as read already (default: asked now)."""
    problems = []
    for info in client.describe_topics(names) if described is None else described:
        name = info.get("name") or info.get("topic")
        if name not in names:
            continue
        replicas = [
            len(p.get("replica_nodes") or p.get("replicas") or []) for p in info["partitions"]
        ]
        if replicas and min(replicas) < wanted.factor:
            problems.append(f"{name} has {min(replicas)} replica(s), not {wanted.factor}")
    for name, value in topic_config(client, names, "min.insync.replicas").items():
        if value is not None and int(value) < wanted.min_insync:
            problems.append(f"{name} has min.insync.replicas {value}, not {wanted.min_insync}")
    return problems


def topic_config(client: KafkaAdminClient, names: list[str], key: str) -> dict[str, str | None]:
    """Each topic's value of `key`, as the broker answering has it (None: not described)."""
    resources = [ConfigResource(ConfigResourceType.TOPIC, n, {key: None}) for n in names]
    found = client.describe_configs(resources, config_filter="all").get("topic", {})
    return {n: found.get(n, {}).get(key, {}).get("value") for n in names}


def ensure_topics(
    broker: Broker,
    topics: Topics,
    partitions: int,
    retention_ms: int,
    ready_s: float = 30.0,
    *,
    replication_factor: int | None = None,
    min_insync_replicas: int | None = None,
    evidence_retention_ms: int = EVIDENCE_RETENTION_MS,
) -> Replication:
    """Create what is missing, with the replication asked for (default: the
    production defaults for the cluster, `Replication.for_cluster`); refuse a
    topic whose partition count would break co-partitioning (every stage
    joins within one partition), or that keeps fewer copies than asked for;
    return once every topic is in the broker's metadata with its partitions.

    The stage tables' changelogs are created here too, not left to Faust: two
    workers started together would otherwise each find the other's changelog
    half-created, keep metadata without its partitions, and crash their stage
    agent on every table write until the metadata is refreshed minutes later.
    So are the raw vendor topics the adapter agent reads, which Faust would
    otherwise only look for (an ERROR per topic at every first start).

    The findings and lifecycle topics are the evidence (review/evidence.py):
    kept `evidence_retention_ms`, set again on topics that exist already."""
    client = admin(broker)
    try:
        wanted_replication = replication(client, replication_factor, min_insync_replicas)
        co_partitioned = [
            *topics.inputs,
            *(topics.stage(s) for s in STAGES),
            topics.findings,
            topics.lifecycle,
            topics.dead_letters,
            *topics.changelogs,
        ]
        raw = [topics.raw(source) for source in ADAPTERS]
        wanted = [*co_partitioned, *raw]
        existing = set(client.list_topics())
        retention = {"default": retention_ms, "evidence": evidence_retention_ms}
        new = [
            new_topic(name, partitions, wanted_replication, _topic_configs(topics, name, retention))
            for name in wanted
            if name not in existing
        ]
        if new:
            with contextlib.suppress(TopicAlreadyExistsError):
                client.create_topics(new)
        # The alert router makes its own topic; it is checked when it exists.
        router = [topics.notified] if topics.notified in existing else []
        described = _await_partitions(client, co_partitioned, [*raw, *router], partitions, ready_s)
        # Every topic, on the descriptions that showed it (the broker that answered the
        # listing may not know yet of a topic made by hand a moment before: seen under
        # load), and refused before anything changes: a refused deployment is left as is.
        _check_replication(client, [*wanted, *router], wanted_replication, described)
        _keep_evidence(client, [topics.findings, topics.lifecycle], evidence_retention_ms)
        return wanted_replication
    finally:
        client.close()


def _topic_configs(topics: Topics, name: str, retention: dict[str, int]) -> dict[str, str]:
    """Faust's changelogs: compacted, kept as long as the state they hold. The
    others kept for their retention; input records stamped with the broker's
    append time, not the producer's: the validator caps event times against
    it, and a producer cannot forge it."""
    if name in topics.changelogs:
        return {"cleanup.policy": "compact"}
    kept = retention["evidence" if name in (topics.findings, topics.lifecycle) else "default"]
    if name in topics.inputs:
        return {"retention.ms": str(kept), "message.timestamp.type": "LogAppendTime"}
    return {"retention.ms": str(kept)}


def _keep_evidence(client: KafkaAdminClient, names: list[str], retention_ms: int) -> None:
    """The retention of evidence topics that exist already, set again."""
    set_topic_configs(client, {n: {"retention.ms": str(retention_ms)} for n in names})


def set_topic_configs(client: KafkaAdminClient, configs: dict[str, dict[str, str]]) -> None:
    """Set these keys on existing topics (by name), leaving their other settings as
    they are (IncrementalAlterConfigs); raise KafkaUnavailable naming each topic the
    broker refused.

    kafka-python's own check of the keys (`raise_on_unknown`) is off: it accepts only
    keys the topic has had set before, so it refused `retention.ms` on a findings
    topic made by hand with the broker's defaults. The broker judges the keys.
    """
    if not configs:
        return
    resources = [
        ConfigResource(ConfigResourceType.TOPIC, name, configs=dict(keys))
        for name, keys in configs.items()
    ]
    result = client.alter_configs(resources, raise_on_unknown=False, incremental=True)
    refused = {n: r for n, r in result.get("topic", {}).items() if r != "OK"}
    if refused:
        raise KafkaUnavailable(
            "cannot set topic configs: "
            + "; ".join(f"{name}: {reason}" for name, reason in sorted(refused.items()))
        )


def _check_replication(
    client: KafkaAdminClient,
    names: list[str],
    wanted: Replication,
    described: list[dict[str, Any]] | None = None,
) -> None:
    """Refuse existing topics that keep fewer copies than asked for."""
    if names and (problems := under_replicated(client, names, wanted, described)):
        raise KafkaUnavailable(
            "topics keep fewer copies than SEPWATCH_REPLICATION_FACTOR "
            f"{wanted.factor} / SEPWATCH_MIN_INSYNC_REPLICAS "
            f"{wanted.min_insync} ask: "
            + "; ".join(problems)
            + " (raise them with kafka-reassign-partitions and kafka-configs, "
            "or lower the settings)"
        )


def ensure_topic(
    broker: Broker,
    name: str,
    partitions: int,
    configs: dict[str, str],
    factor: int | None = None,
    min_insync: int | None = None,
    ready_s: float = 30.0,
) -> int:
    """One topic of its own kind (the alert router's, a compacted log):
    created with `configs` if missing, replicated as every other topic
    (`Replication.for_cluster`; another worker creating it meanwhile is fine);
    its partition count once the broker's metadata has them, as it may
    predate the caller."""
    try:
        client = admin(broker)
        try:
            if name not in set(client.list_topics()):
                wanted = replication(client, factor, min_insync)
                with contextlib.suppress(TopicAlreadyExistsError):
                    client.create_topics([new_topic(name, partitions, wanted, configs)])
            return _partitions_of(client, name, ready_s)
        finally:
            client.close()
    except KafkaError as exc:
        raise KafkaUnavailable(f"creating {name}: {exc}") from None


def _partitions_of(client: KafkaAdminClient, name: str, ready_s: float) -> int:
    deadline = time.monotonic() + ready_s
    while True:
        (info,) = client.describe_topics([name])
        count = len(info.get("partitions") or [])
        if count:
            return count
        if time.monotonic() > deadline:
            raise KafkaUnavailable(f"{name} has no partitions after {ready_s:.0f} s")
        time.sleep(0.2)


def new_topic(
    name: str, partitions: int, replication: Replication, configs: dict[str, str]
) -> NewTopic:
    return NewTopic(
        name,
        num_partitions=partitions,
        replication_factor=replication.factor,
        topic_configs={**configs, **replication.configs()},
    )


def ensure_log(
    broker: Broker, name: str, factor: int | None = None, min_insync: int | None = None
) -> None:
    """A one-partition compacted topic (the policy history, the pseudonym key),
    replicated as every other topic sepwatch creates: a copy on one broker
    would be lost, or out of reach, with that broker."""
    ensure_topic(broker, name, 1, {"cleanup.policy": "compact"}, factor, min_insync)


def _await_partitions(
    client: KafkaAdminClient,
    co_partitioned: list[str],
    others: list[str],
    partitions: int,
    ready_s: float,
) -> list[dict[str, Any]]:
    """Once every topic has its partitions in the metadata: their descriptions."""
    deadline = time.monotonic() + ready_s
    while True:
        wrong, pending = [], []
        described = client.describe_topics([*co_partitioned, *others])
        for info in described:
            name = info.get("name") or info.get("topic")  # kafka-python 3 says name
            count = len(info.get("partitions") or [])
            if not count:
                pending.append(str(name))
            elif count != partitions and name in co_partitioned:
                wrong.append(f"{name} has {count} partitions, not {partitions}")
        if wrong:
            raise KafkaUnavailable(
                "topics would break co-partitioning: "
                + "; ".join(wrong)
                + " (use --partitions to match, or a new --prefix)"
            )
        if not pending:
            return list(described)
        if time.monotonic() > deadline:
            raise KafkaUnavailable(
                f"topics created but not ready after {ready_s:.0f} s: {', '.join(pending)}"
            )
        time.sleep(0.2)


def producer(broker: Broker) -> KafkaProducer:
    try:
        return KafkaProducer(
            **connection(broker).client_options(),
            linger_ms=5,
            batch_size=256 * 1024,
            acks="all",
            enable_idempotence=True,  # a retried batch is not written twice
            max_request_size=2 * MAX_RECORD,
        )
    except KafkaError:
        raise unavailable(broker) from None


def paced(lines: Iterable[bytes], rate: float) -> Iterator[bytes]:
    """Yield at most `rate` lines a second (0: no limit), for live traffic."""
    began = time.monotonic()
    for n, line in enumerate(lines):
        if rate > 0 and n % 100 == 0:
            ahead = n / rate - (time.monotonic() - began)
            if ahead > 0:
                time.sleep(ahead)
        yield line


def produce(
    lines: Iterable[bytes],
    broker: Broker,
    topics: Topics,
    *,
    end_of_input: bool = False,
    marker_key: SecretStr | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> dict[str, int]:
    """Publish canonical JSON lines, in file order, to their input topics,
    each in partition `partition_of(input_key)` (what `replay --partitions`
    assumes), with a clock mark in every input partition each time the
    file's time crosses a grid line (streams/partition_clock.py).
    A line that names no known stream cannot be routed: it goes to the dead
    letters with its line number. With `end_of_input`, then an end-of-input
    marker to every input partition, signed with `marker_key`
    (streams/end_of_input.py). Returns counts per stream."""
    if end_of_input and marker_key is None:
        raise MarkerKeyMissing()
    out = producer(broker)
    counts: dict[str, int] = {}
    max_ts = 0.0
    read = 0
    clock = ProducerClock()
    partitions = {name: sorted(out.partitions_for(name) or (0,)) for name in topics.inputs}
    try:
        for number, line in enumerate(lines, start=1):
            read += len(line)
            if on_progress is not None and number % 2048 == 0:
                on_progress(read)
            if not line.strip():
                continue
            event, stream, refused = _routed(line)
            if refused is not None:
                record = dead_letter(line.rstrip(), refused, where={"line": number})
                out.send(topics.dead_letters, json.dumps(record, ensure_ascii=False).encode())
                counts["dead_letters"] = counts.get("dead_letters", 0) + 1
                continue
            topic, key = topics.input(stream), input_key(event)
            out.send(
                topic,
                line.rstrip(b"\r\n"),
                key=key.encode(),
                partition=partition_of(key, len(partitions[topic])),
            )
            counts[stream] = counts.get(stream, 0) + 1
            ts = _event_time(event)
            if ts is not None:
                max_ts = max(max_ts, ts)
                if (mark := clock.see(ts)) is not None:
                    _clock_marks(out, partitions, mark)
        if end_of_input and marker_key is not None:
            _end_of_input(out, topics, marker_key, max_ts)
        out.flush()
        if on_progress is not None:
            on_progress(read)
    finally:
        out.close()
    return counts


def _routed(line: bytes) -> tuple[Any, str, str | None]:
    """The line's event and stream, or why it cannot be routed (a dead letter's reason)."""
    try:
        event: Any = json.loads(line)
        stream = event.get("stream") if isinstance(event, dict) else None
    except ValueError:
        event, stream = None, None
    if len(line) > MAX_RECORD:
        return event, "", f"line of {len(line)} bytes is over the limit"
    if stream not in INPUT_STREAMS:
        return (
            event,
            "",
            (
                "not a JSON object with a known `stream` (saas_access, "
                "device_posture, dlp_alert, control_review)"
            ),
        )
    return event, str(stream), None


def _event_time(event: dict[str, Any]) -> float | None:
    """The event's time, epoch seconds; None for a bad timestamp, which is the
    worker's to dead-letter, with the precise reason."""
    try:
        return datetime.fromisoformat(event["timestamp"]).timestamp()
    except (KeyError, TypeError, ValueError, OverflowError):
        return None


def _end_of_input(out: KafkaProducer, topics: Topics, key: SecretStr, max_ts: float) -> None:
    """A signed end-of-input marker into every input partition, after the data."""
    out.flush()  # the markers follow the data: sent once it is on the broker
    sent_at = time.time()
    for name in topics.inputs:
        for p in out.partitions_for(name) or ():
            marker = signed_marker(key, name, p, max_ts, sent_at)
            out.send(name, marker, key=END_OF_INPUT, partition=p)


def _clock_marks(out: KafkaProducer, partitions: dict[str, list[int]], ts: float) -> None:
    """The file's time, into every input partition, after the lines before it."""
    value = json.dumps({"ts": ts}).encode()
    for name, numbers in partitions.items():
        for p in numbers:
            out.send(name, value, key=CLOCK_MARK, partition=p)


def export_findings(broker: Broker, topics: Topics, sink: TextIO, timeout_s: float = 30.0) -> int:
    """Read the findings topic from the beginning to its end; one line per id."""
    seen: dict[str, bytes] = {}
    for record in read_topics(broker, [topics.findings], timeout_s):
        seen.setdefault((record.key or b"").decode(), record.value)
    for value in seen.values():
        sink.write(value.decode())
        sink.write("\n")
    return len(seen)


def read_topics(broker: Broker, names: list[str], timeout_s: float = 30.0) -> list[Any]:
    """Every committed record of the topics, from their beginning to their end
    offsets now. Committed only: a worker's aborted transaction leaves records
    on the topic that never happened (docs/exactly-once.md); without
    transactions every record is committed."""
    try:
        consumer = KafkaConsumer(
            **connection(broker).client_options(),
            enable_auto_commit=False,
            isolation_level="read_committed",
        )
    except KafkaError:
        raise unavailable(broker) from None
    try:
        parts = [
            TopicPartition(t, p) for t in names for p in consumer.partitions_for_topic(t) or ()
        ]
        if not parts:
            return []
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        end = consumer.end_offsets(parts)
        out: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < end[tp] for tp in parts):
            for records in consumer.poll(timeout_ms=500).values():
                out.extend(records)
            if time.monotonic() > deadline:
                raise KafkaUnavailable(f"{', '.join(names)} did not reach their end in time")
        return out
    except KafkaError as exc:
        raise KafkaUnavailable(f"reading {', '.join(names)}: {exc}") from None
    finally:
        consumer.close()


def read_events(broker: Broker, names: list[str], timeout_s: float = 30.0) -> list[Any]:
    """read_topics of input topics without their clock marks: the events alone."""
    return [r for r in read_topics(broker, names, timeout_s) if not is_clock_mark(r)]


def read_dead_letters(broker: Broker, topics: Topics) -> list[dict[str, Any]]:
    """Every dead letter so far (for the tests and the benchmarks)."""
    return [json.loads(r.value) for r in read_topics(broker, [topics.dead_letters])]
