"""Notification groups and routes (rules.md, "Suppression of notifications").

Pure: no I/O and no clock of its own. Time is the findings' event time, so a
replay groups exactly as the live stream did.

- Findings group by (rule_id, user_id, device_id, saas_app). A group opens
  with its first finding, which notifies, and closes `group_window` of event
  time later. Findings folded in meanwhile raise a count that the group's next
  notification, or its close, reports.
- A critical finding notifies at once, every one (it still counts in its group).
- A waived finding never notifies; it is counted as suppressed.
- A finding id admitted before never notifies again (the engine emits a
  finding again after a worker crash). Ids are remembered with the group clock
  at their admission and forgotten `seen_horizon` of event time later, and at
  most `seen_limit` of them are kept (the oldest go first): a duplicate comes
  from a reprocessing shortly after the original, not months later.
- A finding later than its open group's window closes that group and opens a
  new one. One earlier than its group's first finding (out of order across
  partitions) folds into the open group: the group has already notified.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from detectors.masking import mask_text
from schemas import SEVERITIES, Finding
from schemas.policy import AlertingPolicy, Route

GroupKey = tuple[str, str | None, str | None, str | None]
NotificationKind = Literal["firing", "resolved"]

# Keys a route may match on, and the finding field each reads.
MATCH_KEYS = {"severity": "severity", "entity": "entity", "rule_id": "rule_id"}
# Finding ids listed in one notification; the count says how many there were.
MAX_LISTED_IDS = 50
DEFAULT_SEEN_HORIZON = timedelta(days=7)
DEFAULT_SEEN_LIMIT = 1_000_000


def group_key(key: GroupKey) -> str:
    """A stable name for a group, used as PagerDuty's dedup_key and an
    Alertmanager label: a hash, so no identifier travels in it."""
    digest = hashlib.sha256(json.dumps(list(key)).encode()).hexdigest()
    return f"sepwatch-{digest[:32]}"


@dataclass(frozen=True)
class Notification:
    """What the channels say: a finding that notifies (`firing`), or a group's
    close (`resolved`) with the count of findings folded in since the group
    last notified."""

    id: str  # stable for the same content: receivers may deduplicate on it
    kind: NotificationKind
    group_key: str
    rule_id: str
    rule_name: str
    severity: str
    entity: str
    user_id: str | None
    device_id: str | None
    saas_app: str | None
    regulation: str
    summary: str  # masked
    finding_ids: tuple[str, ...]  # reported by this notification (at most MAX_LISTED_IDS)
    count: int  # findings in the group so far
    unreported: int  # findings folded in since the group's previous notification
    started_at: datetime  # the group's first finding
    at: datetime  # the finding's time, or the group's end
    ends_at: datetime  # the end of the group's window
    route: str | None = None
    channels: tuple[str, ...] = ()

    @property
    def title(self) -> str:
        verb = "closed" if self.kind == "resolved" else self.severity.upper()
        return mask_text(f"[{verb}] {self.rule_id} {self.rule_name} at {self.entity}")

    def text(self) -> str:
        """Plain text for people (email, chat fallbacks)."""
        lines = [self.summary] if self.kind == "firing" else []
        if self.kind == "resolved":
            lines.append(
                f"Group closed after {self.count} finding(s); "
                f"{self.unreported} not reported before."
            )
        elif self.unreported:
            lines.append(f"{self.unreported} more finding(s) in this group since the last notice.")
        lines += [
            f"rule: {self.rule_id} ({self.rule_name})",
            f"severity: {self.severity}",
            f"entity: {self.entity}",
            f"user: {self.user_id or '-'}, device: {self.device_id or '-'}, "
            f"app: {self.saas_app or '-'}",
            f"regulation: {self.regulation}",
            f"findings: {', '.join(self.finding_ids) or '-'}",
            f"group: {self.group_key}, {self.count} finding(s) since {self.started_at.isoformat()}",
        ]
        return mask_text("\n".join(lines))

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "group_key": self.group_key,
            "rule_id": self.rule_id,
            "rule_name": self.rule_name,
            "severity": self.severity,
            "entity": self.entity,
            "user_id": self.user_id,
            "device_id": self.device_id,
            "saas_app": self.saas_app,
            "regulation": self.regulation,
            "summary": self.summary,
            "finding_ids": list(self.finding_ids),
            "count": self.count,
            "unreported": self.unreported,
            "started_at": self.started_at.isoformat(),
            "at": self.at.isoformat(),
            "ends_at": self.ends_at.isoformat(),
            "route": self.route,
        }


@dataclass
class _Group:
    key: GroupKey
    first: Finding
    started_at: datetime
    ends_at: datetime
    count: int = 1
    notices: int = 1
    folded: list[str] = field(default_factory=list)  # since the last notification
    last: Finding | None = None


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple | set) else [value]


def route_matches(route: Route, finding: Finding) -> bool:
    """Every key of `match` must hold; a key's value may be one value or a list."""
    for key, wanted in route.match.items():
        attr = MATCH_KEYS.get(key)
        if attr is None or getattr(finding, attr) not in _as_list(wanted):
            return False
    return True


def routes_for(routes: Sequence[Route], finding: Finding) -> list[Route]:
    """Routes taken, in order, as Alertmanager does: the first that matches
    wins, unless it says `continue: true`, and then later ones are tried too."""
    taken = []
    for route in routes:
        if route_matches(route, finding):
            taken.append(route)
            if not getattr(route, "continue", False):
                break
    return taken


def route_problems(routes: Sequence[Route], channels: Iterable[str]) -> list[str]:
    """What makes routes unusable with these channels, every problem at once."""
    known = set(channels)
    problems = []
    for n, route in enumerate(routes):
        where = f"alerting.routes[{n}] ({route.name})"
        for key, wanted in route.match.items():
            if key not in MATCH_KEYS:
                problems.append(f"{where}: cannot match on {key!r} (only {', '.join(MATCH_KEYS)})")
            elif key == "severity":
                for value in _as_list(wanted):
                    if value not in SEVERITIES:
                        problems.append(f"{where}: severity {value!r} is not one of {SEVERITIES}")
        if not route.channels:
            problems.append(f"{where}: names no channel")
        for name in route.channels:
            if name not in known:
                problems.append(
                    f"{where}: channel {name!r} is not configured "
                    f"(configured: {', '.join(sorted(known)) or 'none'})"
                )
    return problems


class NotificationGroups:
    """The open groups and the finding ids already admitted."""

    def __init__(
        self,
        alerting: AlertingPolicy,
        *,
        seen_horizon: timedelta = DEFAULT_SEEN_HORIZON,
        seen_limit: int = DEFAULT_SEEN_LIMIT,
    ) -> None:
        self.alerting = alerting
        self.seen_horizon = seen_horizon
        self.seen_limit = seen_limit
        self.groups: dict[GroupKey, _Group] = {}
        # finding id -> group clock at its admission; insertion order is clock order.
        self.seen: OrderedDict[str, datetime] = OrderedDict()
        self.clock: datetime | None = None
        self.suppressed: Counter[str] = Counter()

    def set_policy(self, alerting: AlertingPolicy) -> None:
        """A replaced policy: new routes and window for what comes next; open
        groups keep the window they opened with."""
        self.alerting = alerting

    def remember(self, finding_id: str, at: datetime) -> None:
        """An id admitted before (by this router or an earlier run of it)."""
        self.seen[finding_id] = at
        self.seen.move_to_end(finding_id)
        self._forget()

    def admit(self, finding: Finding) -> list[Notification]:
        if finding.finding_id in self.seen:
            self.suppressed["duplicate"] += 1
            return []
        self._tick(finding.timestamp)
        assert self.clock is not None
        self.seen[finding.finding_id] = self.clock
        self._forget()
        if finding.status != "open":
            # Waived (or any status an analyst gave it): recorded, never notified.
            self.suppressed["waived" if finding.status == "waived" else "not_open"] += 1
            return []
        out: list[Notification] = []
        key: GroupKey = (finding.rule_id, finding.user_id, finding.device_id, finding.saas_app)
        group = self.groups.get(key)
        if group is not None and finding.timestamp >= group.ends_at:
            out.append(self._close(self.groups.pop(key)))
            group = None
        if group is None:
            window = self.alerting.group_window
            self.groups[key] = _Group(
                key, finding, finding.timestamp, finding.timestamp + window, last=finding
            )
            out.append(self._firing(self.groups[key], finding))
            return out
        group.count += 1
        group.last = finding
        if finding.severity == "critical":
            group.notices += 1
            out.append(self._firing(group, finding))
        else:
            group.folded.append(finding.finding_id)
            self.suppressed["grouped"] += 1
        return out

    def close_due(self, now: datetime) -> list[Notification]:
        """Close every group whose window ended at or before `now` (event time)."""
        self._tick(now)
        due = [k for k, g in self.groups.items() if g.ends_at <= now]
        due.sort(key=lambda k: self.groups[k].ends_at)
        return [self._close(self.groups.pop(k)) for k in due]

    def _tick(self, at: datetime) -> None:
        if self.clock is None or at > self.clock:
            self.clock = at

    def _forget(self) -> None:
        if self.clock is not None:
            horizon = self.clock - self.seen_horizon
            while self.seen and next(iter(self.seen.values())) < horizon:
                self.seen.popitem(last=False)
        while len(self.seen) > self.seen_limit:
            self.seen.popitem(last=False)

    def _firing(self, group: _Group, finding: Finding) -> Notification:
        reported = [*group.folded, finding.finding_id][-MAX_LISTED_IDS:]
        unreported = len(group.folded)
        group.folded = []
        return self._notification(
            group,
            finding,
            kind="firing",
            finding_ids=tuple(reported),
            unreported=unreported,
            at=finding.timestamp,
            salt=finding.finding_id,
        )

    def _close(self, group: _Group) -> Notification:
        unreported = len(group.folded)
        return self._notification(
            group,
            group.last or group.first,
            kind="resolved",
            finding_ids=tuple(group.folded[-MAX_LISTED_IDS:]),
            unreported=unreported,
            at=group.ends_at,
            salt=f"close:{group.started_at.isoformat()}",
        )

    def _notification(
        self,
        group: _Group,
        finding: Finding,
        *,
        kind: NotificationKind,
        finding_ids: tuple[str, ...],
        unreported: int,
        at: datetime,
        salt: str,
    ) -> Notification:
        gkey = group_key(group.key)
        nid = hashlib.sha256(f"{gkey}|{kind}|{salt}".encode()).hexdigest()[:32]
        routes = routes_for(self.alerting.routes, finding)
        channels: list[str] = []
        for route in routes:
            channels += [c for c in route.channels if c not in channels]
        return Notification(
            id=nid,
            kind=kind,
            group_key=gkey,
            rule_id=finding.rule_id,
            rule_name=finding.rule_name,
            severity=finding.severity,
            entity=mask_text(finding.entity),
            user_id=mask_text(finding.user_id) if finding.user_id else None,
            device_id=mask_text(finding.device_id) if finding.device_id else None,
            saas_app=finding.saas_app,
            regulation=finding.regulation,
            summary=mask_text(finding.summary),
            finding_ids=finding_ids,
            count=group.count,
            unreported=unreported,
            started_at=group.started_at,
            at=at,
            ends_at=group.ends_at,
            route=routes[0].name if routes else None,
            channels=tuple(channels),
        )
