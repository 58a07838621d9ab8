"""The policy in force is recorded, not remembered.

Every policy version a worker loads is a record on `PREFIXpolicy` (one
partition, so versions have one order; compacted, keyed by version, so no
version is ever compacted away): when it took effect, who loaded it, its
digest, what changed in the waivers and the registry, and the policy itself.
Every worker judges an event by the version in force at the event's time,
from this record, not from the file it happens to read now: a restarted or a
second worker applies the same versions at the same times, and so does
`replay --policy-history`.

Who: the worker cannot know who edited the file. It records the process that
loaded it: the OS user and host, and the Kafka principal it writes with (the
SASL user; `ANONYMOUS` on a plaintext listener, as Kafka names it). Changes to
the file itself belong to the bank's change control; this record is what the
monitor did with them.
"""

from __future__ import annotations

import getpass
import hashlib
import socket
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import BaseModel, ConfigDict

from schemas import Policy

if TYPE_CHECKING:
    from streams.kafka_connection import Broker
    from streams.settings import Settings


class PolicyVersion(BaseModel):
    model_config = ConfigDict(frozen=True)

    version: str
    effective_from: datetime
    digest: str
    loaded_by: dict[str, str]
    source: str
    changes: dict[str, dict[str, list[str]]]
    policy: dict[str, Any]

    def parsed(self) -> Policy:
        return Policy.model_validate(self.policy)


def digest_of(policy: Policy) -> str:
    """sha256 of the policy's canonical JSON: the same rules, the same digest,
    whatever the file's comments or key order."""
    data = policy.model_dump(mode="json")
    return hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _by_key(items: Iterable[Any], key: Any) -> dict[str, str]:
    return {
        key(i): orjson.dumps(i.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS).decode()
        for i in items
    }


def changes(before: Policy | None, after: Policy) -> dict[str, dict[str, list[str]]]:
    """Waivers (by id) and registry entries (by app and effective date) added,
    removed or changed from one version to the next."""
    out: dict[str, dict[str, list[str]]] = {}
    # Per section: its items in a policy, and the key that names one of them.
    sections: dict[str, tuple[Callable[[Policy], Iterable[Any]], Callable[[Any], str]]] = {
        "waivers": (lambda p: p.waivers, lambda w: w.name),
        "registry": (
            lambda p: p.registry,
            lambda e: f"{e.app_id}@{e.effective_from}" if e.effective_from else e.app_id,
        ),
    }
    for section, (items, key) in sections.items():
        old = _by_key(items(before), key) if before is not None else {}
        new = _by_key(items(after), key)
        out[section] = {
            "added": sorted(set(new) - set(old)),
            "removed": sorted(set(old) - set(new)),
            "changed": sorted(k for k in set(old) & set(new) if old[k] != new[k]),
        }
    return out


def principal(settings: Settings) -> dict[str, str]:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    kafka = (
        settings.kafka_sasl_username if settings.kafka_security_protocol.startswith("SASL") else ""
    )
    return {"os_user": user, "host": socket.gethostname(), "kafka_principal": kafka or "ANONYMOUS"}


def new_version(
    policy: Policy,
    previous: PolicyVersion | None,
    *,
    at: datetime,
    loaded_by: dict[str, str],
    source: str,
) -> PolicyVersion:
    digest = digest_of(policy)
    return PolicyVersion(
        version=f"{at.astimezone(UTC):%Y%m%dT%H%M%S.%fZ}-{digest[:12]}",
        effective_from=at,
        digest=digest,
        loaded_by=loaded_by,
        source=source,
        changes=changes(previous.parsed() if previous is not None else None, policy),
        policy=policy.model_dump(mode="json"),
    )


def in_force(versions: Iterable[PolicyVersion]) -> list[PolicyVersion]:
    """The versions that changed something, in order of taking effect: two
    workers that noticed the same edit record it twice; the first stands."""
    out: list[PolicyVersion] = []
    for v in sorted(versions, key=lambda v: (v.effective_from, v.version)):
        if not out or out[-1].digest != v.digest:
            out.append(v)
    return out


def read_versions(broker: Broker, name: str) -> list[PolicyVersion]:
    from streams.kafka_io import read_topics

    return [
        PolicyVersion.model_validate_json(r.value) for r in read_topics(broker, [name]) if r.value
    ]


def publish(broker: Broker, name: str, version: PolicyVersion) -> None:
    from streams.kafka_io import producer

    out = producer(broker)
    try:
        out.send(name, version.model_dump_json().encode(), key=version.version.encode()).get(
            timeout=30
        )
    finally:
        out.close()


def record_if_changed(
    settings: Settings, policy: Policy, source: str, *, at: datetime | None = None
) -> list[PolicyVersion]:
    """Read the recorded versions; record `policy` as a new one (effective
    now) unless it is already the newest; return the versions in force."""
    from streams.kafka_io import ensure_log
    from streams.topics import Topics

    name = Topics(settings.topic_prefix).policy
    ensure_log(settings.kafka, name, settings.replication_factor, settings.min_insync_replicas)
    versions = in_force(read_versions(settings.kafka, name))
    newest = versions[-1] if versions else None
    if newest is None or newest.digest != digest_of(policy):
        version = new_version(
            policy,
            newest,
            at=at or datetime.now(UTC),
            loaded_by=principal(settings),
            source=source,
        )
        publish(settings.kafka, name, version)
        versions.append(version)
    return versions


def read_history_file(path: str) -> list[PolicyVersion]:
    """Versions as `sepwatch policy history --json` prints them, one a line."""
    with open(path, encoding="utf-8") as f:
        return in_force(PolicyVersion.model_validate_json(line) for line in f if line.strip())


def waiver_versions(versions: list[PolicyVersion], policy: Policy) -> dict[str, str]:
    """For each waiver of `policy`, the version it came from: the first of the
    unbroken run of versions holding it exactly as it is now."""
    now = _by_key(policy.waivers, lambda w: w.name)
    out: dict[str, str] = {}
    for name, body in now.items():
        came = ""
        for v in versions:
            held = _by_key(v.parsed().waivers, lambda w: w.name).get(name)
            came = came or v.version if held == body else ""
        if came:
            out[name] = came
    return out
