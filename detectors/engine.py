"""The correlation engine: events in arrival order, findings out.

Pure and synchronous: time comes from the events (the watermark) and the
`now` callable the caller passes for `detected_at`; state lives in the
stores of `EngineState`. A decision that needs other events waits, pending,
until the watermark passes the time it needs (rules.md, "watermark"); the
rest is decided on arrival.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import date, datetime
from hashlib import blake2b
from typing import Any, Literal

from detectors.calendar import DAY, to_datetime
from detectors.identity import IdentityGraph, posture_aliases
from detectors.masking import mask_text
from detectors.policy_in_force import PolicyInForce
from detectors.posture import ALL_CONTROLS, as_of, held, posture_view, remember
from detectors.release_queue import ReleaseQueue
from detectors.rules import (
    sep001_unevaluated_saas as sep001,
)
from detectors.rules import (
    sep002_category_not_permitted as sep002,
)
from detectors.rules import (
    sep003_unique_identification as sep003,
)
from detectors.rules import (
    sep004_personal_credit as sep004,
)
from detectors.rules import (
    sep005_pseudonymous_undesignated as sep005,
)
from detectors.rules import (
    sep006_posture_failing as sep006,
)
from detectors.rules import (
    sep007_posture_unknown as sep007,
)
from detectors.rules import (
    sep008_review_overdue as sep008,
)
from detectors.rules import (
    sep009_review_not_reported as sep009,
)
from detectors.rules import (
    sep010_single_factor_signin as sep010,
)
from detectors.rules import (
    sep011_external_sharing as sep011,
)
from detectors.rules.base import Hit, Rule
from detectors.rules.dlp_common import Destination
from detectors.state import EngineState
from detectors.views import AccessView, DlpView, ReviewView
from schemas import (
    STREAMS,
    ControlReview,
    DevicePosture,
    DlpAlert,
    Finding,
    Policy,
    SaasAccess,
    WaiverRef,
)

Clock = Callable[[], datetime]
AnyEvent = SaasAccess | DevicePosture | DlpAlert | ControlReview

CORRELATABLE_ACTIONS = frozenset({"upload", "share", "edit"})


def correlatable(access: SaasAccess) -> bool:
    """An access a DLP alert can be laid against (SEP-003..005): a file sent
    or changed from the internal network."""
    return access.network_zone == "internal" and access.action in CORRELATABLE_ACTIONS


def awaits_factor(access: SaasAccess) -> bool:
    """A sign-in from the internal network that does not say whether it was
    multi-factor but names its identity provider's session: the `verify`
    events of that session may say (SEP-010). Keyed by user, the user stage
    joins them."""
    auth = access.auth
    return (
        auth is not None
        and auth.mfa is None
        and auth.session is not None
        and access.action == "login"
        and access.network_zone == "internal"
    )


def times_only(stage: Stage, event: AnyEvent) -> bool:
    """Whether `stage` needs no more of the event than its stream and time:
    the user stage judges DLP alerts, remembers correlatable accesses and
    joins sign-ins to their sessions' factors; any other access only moves
    its clock (Engine.pass_time). A `verify` is no use of an app: the device
    stage only times it."""
    if not isinstance(event, SaasAccess):
        return False
    if stage == "device":
        return event.action == "verify"
    return stage == "user" and not (
        correlatable(event) or event.action == "verify" or awaits_factor(event)
    )


_EVENT_KEYS = {s: f"events.{s}" for s in STREAMS}
SWEEP_EVERY = 6 * 3600.0  # event-time seconds between sweeps of idle devices and users
SESSION_FACTORS = 8  # factor times kept per session: re-verifications beyond are rare


Stage = Literal["all", "device", "user", "review"]
Handler = Callable[[Any, float, float, list["Finding"]], None]


def finding_id(rule_id: str, trigger: str) -> str:
    """Deterministic: the same rule on the same trigger is the same finding,
    after a crash, a redelivery or in a replay."""
    return f"{rule_id}-{blake2b(f'{rule_id}|{trigger}'.encode(), digest_size=10).hexdigest()}"


class Engine:
    def __init__(
        self,
        policy: Policy,
        *,
        now: Clock,
        state: EngineState | None = None,
        idle_retention: float = 7 * DAY,
        stage: Stage = "all",
        owns_entity: Callable[[str], bool] | None = None,
        external_clock: bool = False,
    ) -> None:
        """`stage` picks the rules one partition of the streaming topology runs
        (architecture.md): "device" SEP-001/002/006/007 over accesses and
        postures keyed by device, "user" SEP-003/004/005 over accesses and DLP
        alerts keyed by user, "review" SEP-008/009 keyed by entity; "all" is
        every rule at once, as in a replay. `owns_entity` says which of the
        entities the policy names this partition tracks (default: all).
        With `external_clock`, events do not move the watermark: the caller
        does, with `advance` (a stream fed by several sources moves it to the
        slowest source's time, as Flink and Kafka Streams do)."""
        self._external_clock = external_clock
        # The event being judged came later than the allowed lateness against
        # its own input partition's clock (process's `late`): it joins nothing.
        self._unjoined = False
        self._owns_entity = owns_entity or (lambda _: True)
        self.state = state if state is not None else EngineState()
        self._now = now
        self.stats: Counter[str] = Counter()
        self.identity = IdentityGraph(self.state.identities, self.stats)
        self.policy = PolicyInForce(policy)
        self._lateness = self.policy.lateness
        self._max_age = self.policy.posture_max_age
        self._clean_apps: set[tuple[str, int]] = set()
        # A fast mirror of the entities store's keys (it may be a remote table).
        self._entities: set[str] = set(self.state.entities)
        self._idle_retention = max(idle_retention, 2 * self.policy.posture_max_age)
        self._max_ts: float = float(self.state.meta.get("max_ts", float("-inf")))
        # The pending store is the truth; this queue only orders it by release
        # time, and is rebuilt from it after a restart.
        self._queue = ReleaseQueue()
        for key, (kind, view) in sorted(self.state.pending.items()):
            self._push(self._release_time(kind, view), key)
        w = self.watermark
        self._next_sweep = (w // SWEEP_EVERY + 1) * SWEEP_EVERY if w > float("-inf") else w
        self._alarm = float("inf")
        self.stage = stage
        self._correlates = stage == "all"
        # Where sign-ins meet their sessions' factors: keyed by user.
        self._joins_sessions = stage in ("all", "user")
        self._tracks_entities = stage in ("all", "review")
        self._handlers = self._handlers_of(stage)
        self.set_policy(policy)

    def _handlers_of(self, stage: Stage) -> dict[type, Handler]:
        """What each kind of event does in this stage; `_skip` where the stage
        has no rule for it."""
        skip = self._skip
        handlers: dict[str, dict[type, Handler]] = {
            "all": {
                SaasAccess: self._on_access,
                DevicePosture: self._on_posture,
                DlpAlert: self._on_dlp,
                ControlReview: self._on_review,
            },
            "device": {
                SaasAccess: self._on_access,
                DevicePosture: self._on_posture,
                DlpAlert: skip,
                ControlReview: skip,
            },
            "user": {
                SaasAccess: self._on_access_for_user,
                # Only with learned identity does a posture reach this stage
                # (streams/topics.py): its aliases name the alerts' devices.
                DevicePosture: self._learn_identity,
                DlpAlert: self._on_dlp,
                ControlReview: skip,
            },
            "review": {
                SaasAccess: skip,
                DevicePosture: skip,
                DlpAlert: skip,
                ControlReview: self._on_review,
            },
        }
        return handlers[stage]

    # -- the policy ----------------------------------------------------------

    def set_policy(self, policy: Policy, effective_from: float | None = None) -> None:
        """Install a (validated) policy. Without `effective_from` it is the
        only one; with it (epoch seconds), events stamped at or after that
        time are judged by it and earlier ones by the policy before it."""
        compiled = PolicyInForce(policy)
        if effective_from is None:
            self._policies = [(float("-inf"), compiled)]
        else:
            kept = [(t, p) for t, p in self._policies if t < effective_from]
            self._policies = [*kept, (effective_from, compiled)]
        self._policy_times = [t for t, _ in self._policies]
        self.policy = compiled
        self._lateness = compiled.lateness
        self._max_age = compiled.posture_max_age
        self._clean_apps = set()
        if self._tracks_entities:
            for entity in policy.review.entity_baselines:
                if self._owns_entity(entity):
                    self._see_entity(entity)
            self._alarm = self._next_alarm()

    def _use_policy(self, ts: float) -> None:
        """Judge by the policy in force at the event's own time."""
        if len(self._policies) > 1:
            chosen = self._policies[bisect_right(self._policy_times, ts) - 1][1]
            if chosen is not self.policy:
                self.policy = chosen
                self._max_age = chosen.posture_max_age
                self._clean_apps = set()

    # -- time ----------------------------------------------------------------

    @property
    def watermark(self) -> float:
        """Largest event time seen minus the allowed lateness (epoch seconds)."""
        return self._max_ts - self._lateness

    @property
    def lateness(self) -> float:
        """The allowed lateness of the policy in force, in seconds."""
        return self._lateness

    @property
    def pending_count(self) -> int:
        return len(self.state.pending)

    # -- input ---------------------------------------------------------------

    def process(self, event: AnyEvent, late: bool | None = None) -> list[Finding]:
        """Take one event in arrival order; return the findings it decides.

        `late` (a stage of the stream, or replay emulating it) says the event
        came later than the allowed lateness against its own input partition's
        clock (streams/partition_clock.py): it is judged by the rules that need
        nothing else and joins nothing, neither as what a decision waits for
        (a posture, an access to correlate, a review record) nor as a decision
        waiting for others (counted, `decisions.late_unjoined`). Which events
        a join sees is then the same whatever order the partitions are read
        in. None: late against this engine's own watermark, and joined as it
        can (a single-clock replay)."""
        out: list[Finding] = []
        ts = event.timestamp.timestamp()
        w = self._max_ts - self._lateness
        self.stats[_EVENT_KEYS[event.stream]] += 1
        self._use_policy(ts)
        if late if late is not None else ts < w:
            self.stats["events.late"] += 1
        self._unjoined = bool(late)
        if self._tracks_entities and event.entity not in self._entities:
            self._see_entity(event.entity)
        self._handlers[type(event)](event, ts, w, out)
        if ts > self._max_ts and not self._external_clock:
            self._max_ts = ts
            self.state.meta["max_ts"] = ts
            w = ts - self._lateness
            # Most events release nothing and start no hourly sweep: skip the call.
            if self._queue.next_time() < w or w > self._alarm or w >= self._next_sweep:
                self._advance(out, final=False)
        return out

    def pass_time(self, stream: str, ts: float) -> None:
        """Take an event this stage only times (see `times_only`): what
        `process` does with it, without the event."""
        self.stats[_EVENT_KEYS[stream]] += 1
        self._use_policy(ts)
        if ts < self._max_ts - self._lateness:
            self.stats["events.late"] += 1

    def advance(self, max_ts: float) -> list[Finding]:
        """Move the event clock to `max_ts` (external clock): what waits for
        the watermark it brings is decided now."""
        out: list[Finding] = []
        if max_ts > self._max_ts:
            # Kept at every move: a restart that resumed behind would judge
            # events late-or-not differently than before the crash. A remote
            # table's writer keeps only a key's last value per record it judges.
            self.state.meta["max_ts"] = max_ts
            self._max_ts = max_ts
            w = max_ts - self._lateness
            if self._queue.next_time() < w or w > self._alarm or w >= self._next_sweep:
                self._advance(out, final=False)
        return out

    def run(self, events: Iterable[AnyEvent]) -> list[Finding]:
        """Process every event, then flush: the findings in the order decided."""
        out: list[Finding] = []
        for event in events:
            out.extend(self.process(event))
        out.extend(self.flush())
        return out

    def flush(self, until: float | None = None) -> list[Finding]:
        """End of input: the watermark moves to the last event time (or to
        `until`, the last event time of the whole input when this engine saw
        only a part of it), and every decision still waiting for other events
        is made now."""
        out: list[Finding] = []
        if until is not None and until > self._max_ts:
            self._max_ts = until
            self.state.meta["max_ts"] = until
        if self._max_ts != float("-inf"):
            self._advance(out, final=True)
        return out

    # -- saas_access: SEP-001/002 on arrival, SEP-006/007 once postures are in

    def _on_access(self, ev: SaasAccess, ts: float, w: float, out: list[Finding]) -> None:
        if ev.action == "share":
            self._judge_share(ev, ts, out)
        elif ev.action == "verify":
            if self._joins_sessions:
                self._remember_factor(ev, ts, w)
            return  # a factor verified at the identity provider: no app used
        if ev.network_zone != "internal":
            return
        view = _access_view(ev, ts)
        day = self.policy.days.day_of(ts)
        trigger = f"saas_access|{view.source}|{view.event_id}"
        if ev.action == "login":
            self._judge_signin(ev, view, day, trigger, w, out)
        # SEP-001/002 depend on the app and the day only: once both pass for
        # a pair, the pair is remembered as clean (the common case).
        if (view.saas_app, day) not in self._clean_apps:
            app = self.policy.app(view.saas_app, day)
            hit = sep001.check(view, app, day)
            if hit:
                out.append(self._access_finding(sep001.RULE, hit, trigger, view))
            else:
                hit = sep002.check(view, app, day, self.policy.permitted_categories(day))
                if hit:
                    out.append(self._access_finding(sep002.RULE, hit, trigger, view))
                elif len(self._clean_apps) < 65536:
                    self._clean_apps.add((view.saas_app, day))

        if self._correlates and view.action in CORRELATABLE_ACTIONS:
            self._remember_access(view, w)

        if view.device_id is not None and self._unjoined:
            self.stats["decisions.late_unjoined"] += 1
        elif view.device_id is None or ts < w:
            # Nothing more can arrive that this decision waits for.
            self._judge_posture(view, out)
        else:
            key = "a|" + trigger
            self.state.pending[key] = ("a", view)
            self._push(ts, key)

    def _judge_signin(
        self,
        ev: SaasAccess,
        view: AccessView,
        day: int,
        trigger: str,
        w: float,
        out: list[Finding],
    ) -> None:
        """SEP-010, on arrival: everything it needs is in the sign-in itself,
        or, where it does not say but names its session, in the session's
        factors (judged where they meet: `_await_factor`)."""
        if ev.auth is None or ev.auth.mfa is None:
            if ev.auth is not None and ev.auth.session is not None:
                if self._joins_sessions:
                    self._await_factor(ev, view.ts, w)
                return
            self.stats["auth.mfa_unknown"] += 1  # the source does not say: never guessed
            return
        policy = self.policy.policy.authentication
        if policy is None:
            return
        hit = sep010.check(ev, self.policy.app(view.saas_app, day) is not None, policy)
        if hit:
            out.append(self._access_finding(sep010.RULE, hit, trigger, view))

    def _judge_share(self, ev: SaasAccess, ts: float, out: list[Finding]) -> None:
        """SEP-011, on arrival, from the internal network or not."""
        hit = sep011.check(ev, self.policy.policy.sharing)
        if hit:
            view = _access_view(ev, ts)
            trigger = f"saas_access|{view.source}|{view.event_id}"
            out.append(self._access_finding(sep011.RULE, hit, trigger, view))

    def _skip(self, ev: Any, ts: float, w: float, out: list[Finding]) -> None:
        """Events of streams this stage does not judge still move its watermark."""

    def _on_access_for_user(self, ev: SaasAccess, ts: float, w: float, out: list[Finding]) -> None:
        if correlatable(ev):
            self._remember_access(_access_view(ev, ts), w)
        elif ev.action == "verify":
            self._remember_factor(ev, ts, w)
        elif awaits_factor(ev):
            self._await_factor(ev, ts, w)

    # -- sign-in sessions: SEP-010 where the sign-in does not say ------------

    def _remember_factor(self, ev: SaasAccess, ts: float, w: float) -> None:
        """A second factor verified in a session: the times it was, for the
        session's sign-ins still to be judged."""
        session = ev.auth.session if ev.auth is not None else None
        if session is None:
            self.stats["auth.verify_without_session"] += 1  # joins nothing
            return
        if ts < w - self.policy.session_lifetime:
            return  # every sign-in it could speak for is judged already
        key = f"{ev.user_id}|{session}"
        times = sorted({*self.state.sessions.get(key, ()), ts})
        self.state.sessions[key] = times[-SESSION_FACTORS:]

    def _await_factor(self, ev: SaasAccess, ts: float, w: float) -> None:
        """Judged once the watermark passes the sign-in: every factor verified
        at or before it has arrived by then, in whatever order they came."""
        item = (ts, ev.user_id, ev.auth.session if ev.auth is not None else None)
        if ts < w:
            self._judge_session(item)
            return
        key = f"s|{ev.source}|{ev.event_id}"
        self.state.pending[key] = ("s", item)
        self._push(ts, key)

    def _judge_session(self, item: Any) -> None:
        """Multi-factor if a factor of the session speaks for the sign-in;
        else it stays unsaid (counted), never guessed: no finding either way."""
        ts, user, session = item
        self._use_policy(ts)
        lifetime = self.policy.session_lifetime
        times = self.state.sessions.get(f"{user}|{session}", ())
        if any(sep010.factor_speaks_for(t, ts, lifetime) for t in times):
            self.stats["auth.mfa_from_session"] += 1
        else:
            self.stats["auth.mfa_unknown"] += 1

    def _judge_posture(self, access: AccessView, out: list[Finding]) -> None:
        self._use_policy(access.ts)
        posture = None
        max_age = self._max_age
        if access.device_id is not None:
            stored = self.state.postures.get(self.identity.resolve(access.device_id))
            if stored is not None:
                exact_from, entries = held(stored)
                if exact_from is not None and access.ts < exact_from:
                    # Its postures were forgotten: a very late access.
                    self.stats["decisions.posture_unknowable"] += 1
                    return
                for p in reversed(entries):
                    if p[0] <= access.ts:
                        if (
                            p[4] == ALL_CONTROLS
                            and access.ts - p[0] <= max_age
                            and not self.policy.posture_failures(p[2], p[3])
                        ):
                            return  # the common case: a recent, full, compliant posture
                        break
                posture = as_of(entries, access.ts, max_age)
        trigger = f"saas_access|{access.source}|{access.event_id}"
        if posture is not None:
            failures = self.policy.posture_failures(posture.flags, posture.patch_age, posture.known)
            hit = sep006.check(access, posture, failures)
            if hit:
                out.append(self._posture_finding(sep006.RULE, hit, trigger, access))
                return
        hit = sep007.check(access, posture)
        if hit:
            out.append(self._posture_finding(sep007.RULE, hit, trigger, access))

    def _access_finding(self, rule: Rule, hit: Hit, trigger: str, a: AccessView) -> Finding:
        return self._finding(
            rule, hit, trigger, a.ts, a.entity, a.user_id, a.device_id, a.saas_app, a.event_id
        )

    def _posture_finding(self, rule: Rule, hit: Hit, trigger: str, a: AccessView) -> Finding:
        """Named by the device's name in the identity graph, with the alias the
        access used where it differs. Only findings decided at the watermark
        are: on arrival, which postures a stream has read yet depends on how
        its input partitions interleave, so a name then would too."""
        device = a.device_id
        if device is not None and (name := self.identity.name_of(device)) != device:
            hit = replace(hit, details={**hit.details, "device_alias": device})
            a = a._replace(device_id=name)
        return self._access_finding(rule, hit, trigger, a)

    # -- device_posture ----------------------------------------------------------

    def _on_posture(self, ev: DevicePosture, ts: float, w: float, out: list[Finding]) -> None:
        if self._unjoined:
            return
        device = self._device_of(ev, ts)
        postures = self.state.postures
        postures[device] = remember(postures.get(device), posture_view(ev, ts), w)

    def _learn_identity(self, ev: DevicePosture, ts: float, w: float, out: list[Finding]) -> None:
        if not self._unjoined:
            self._device_of(ev, ts)

    def _device_of(self, ev: DevicePosture, ts: float) -> str:
        """The posture's device in the identity graph, learning its aliases."""
        if ev.device_aliases:
            return self.identity.learn(
                ev.device_id, posture_aliases(ev.device_aliases), ts, ev.source
            )
        return self.identity.resolve(ev.device_id)

    # -- dlp_alert: SEP-003/004/005 --------------------------------------------

    def _on_dlp(self, ev: DlpAlert, ts: float, w: float, out: list[Finding]) -> None:
        if ev.retraction is not None:
            # The vendor undoing a match: the worker resolves its findings, no rule judges it.
            self.stats["dlp.retractions"] += 1
            return
        if not self.policy.dlp_types.intersection(ev.data_types):
            self.stats["dlp.not_regulated_types"] += 1
            return
        view = DlpView(
            ts,
            ev.event_id,
            ev.entity,
            ev.user_id,
            ev.device_id,
            ev.channel,
            ev.saas_app,
            tuple(ev.data_types),
            ev.match_count,
            ev.object.sha256.lower() if ev.object and ev.object.sha256 else None,
            mask_text(ev.snippet) if ev.snippet is not None else None,
            ev.source,
            (ref.workload, ref.object_id, tuple(ref.rule_ids))
            if (ref := ev.match_ref) is not None
            else None,
        )
        release = ts + self.policy.correlation_window
        if self._unjoined and not (view.channel == "saas_upload" and view.saas_app):
            self.stats["decisions.late_unjoined"] += 1
        elif (view.channel == "saas_upload" and view.saas_app) or release < w:
            self._judge_dlp(view, out)
        else:
            key = f"d|{view.source}|{view.event_id}"
            self.state.pending[key] = ("d", view)
            self._push(release, key)

    def _judge_dlp(self, alert: DlpView, out: list[Finding], *, named: bool = False) -> None:
        """`named`: decided at the watermark, so the device is named by the
        identity graph, as posture findings are (`_posture_finding`)."""
        self._use_policy(alert.ts)
        alias = alert.device_id
        if named and alias is not None and (name := self.identity.name_of(alias)) != alias:
            alert = alert._replace(device_id=name)
        else:
            alias = None
        if alert.channel == "saas_upload" and alert.saas_app:
            dest = Destination(alert.saas_app, None)
        else:
            via = self._nearest_access(alert)
            if via is None:
                self.stats["dlp.not_saas_bound"] += 1
                return
            dest = Destination(via.saas_app, via)
        groups = self.policy.dlp
        app = self.policy.app(dest.app_id, self.policy.days.day_of(alert.ts))
        trigger = f"dlp_alert|{alert.source}|{alert.event_id}"
        for rule, hit in (
            (sep003.RULE, sep003.check(alert, dest, groups.unique_identification)),
            (sep004.RULE, sep004.check(alert, dest, groups.personal_credit)),
            (sep005.RULE, sep005.check(alert, dest, app, groups.pseudonymous)),
        ):
            if hit:
                if alias is not None:
                    hit = replace(hit, details={**hit.details, "device_alias": alias})
                out.append(
                    self._finding(
                        rule,
                        hit,
                        trigger,
                        alert.ts,
                        alert.entity,
                        alert.user_id,
                        alert.device_id,
                        dest.app_id,
                        alert.event_id,
                    )
                )

    def _remember_access(self, view: AccessView, w: float) -> None:
        if self._unjoined:
            return
        horizon = w - 2 * self.policy.correlation_window
        kept = [a for a in self.state.accesses.get(view.user_id, ()) if a[0] >= horizon]
        if view.ts >= horizon:
            kept.append(view)
        if kept:
            self.state.accesses[view.user_id] = kept
        else:
            self.state.accesses.pop(view.user_id, None)

    def _nearest_access(self, alert: DlpView) -> AccessView | None:
        window = self.policy.correlation_window
        best: tuple[float, float, str] | None = None
        found: AccessView | None = None
        for raw in self.state.accesses.get(alert.user_id, ()):
            a = AccessView(*raw)
            gap = abs(a.ts - alert.ts)
            if gap > window:
                continue
            if alert.sha256 is not None and a.sha256 is not None and a.sha256 != alert.sha256:
                continue
            rank = (gap, a.ts, a.event_id)  # nearest wins; ties go to the earlier access
            if best is None or rank < best:
                best, found = rank, a
        return found

    # -- control_review: SEP-009, and the anchor of SEP-008 ------------------

    def _on_review(self, ev: ControlReview, ts: float, w: float, out: list[Finding]) -> None:
        if self._unjoined:
            self.stats["decisions.late_unjoined"] += 1
            return
        completed = ev.completed_at.timestamp()
        reported = ev.reported_to_committee_at.timestamp() if ev.reported_to_committee_at else None
        fired, reviews, judged = self.state.entities[ev.entity]
        reviews = [*reviews, (completed, ts, ev.event_id)][-16:]
        self.state.entities[ev.entity] = [fired, reviews, judged]
        self._alarm = self._next_alarm()
        if completed in judged:
            self.stats["reviews.already_judged"] += 1
            return
        key = f"r|{ev.entity}|{completed!r}"
        prior = self.state.pending.get(key)
        records = [*(prior[1][3] if prior else ()), (ts, reported, ev.event_id)]
        item = (ev.entity, completed, ev.reviewer, sorted(records, key=lambda r: (r[0], r[2])))
        self.state.pending[key] = ("r", item)
        self._push(self._release_time("r", item), key)
        if self._release_time("r", item) < w:
            self._release(key, out)

    def _judge_review(self, item: Any, out: list[Finding]) -> None:
        entity, completed, reviewer, records = item
        self._use_policy(completed)
        fired, reviews, judged = self.state.entities[entity]
        self.state.entities[entity] = [fired, reviews, [*judged[-7:], completed]]
        # Only what was recorded by the time the review is judged counts, so
        # the judgement does not depend on the order records arrive in.
        at = self._release_time("r", item)
        counted = [r for r in records if r[0] <= at]
        reports = [r[1] for r in counted if r[1] is not None]
        view = ReviewView(
            entity,
            completed,
            min(reports) if reports else None,
            tuple(r[2] for r in counted),
            counted[0][0],
            reviewer,
        )
        hit = sep009.check(view, self.policy.policy.review.report_within_days, self.policy.days)
        if hit:
            trigger = f"control_review|{entity}|{to_datetime(completed).isoformat()}"
            out.append(
                self._finding(
                    sep009.RULE,
                    hit,
                    trigger,
                    view.recorded_at,
                    entity,
                    None,
                    None,
                    None,
                    *view.event_ids,
                )
            )

    # -- SEP-008: every entity, against the watermark ------------------------

    def _see_entity(self, entity: str) -> None:
        self._entities.add(entity)
        if entity not in self.state.entities:
            self.state.entities[entity] = [None, [], []]
            self._alarm = min(self._alarm, self._breach(entity)[0])

    def _breach(self, entity: str) -> tuple[float, date, date, str | None]:
        """When the entity's next review due date is missed, and its parts."""
        fired, reviews, _ = self.state.entities[entity]
        due, anchor, review_id = sep008.first_breach(
            reviews,
            self.policy.review_baseline(entity),
            self.policy.policy.review.interval_months,
            date.fromordinal(fired) if fired is not None else None,
            self.policy.days,
        )
        return sep008.overdue_from(due, self.policy.days), due, anchor, review_id

    def _next_alarm(self) -> float:
        return min((self._breach(e)[0] for e in self.state.entities), default=float("inf"))

    def _check_overdue(self, w: float, final: bool, out: list[Finding]) -> None:
        for entity in sorted(self.state.entities):
            while True:
                at, due, anchor, review_id = self._breach(entity)
                if not (at < w or (final and at <= w)):
                    break
                _, reviews, judged = self.state.entities[entity]
                self.state.entities[entity] = [due.toordinal(), reviews, judged]
                hit = sep008.check(entity, anchor, due, review_id)
                out.append(
                    self._finding(
                        sep008.RULE,
                        hit,
                        f"entity|{entity}|{due.isoformat()}",
                        at,
                        entity,
                        None,
                        None,
                        None,
                        *hit.evidence,
                    )
                )
        self._alarm = self._next_alarm()

    # -- the watermark moves -------------------------------------------------

    def _advance(self, out: list[Finding], *, final: bool) -> None:
        w = self._max_ts if final else self.watermark
        queue, pending = self._queue, self.state.pending
        while queue.next_time() < w:
            item = pending.pop(queue.pop(), None)
            if item is not None and type(item[1]) is AccessView:
                self._judge_posture(item[1], out)  # the common case, without a detour
            elif item is not None:
                self._decide(item, out)
        if final:
            # No more events can come: joins are decided with what is here;
            # a review report is judged only if its deadline is in the past.
            for at, key in queue.drain():
                item = pending.get(key)
                if item is not None and item[0] == "r" and at > w:
                    queue.push(at, key)
                else:
                    self._release(key, out)
        if w > self._alarm or (final and w >= self._alarm):
            self._check_overdue(w, final, out)
        if w >= self._next_sweep:
            self._next_sweep = (w // SWEEP_EVERY + 1) * SWEEP_EVERY
            self._sweep(w)

    def _release(self, key: str, out: list[Finding]) -> None:
        item = self.state.pending.pop(key, None)
        if item is not None:  # else a redelivered duplicate, already decided
            self._decide(item, out)

    def _decide(self, item: Any, out: list[Finding]) -> None:
        kind, raw = item
        if kind == "a":
            self._judge_posture(raw if type(raw) is AccessView else AccessView(*raw), out)
        elif kind == "d":
            self._judge_dlp(_dlp_view(raw), out, named=True)
        elif kind == "s":
            self._judge_session(raw)
        else:
            self._judge_review(raw, out)

    def _release_time(self, kind: str, raw: Any) -> float:
        if kind in ("a", "s"):
            return float(raw[0])
        if kind == "d":
            return float(raw[0]) + self.policy.correlation_window
        # A review is judged at its report deadline, or when it was first
        # recorded if that is later.
        deadline = sep009.deadline_of(
            float(raw[1]), self.policy.policy.review.report_within_days, self.policy.days
        )
        return max(deadline, min(float(r[0]) for r in raw[3]))

    def _push(self, at: float, key: str) -> None:
        self._queue.push(at, key)

    def _sweep(self, w: float) -> None:
        """Every few hours of event time: forget devices and users no rule can still need."""
        idle = w - self._idle_retention
        postures = self.state.postures
        for device in [d for d, (_, e) in postures.items() if not e or e[-1][0] < idle]:
            del postures[device]
            self.stats["state.devices_evicted"] += 1
        horizon = w - 2 * self.policy.correlation_window
        accesses = self.state.accesses
        for user in [u for u, a in accesses.items() if not a or a[-1][0] < horizon]:
            del accesses[user]
        sessions, alive = self.state.sessions, w - self.policy.session_lifetime
        for key in [k for k, t in sessions.items() if not t or t[-1] < alive]:
            del sessions[key]
        self.identity.expire(w - self.policy.policy.identity.alias_ttl.total_seconds())

    # -- findings ------------------------------------------------------------

    def _finding(
        self,
        rule: Rule,
        hit: Hit,
        trigger: str,
        ts: float,
        entity: str,
        user_id: str | None,
        device_id: str | None,
        saas_app: str | None,
        *trigger_ids: str,
    ) -> Finding:
        self._use_policy(ts)
        waiver = self.policy.waiver(
            rule.id, self.policy.days.day_of(ts), entity, user_id, device_id, saas_app
        )
        self.stats[f"findings.{rule.id}"] += 1
        evidence = list(dict.fromkeys((*trigger_ids, *hit.evidence)))
        return Finding(
            finding_id=finding_id(rule.id, trigger),
            rule_id=rule.id,
            rule_name=rule.title,
            severity=rule.severity,
            status="waived" if waiver else "open",
            timestamp=to_datetime(ts),
            detected_at=self._now(),
            entity=entity,
            user_id=user_id,
            device_id=device_id,
            saas_app=saas_app,
            evidence_event_ids=evidence,
            summary=hit.summary,
            regulation=rule.regulation,
            waiver=WaiverRef(
                id=waiver.name,
                approved_by=waiver.approved_by,
                reason=waiver.reason,
                valid_until=waiver.valid_until.isoformat(),
            )
            if waiver
            else None,
            details=hit.details,
        )


def _access_view(ev: SaasAccess, ts: float) -> AccessView:
    sha = ev.object.sha256.lower() if ev.object and ev.object.sha256 else None
    return AccessView(
        ts,
        ev.event_id,
        ev.entity,
        ev.user_id,
        ev.device_id,
        ev.saas_app,
        ev.action,
        ev.source,
        sha,
    )


# A JSON changelog turns tuples into lists; these give the views back their shape.
def _dlp_view(raw: Any) -> DlpView:
    # Held before match_ref was kept: twelve fields, no match_ref.
    ref = raw[12] if len(raw) > 12 else None
    match_ref = (ref[0], ref[1], tuple(ref[2])) if ref is not None else None
    return DlpView._make((*raw[:7], tuple(raw[7]), *raw[8:12], match_ref))
