"""What the engine hands a rule: small, flat records of the events it keeps.

They are tuples on purpose: cheap to keep for many devices, and they go
through a JSON changelog (Faust tables) and come back as lists unchanged.
"""

from __future__ import annotations

from typing import NamedTuple


class AccessView(NamedTuple):
    ts: float
    event_id: str
    entity: str
    user_id: str
    device_id: str | None
    saas_app: str
    action: str
    source: str
    sha256: str | None


class PostureView(NamedTuple):
    ts: float
    event_id: str
    flags: int  # the values of the boolean controls it asserts (detectors.posture's bits)
    patch_age: int  # os_patch_age_days, where it asserts it (else 0)
    known: int  # the controls it asserts; the others it does not speak for


class DlpView(NamedTuple):
    ts: float
    event_id: str
    entity: str
    user_id: str
    device_id: str | None
    channel: str
    saas_app: str | None
    data_types: tuple[str, ...]
    match_count: int
    sha256: str | None
    snippet: str | None  # already masked: raw text never enters the engine's state
    source: str
    # The vendor's names for the match (workload, object id, rule ids), kept in
    # its findings so that the vendor's undo finds them (streams/retractions.py).
    match_ref: tuple[str, str, tuple[str, ...]] | None = None


class ReviewView(NamedTuple):
    entity: str
    completed_at: float
    reported_at: float | None
    event_ids: tuple[str, ...]
    recorded_at: float
    reviewer: str
