"""One device, many names: the identity graph learned from posture feeds.

Every product names a laptop its own way (an Entra device id, an Intune id,
a Falcon agent id, a serial, a hostname). A posture that names several of
them (`device_aliases`) says they are one device; the graph keeps, for each
alias, the canonical device it belongs to, its kind, and when and by which
source it was last asserted. An access names one alias; `resolve` gives the
device whose postures judge it.

Rules, in the order they decide a posture's canonical device:
- a hand-written `devices:` entry (a `mapping` alias) names it, and its
  aliases are never taken by a learned assertion;
- else the device its serial already belongs to (the serial is the
  hardware: a re-imaged laptop keeps it and gets a new Entra id);
- else the device any other of its ids belongs to;
- else the device its hostname belongs to, unless that device has another
  serial (a reused hostname never merges two machines);
- else its own `device_id`.
An alias already held by another device is a conflict: it goes to the more
recent assertion (at equal times, to the later one to arrive), and is
counted (`identity.conflicts`) and remembered (the last 32).

State, in the engine's `identities` store (so a stream changelogs it):
"a|<alias>" -> [device, kind, asserted_ts, source, pinned];
"d|<device>" -> [alias...]; "conflicts" -> [[alias, kind, lost_to_or_from,
device, ts, source]...]. Bounded by `identity.alias_ttl`: an alias not
asserted for that long is forgotten, and a device with no alias left with it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from detectors.state import Store

MAPPING, SERIAL, HOSTNAME, DEVICE_ID = "mapping", "serial", "hostname", "device_id"
KEEP_CONFLICTS = 32
# Which alias names a device in findings: the id the bank wrote, else the one
# sign-ins carry, else the hardware's; a hostname last (it is reused).
NAMING = (
    MAPPING,
    "entra_device_id",
    SERIAL,
    "intune_device_id",
    "jamf_udid",
    "google_device_id",
    "falcon_aid",
    "osquery_uuid",
    "okta_device_id",
    DEVICE_ID,
    HOSTNAME,
)
_RANK = {kind: i for i, kind in enumerate(NAMING)}


class Alias(NamedTuple):
    """An alias as the graph holds it."""

    device: str
    kind: str
    asserted: float
    source: str
    pinned: bool


class Conflict(NamedTuple):
    alias: str
    kind: str
    held_by: str  # the device that held it before
    claimed_by: str  # the device the conflicting assertion named
    winner: str
    ts: float
    source: str


def normal(value: str) -> str:
    """Ids as the adapters write them (mapping.device_of): stripped, lower-cased."""
    return value.strip().lower()


class IdentityGraph:
    def __init__(self, store: Store, stats: Counter[str] | None = None) -> None:
        self._store = store
        self.stats: Counter[str] = stats if stats is not None else Counter()

    # -- reading -------------------------------------------------------------

    def alias(self, value: str) -> Alias | None:
        raw = self._store.get("a|" + normal(value))
        return Alias._make(raw) if raw is not None else None

    def resolve(self, device_id: str) -> str:
        """The canonical device an id names; the id itself where none is known."""
        found = self.alias(device_id)
        return found.device if found is not None else device_id

    def name_of(self, device_id: str) -> str:
        """The id findings name the device by: of all its aliases, the first
        kind in NAMING (the smallest value of that kind). Which device holds
        the postures depends on the order postures arrived; this does not,
        once the same postures have been read."""
        found = self.alias(device_id)
        if found is None:
            return device_id
        ranked = [(_RANK.get(a.kind, len(NAMING)), n) for n, a in self.aliases_of(found.device)]
        rank, name = min(ranked, default=(0, found.device))
        # A hand-written entry's device is named as the entry writes it.
        return found.device if rank == _RANK[MAPPING] else name

    def aliases_of(self, device: str) -> list[tuple[str, Alias]]:
        """Every alias of a device, with what the graph holds of it."""
        names = self._store.get("d|" + device, ())
        return [(name, a) for name in names if (a := self.alias(name)) is not None]

    @property
    def conflicts(self) -> list[Conflict]:
        return [Conflict._make(c) for c in self._store.get("conflicts", ())]

    # -- learning ------------------------------------------------------------

    def learn(
        self, device_id: str, aliases: Iterable[tuple[str, str]], ts: float, source: str
    ) -> str:
        """Take one posture's names of its device; return its canonical device."""
        named = _named(device_id, aliases)
        pinned = any(kind == MAPPING for kind, _ in named)
        device = self._canonical(named, device_id)
        for kind, value in named:
            self._assert(value, kind, device, ts, source, pinned)
        return device

    def _canonical(self, named: Sequence[tuple[str, str]], own: str) -> str:
        if any(kind == MAPPING for kind, _ in named):
            return own  # the posture's device_id is the one the entry gave
        held = {value: a.device for _, value in named if (a := self.alias(value)) is not None}
        serials = [value for kind, value in named if kind == SERIAL]
        for kind, value in named:
            if kind == SERIAL and value in held:
                return held[value]
        for kind, value in named:
            if kind not in (SERIAL, HOSTNAME) and value in held:
                return held[value]
        for kind, value in named:
            if kind == HOSTNAME and value in held and self._same_machine(held[value], serials):
                return held[value]
        return own

    def _same_machine(self, device: str, serials: list[str]) -> bool:
        """Whether a device may be the one a hostname names: it has no other serial."""
        if not serials:
            return True
        theirs = {n for n, a in self.aliases_of(device) if a.kind == SERIAL}
        return not theirs or bool(theirs.intersection(serials))

    def _assert(
        self, value: str, kind: str, device: str, ts: float, source: str, pinned: bool
    ) -> None:
        held = self.alias(value)
        if held is not None and held.device != device:
            keeps = (held.pinned and not pinned) or (held.asserted > ts and held.pinned == pinned)
            winner = held.device if keeps else device
            self._conflict(Conflict(value, kind, held.device, device, winner, ts, source))
            if keeps:
                return
            self._unlist(held.device, value)
        elif held is not None:
            if held.asserted > ts or (held.pinned and not pinned):
                return  # a newer (or hand-written) assertion of the same already stands
            # One value asserted as two kinds keeps the one that names a device
            # first, whichever order they came in.
            kind = min(held.kind, kind, key=lambda k: _RANK.get(k, len(NAMING)))
        self._store["a|" + value] = [device, kind, ts, source, pinned]
        if held is None or held.device != device:
            names = self._store.get("d|" + device, [])
            self._store["d|" + device] = [*names, value]

    def _conflict(self, conflict: Conflict) -> None:
        self.stats["identity.conflicts"] += 1
        kept = [*self._store.get("conflicts", ()), list(conflict)][-KEEP_CONFLICTS:]
        self._store["conflicts"] = kept

    def _unlist(self, device: str, value: str) -> None:
        names = [n for n in self._store.get("d|" + device, ()) if n != value]
        if names:
            self._store["d|" + device] = names
        else:
            self._store.pop("d|" + device, None)

    # -- forgetting ----------------------------------------------------------

    def expire(self, horizon: float) -> int:
        """Forget aliases last asserted before `horizon`; return how many."""
        stale = [
            (key[2:], Alias._make(raw))
            for key, raw in list(self._store.items())
            if key.startswith("a|") and raw[2] < horizon
        ]
        for value, held in stale:
            del self._store["a|" + value]
            self._unlist(held.device, value)
        self.stats["identity.aliases_expired"] += len(stale)
        return len(stale)


def _named(device_id: str, aliases: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The posture's aliases, normalised, each once, with its own device id."""
    named: dict[str, str] = {}
    for kind, value in aliases:
        if value and value.strip():
            named.setdefault(normal(value), kind)
    named.setdefault(normal(device_id), DEVICE_ID)
    return [(kind, value) for value, kind in named.items()]


def posture_aliases(raw: Sequence[Any] | None) -> list[tuple[str, str]]:
    """A posture event's `device_aliases` as (kind, value) pairs."""
    return [(a.kind, a.value) for a in raw or ()]
