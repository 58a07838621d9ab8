"""The engine's memory, in mapping-like stores that the caller hands in.

A replay passes plain dicts; the streaming path passes Faust tables, which
changelog every assignment to Kafka. So the engine never mutates a stored
value in place: it builds the new value and assigns it. Values are tuples and
lists of plain scalars, so they survive a JSON changelog.

What each store holds, and why it stays bounded:

- `postures`: device_id -> (exact_from, [PostureView...]): of the postures at
  or before the watermark, the latest to assert each control (one, for a
  full posture), and every later one; older ones can no longer give any
  control's value to an access still to be judged (detectors/posture.py).
  A device silent for longer than the idle retention is dropped.
- `accesses`: user_id -> [AccessView...]: internal upload/share/edit accesses
  within two correlation windows of the watermark, for DLP correlation.
- `pending`: key -> (kind, view): decisions waiting for the watermark.
- `sessions`: "user|session" -> [verified_ts...]: when second factors were
  verified in an identity provider's sign-in session (SEP-010), the last
  few; a session whose last factor is older than
  `authentication.session_lifetime` before the watermark is dropped.
- `entities`: entity -> [fired_due_ordinal, [(completed_ts, recorded_ts,
  review_id)...], [judged completed_ts...]]: the last 16 reviews and the last
  8 judged, for a handful of entities.
- `identities`: the device identity graph (detectors/identity.py): each
  alias's canonical device; aliases not asserted for `identity.alias_ttl`
  are forgotten.
- `meta`: "max_ts", the largest event time seen (the watermark's source).
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

Store = MutableMapping[str, Any]


@dataclass
class EngineState:
    postures: Store = field(default_factory=dict)
    accesses: Store = field(default_factory=dict)
    pending: Store = field(default_factory=dict)
    sessions: Store = field(default_factory=dict)
    entities: Store = field(default_factory=dict)
    identities: Store = field(default_factory=dict)
    meta: Store = field(default_factory=dict)
