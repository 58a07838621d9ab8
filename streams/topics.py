"""Topic names and keys of the streaming topology (architecture.md)."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

from detectors import Stage

INPUT_STREAMS = {
    "saas_access": "saas-access",
    "device_posture": "device-posture",
    "dlp_alert": "dlp-alerts",
    "control_review": "control-reviews",
}
STAGES: tuple[Stage, ...] = ("device", "user", "review")
# A stage's Faust tables, one changelog topic each.
STORES = ("postures", "accesses", "pending", "sessions", "entities", "identities", "meta")


@dataclass(frozen=True)
class Topics:
    """Every topic of one deployment, under its prefix (two prefixes never
    see each other's data)."""

    prefix: str

    def input(self, stream: str) -> str:
        return self.prefix + INPUT_STREAMS[stream]

    @property
    def inputs(self) -> list[str]:
        return [self.input(s) for s in INPUT_STREAMS]

    def raw(self, source: str) -> str:
        """Raw records of one vendor source, for the adapter agent."""
        return f"{self.prefix}raw.{source}"

    def stage(self, stage: Stage) -> str:
        return f"{self.prefix}by-{stage}"

    def changelog(self, stage: Stage, store: str) -> str:
        """The changelog of one stage table (Faust's name for the worker app)."""
        return f"{self.prefix}worker-{stage}-{store}-changelog"

    @property
    def changelogs(self) -> list[str]:
        return [self.changelog(stage, store) for stage in STAGES for store in STORES]

    @property
    def findings(self) -> str:
        return self.prefix + "findings"

    @property
    def lifecycle(self) -> str:
        """Copies of the findings' lifecycle records (review/evidence.py), keyed by finding."""
        return self.prefix + "findings-lifecycle"

    @property
    def dead_letters(self) -> str:
        return self.prefix + "dead-letters"

    @property
    def policy(self) -> str:
        return self.prefix + "policy"

    @property
    def pseudonym_key(self) -> str:
        """The deployment's pseudonym key, where no setting gives one (streams.pseudonym_key)."""
        return self.prefix + "pseudonym-key"

    @property
    def notified(self) -> str:
        """Finding ids the alert router has settled (compacted, keyed by id)."""
        return self.prefix + "notified"


# The device stage's one key when device identity is learned (Settings.learned_identity).
ONE_DEVICE_PARTITION = "learned-identity"
# The key of an event every partition of a stage takes (stage_partitions).
EVERY_PARTITION = "every-partition"


def stage_keys(event: Any, *, learned_identity: bool = False) -> dict[Stage, str]:
    """Which stage judges an event, under which key: every join is then local
    to one partition. The review stage also sees other events as ticks of its
    watermark. With `learned_identity` the device stage is one partition: a
    posture that names a device by other ids than its accesses do (Falcon's
    agent id, an access's Entra id) must meet them, and only the graph that
    learns from every posture knows they are one device. A posture that names
    aliases then also reaches every user stage partition (EVERY_PARTITION),
    whose copy of the graph names the devices of the DLP alerts it judges."""
    keys: dict[Stage, str] = {"review": event.entity}
    if event.stream in ("saas_access", "device_posture"):
        device_key = event.device_id or f"user:{event.user_id}"
        keys["device"] = ONE_DEVICE_PARTITION if learned_identity else device_key
    if event.stream in ("saas_access", "dlp_alert"):
        keys["user"] = event.user_id
    if learned_identity and event.stream == "device_posture" and event.device_aliases:
        keys["user"] = EVERY_PARTITION
    return keys


def stage_partitions(key: str, partitions: int) -> range | tuple[int]:
    """The partitions of a stage an event keyed `key` goes to."""
    return range(partitions) if key == EVERY_PARTITION else (partition_of(key, partitions),)


def partition_of(key: str, partitions: int) -> int:
    """Stable across processes and languages (CRC-32 of the UTF-8 key)."""
    return zlib.crc32(key.encode()) % partitions


def input_key(event: dict[str, Any]) -> str:
    """The key a producer gives a canonical event on its input topic."""
    stream = event.get("stream")
    if stream == "device_posture":
        return str(event.get("device_id"))
    if stream == "control_review":
        return str(event.get("entity"))
    return str(event.get("user_id"))
