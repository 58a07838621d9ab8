"""A device's posture as of an access, merged control by control.

A posture may speak for only some controls (an access log's device assurance
knows whether the disk is encrypted, not whether EDR runs). So the posture
as of an access is not one event but, for each control, the latest value
asserted at or before the access (of two stamped the same second, the larger
event id) and no older than `posture.max_age`, across every posture of the
device. A control no posture asserted within that age is unknown, never
assumed to pass (README, "How decisions are made").

What a device's entry in the `postures` store holds, and why it is exact:
`(exact_from, [PostureView...])`, the views ordered by (time, event id).
Of the postures at or before the watermark only those that are still the
latest to assert some control are kept (at most one per control: six), with
every posture after the watermark. A dropped posture is outvoted, control by
control, by a kept one no later than the newest posture at or before the
watermark; so any access stamped at or after that newest posture's time is
judged exactly as if nothing had been dropped. `exact_from` is that time
once something was dropped (None before): an access stamped earlier, so late
that its postures are forgotten, cannot be judged.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from detectors.views import PostureView
from schemas import DevicePosture

# Controls as bits, so a posture in the engine's state is two small ints.
MANAGED, EDR_RUNNING, DISK_ENCRYPTED, SCREEN_LOCK, JAILBROKEN, PATCH_AGE = 1, 2, 4, 8, 16, 32
ALL_CONTROLS = 63
CONTROL_BITS = (
    ("managed", MANAGED),
    ("edr_running", EDR_RUNNING),
    ("disk_encrypted", DISK_ENCRYPTED),
    ("screen_lock", SCREEN_LOCK),
    ("jailbroken", JAILBROKEN),
    ("os_patch_age_days", PATCH_AGE),
)
_BIT = dict(CONTROL_BITS)

Held = tuple[float | None, list[Any]]


def control_names(bits: int) -> tuple[str, ...]:
    """The controls set in `bits`, in the policy's order."""
    return tuple(name for name, bit in CONTROL_BITS if bits & bit)


def posture_view(ev: DevicePosture, ts: float) -> PostureView:
    """The event as the engine keeps it: which controls it asserts, and their values."""
    flags = known = 0
    for bit, value in (
        (MANAGED, ev.managed),
        (EDR_RUNNING, ev.edr_running),
        (DISK_ENCRYPTED, ev.disk_encrypted),
        (SCREEN_LOCK, ev.screen_lock),
        (JAILBROKEN, ev.jailbroken),
    ):
        if value is not None:
            known |= bit
            if value:
                flags |= bit
    age = ev.os_patch_age_days
    if age is not None:
        known |= PATCH_AGE
    return PostureView(ts, ev.event_id, flags, age or 0, known)


class PostureAsOf(NamedTuple):
    """The merged posture of one device at one access."""

    newest: PostureView  # the latest posture at or before the access, whatever its age
    known: int  # controls some posture asserted within max_age
    flags: int  # their values, for the boolean controls
    patch_age: int  # os_patch_age_days, where known
    used: tuple[tuple[PostureView, int], ...]  # each posture that gave values, and which

    @property
    def unknown(self) -> tuple[str, ...]:
        return control_names(ALL_CONTROLS & ~self.known)

    def asserting(self, controls: Iterable[str]) -> tuple[str, ...]:
        """The ids of the postures that asserted these controls' values."""
        bits = 0
        for name in controls:
            bits |= _BIT[name]
        return tuple(p.event_id for p, gave in self.used if gave & bits)


def held(raw: Any) -> Held:
    """A device's entry as stored; one written before partial postures (a
    bool for "something was dropped", views without their known controls)
    is read as the full postures it held."""
    exact_from, entries = raw
    if type(exact_from) is bool:
        entries = [(*e[:4], ALL_CONTROLS) for e in entries]
        exact_from = entries[0][0] if exact_from and entries else None
    return exact_from, entries


def as_of(entries: Sequence[Any], at: float, max_age: float) -> PostureAsOf | None:
    """Merge, control by control, the postures at or before `at`; None when there are none."""
    newest: PostureView | None = None
    known = flags = patch_age = 0
    used: list[tuple[PostureView, int]] = []
    for raw in reversed(entries):  # latest first: entries are ordered by (time, event id)
        if raw[0] > at:
            continue
        p = PostureView._make(raw)
        if newest is None:
            newest = p
        if at - p.ts > max_age:
            break
        gave = p.known & ~known
        if gave:
            known |= gave
            flags |= p.flags & gave
            if gave & PATCH_AGE:
                patch_age = p.patch_age
            used.append((p, gave))
            if known == ALL_CONTROLS:
                break
    if newest is None:
        return None
    return PostureAsOf(newest, known, flags, patch_age, tuple(used))


def remember(stored: Any, view: PostureView, watermark: float) -> Held:
    """The device's entry with `view` added and what no later access can need dropped."""
    if stored is None:
        return None, [view]
    exact_from, entries = held(stored)
    last = entries[-1]
    if (
        view.known == ALL_CONTROLS
        and last[0] <= watermark
        and (last[0], last[1]) < (view.ts, view.event_id)
    ):
        # The common case: a full posture newer than all held, which are at
        # or before the watermark. At or before it too, it outvotes them all.
        if view.ts <= watermark:
            return view.ts, [view]
        if last[4] == ALL_CONTROLS:
            return (last[0], [last, view]) if len(entries) > 1 else (exact_from, [last, view])
    entries = list(entries)
    i = len(entries)
    while i and (entries[i - 1][0], entries[i - 1][1]) > (view.ts, view.event_id):
        i -= 1
    entries.insert(i, view)
    return _compact(exact_from, entries, watermark)


def _compact(exact_from: float | None, entries: list[Any], watermark: float) -> Held:
    """Keep every posture after the watermark and, of those at or before it,
    the latest to assert each control."""
    split = len(entries)
    while split and entries[split - 1][0] > watermark:
        split -= 1
    if split <= 1:
        return exact_from, entries
    kept: list[Any] = []
    covered = 0
    for p in reversed(entries[:split]):
        if p[4] & ~covered:
            kept.append(p)
            covered |= p[4]
            if covered == ALL_CONTROLS:
                break
    if len(kept) == split:
        return exact_from, entries
    kept.reverse()
    newest = entries[split - 1][0]
    return max(newest, exact_from) if exact_from is not None else newest, kept + entries[split:]
