"""A deterministic generator of realistic canonical events: a made-up bank's day.

`simulate()` yields canonical event dicts (JSON-ready, each with its `stream`)
in ARRIVAL order: event time plus a small delivery delay that always stays
under the policy's `allowed_lateness`, so no decision depends on arrival order.
Same arguments, same output, byte for byte: one `random.Random(seed)`, no wall
clock, no iteration over hashed sets. It is lazy: a minute-by-minute loop
pushes each minute's events onto a heap ordered by arrival time and pops what
can no longer be overtaken, so memory is O(users + devices), not O(events).

The bank
    Users belong to entities (HQ 70 %, BR-SEOUL-GN 12 %, BR-BUSAN-HU 10 %,
    SUB-VN 8 %; SUB-VN works on UTC+7), with ids `u-hq-00042`. Each has a
    laptop `lt-hq-00042`; with fewer devices than users, users share; with
    more, some have a second desktop `dt-hq-00007`. Branches have lobby
    kiosks `kiosk-bu-001` used read-only by branch staff. Traffic follows
    local working hours (09-18 peak, lunch dip, quiet night, weekends at a
    tenth); about 85 % of it is from the internal network, to the registry
    apps that are evaluated, valid and permitted on the event's policy day,
    with actions weighted by the app's category. Users and devices named in
    the policy's waivers (e.g. `u-hq-ai-pilot`) are part of the population.
    Every device reports its posture (intune or osquery) a few minutes
    before `start`, then every 3-8 h (always well inside `posture.max_age`).
    DLP alerts (purview, netskope) come now and then, mostly `card_number`
    noise or regulated data by email/USB/print (not SaaS-bound: every
    upload/edit/share and every alert carries its file's sha256, so nothing
    correlates by accident), and pseudonymized data sent to the
    pseudonymous-designated app (kdata-lab) by a few HQ analysts. Every
    entity's six-monthly control review is simulated from the review baseline
    on: completed five to ten weeks before each due date, reported to the
    committee in time, recorded in the GRC tool (`grc`) a day or two later.
    The whole history is emitted (about two records a year per entity), so
    the first lines carry event times months before `start`; the engine
    tracks entities named in `review.entity_baselines` from the first event,
    and every due date the watermark passes must be met by a review already
    on record. Before a window where no registry app is evaluated, valid and
    permitted (the exception not yet in force), all SaaS use is external.

Violations (`violation_rate` = the share of *opportunities* turned bad)
    - each internal access: SEP-001 (an unregistered app such as notion, a
      registry app not evaluated such as dropbox, or one outside its
      evaluation such as box after 2026-09-30), SEP-002 (evaluated but its
      category not permitted: chatgpt-enterprise, salesforce) or SEP-007
      (no `device_id`), in proportions 4:3:3;
    - each internal upload/share/edit: a DLP alert with unique-identification,
      personal-credit or pseudonymized data bound to the app, by channel
      `saas_upload` or by a correlated access with the same sha256
      (SEP-003/004/005);
    - each posture report: fails a control (SEP-006 on the accesses after it);
    - each device: with half the rate it never reports a posture, with the
      other half its last report was 12-23 h before `start` and it stops
      (SEP-007 once stale);
    - the control reviews: with any rate > 0, at least one entity whose due
      date falls before the window's end skips its review (SEP-008), and one
      entity whose report deadline falls in the window reports late or never
      (SEP-009);
    - each internal sign-in (where the policy has `authentication`): a single
      factor (SEP-010); 3 % of sign-ins, lawful or not, do not say (`auth.mfa`
      null: counted, never a finding);
    - each share, from inside or outside (where the policy has `sharing`):
      a public link or an outside domain that is no partner's (SEP-011);
      without a violation a share stays inside, or, under `partners_only`,
      one in ten goes to a partner;
    - waivers: the waived user uses the waived app, the waived kiosk never
      reports a posture (findings with `status: waived` while the waiver is
      in force).

At violation_rate 0 the engine finds nothing (tests/test_simulate.py runs
it), except where the arguments or the policy leave no lawful choice:
    - fewer devices than entities with users: a user with no device makes
      device-less accesses (SEP-007);
    - `posture.max_age` under about a minute: reports come every 30 s at the
      most, so a posture can go stale (SEP-007).
Waived findings count as findings: the waived behaviours above happen only
when violation_rate > 0.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, TypeVar

from detectors.calendar import Days
from schemas import Policy, RegistryApp

T = TypeVar("T")

SECOND = 1000  # the simulator counts integer milliseconds since the epoch
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR
_EPOCH = date(1970, 1, 1).toordinal()

# Mean SaaS events a user makes on a working day.
ACCESSES_PER_USER_DAY = 24.0
# Accesses per local hour of a working day (relative): busy 09-18, lunch dip.
HOURLY = (
    0.3, 0.2, 0.15, 0.15, 0.15, 0.2, 0.5, 1.5, 4.0, 9.0, 10.0, 9.5,
    6.0, 9.0, 10.0, 9.5, 9.0, 7.0, 4.0, 2.5, 1.8, 1.2, 0.8, 0.5,
)  # fmt: skip
WEEKEND_FACTOR = 0.1
# Share of traffic from the internal network, in and out of working hours.
INTERNAL_WORKING, INTERNAL_OFF_HOURS = 0.9, 0.45
# Chance that an access raises an unrelated DLP alert (noise).
DLP_NOISE = 0.004
# Delivery delay: most events on time, some a few seconds late, a few up to 30 s.
MAX_DELAY = 30 * SECOND


@dataclass(frozen=True)
class EntityProfile:
    entity: str
    code: str  # in ids: u-hq-00042, lt-gn-00007, kiosk-bu-001
    share: float  # of the users
    utc_offset_h: int  # local working hours
    ip_octet: int  # internal addresses 10.<octet>.x.y


ENTITIES = (
    EntityProfile("HQ", "hq", 0.70, 9, 10),
    EntityProfile("BR-SEOUL-GN", "gn", 0.12, 9, 21),
    EntityProfile("BR-BUSAN-HU", "bu", 0.10, 9, 22),
    EntityProfile("SUB-VN", "vn", 0.08, 7, 70),
)

# Apps people reach for that are not in a registry (SEP-001 from inside), by category.
UNREGISTERED = {
    "notion": "collaboration",
    "slack": "messaging",
    "google-drive": "document",
    "chatgpt": "generative_ai",
    "wetransfer": "file_transfer",
    "canva": "design",
}
# How much of the traffic each known app gets; an app not named gets 3.
APP_WEIGHTS = {
    "m365-teams": 30,
    "m365-sharepoint": 20,
    "m365-onedrive": 14,
    "dooray": 8,
    "zoom": 8,
    "jira-cloud": 8,
    "google-calendar": 6,
    "box": 4,
    "dropbox": 4,
    "salesforce": 4,
    "chatgpt-enterprise": 4,
}
ACTIONS_BY_CATEGORY: dict[str, dict[str, int]] = {
    "document": {"view": 35, "edit": 18, "download": 14, "upload": 10, "share": 8, "login": 8,
                 "delete": 3, "other": 4},
    "messaging": {"view": 40, "other": 20, "edit": 12, "upload": 8, "share": 6, "login": 10,
                  "download": 4},
    "meeting": {"login": 30, "other": 35, "view": 25, "share": 5, "download": 5},
    "scheduling": {"view": 50, "edit": 25, "login": 15, "share": 5, "other": 5},
    "project_management": {"view": 40, "edit": 25, "login": 10, "upload": 8, "share": 4,
                           "download": 6, "delete": 2, "other": 5},
    "collaboration": {"view": 35, "edit": 20, "upload": 10, "share": 8, "login": 12,
                      "download": 8, "delete": 2, "other": 5},
}  # fmt: skip
DEFAULT_ACTIONS = {"view": 30, "edit": 20, "upload": 10, "login": 15, "other": 15, "download": 5,
                   "share": 5}  # fmt: skip
# Share of sign-ins whose source does not say whether a second factor was used.
UNSAID_AUTH = 0.03
# Where a file shared outside the institution goes (SEP-011): no partner's.
OUTSIDE_DOMAINS = ("gmail.com", "naver.com", "outlook.com", "consultant.example")
# Actions that move a file into the app: DLP correlates on these (rules.md).
FILE_OUT = frozenset({"upload", "share", "edit"})

FILE_STEMS = (
    "주간업무보고", "회의록", "영업실적_보고서", "2027년_예산계획", "리스크관리위원회_자료",
    "내부통제_점검표", "고객상담_매뉴얼", "신상품_기획안", "IT운영_현황", "정보보호_교육자료",
    "지점_운영계획", "인사평가_양식", "weekly-report", "Q4 budget review", "project plan",
    "meeting notes", "IT roadmap 2027", "vendor assessment", "release checklist", "board deck",
)  # fmt: skip
FILE_EXTS = ("docx", "xlsx", "pptx", "pdf", "hwp", "docx", "xlsx", "png", "csv")
DLP_STEMS = {
    "kr_rrn": ("고객명부", "본인확인_스캔", "customer_list"),
    "kr_passport": ("여권사본", "passport_scans"),
    "kr_driver_license": ("운전면허_확인", "id_check"),
    "kr_alien_registration": ("외국인고객_명단", "arc_copies"),
    "personal_credit_info": ("대출심사자료", "신용평가_결과", "loan_review", "연체고객_현황"),
    "pseudonymized": ("가명처리_데이터셋", "pseudonymized_panel"),
    "card_number": ("카드발급_내역", "card_dispute"),
}
# Data types a SaaS-bound violation carries, and how often.
VIOLATION_TYPES = {
    "kr_rrn": 30,
    "kr_passport": 8,
    "kr_driver_license": 6,
    "kr_alien_registration": 6,
    "personal_credit_info": 30,
    "pseudonymized": 20,
}
REVIEWERS = ("CISO Kim", "정보보호부 이과장", "Internal Audit (Park)", "IT Risk (Nguyen)")
CONTROLS = (
    "SaaS registry and FSI evaluations",
    "DLP policies for SaaS",
    "endpoint posture requirements",
    "access logging and monitoring",
    "scope of the network-separation exception",
)


def internal_networks(policy: Policy) -> list[tuple[str, str]]:
    """The simulated bank's internal networks (CIDR, entity): each entity's
    devices have addresses 10.<octet>.x.y."""
    return [(f"10.{p.ip_octet}.0.0/16", p.entity) for p in _Simulation._entities(policy)]


def simulate(
    policy: Policy,
    *,
    users: int,
    devices: int,
    hours: float,
    violation_rate: float,
    seed: int,
    start: datetime,
) -> Iterator[dict[str, Any]]:
    """Canonical events of `hours` of the bank's life from `start`, in arrival
    order. See the module docstring for what is simulated."""
    if start.tzinfo is None or start.utcoffset() is None:
        raise ValueError("start needs an offset, e.g. 2026-11-23T00:00:00+09:00")
    if users < 1 or devices < 1:
        raise ValueError("users and devices must be at least 1")
    if not hours > 0:
        raise ValueError("hours must be positive")
    if not 0.0 <= violation_rate <= 1.0:
        raise ValueError("violation_rate must be between 0 and 1")
    return _Simulation(policy, users, devices, hours, violation_rate, seed, start).events()


# -- small helpers --------------------------------------------------------------


def _table(weights: dict[T, int]) -> list[T]:
    """A list where each item appears `weight` times: O(1) weighted picks."""
    return [k for k, w in weights.items() for _ in range(w)]


def _apportion(total: int, shares: Sequence[float]) -> list[int]:
    """Split `total` by `shares`, largest remainder first, summing exactly."""
    weight = sum(shares)
    if weight <= 0:
        return [0] * len(shares)
    raw = [total * s / weight for s in shares]
    out = [int(x) for x in raw]
    by_remainder = sorted(range(len(raw)), key=lambda i: (out[i] - raw[i], i))
    for i in by_remainder[: total - sum(out)]:
        out[i] += 1
    return out


def _add_months(day: date, months: int) -> date:
    """Calendar months, clamped to the month's end (Aug 31 + 6 = Feb 28)."""
    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    last = (date(year + month // 12, month % 12 + 1, 1) - timedelta(days=1)).day
    return date(year, month, min(day.day, last))


def _utc_day(ms: int) -> int:
    return ms // DAY + _EPOCH


def _day_start(ordinal: int) -> int:
    return (ordinal - _EPOCH) * DAY


def _poisson(rnd: Callable[[], float], gauss: Callable[[float, float], float], lam: float) -> int:
    if lam <= 0:
        return 0
    if lam > 30:
        return max(0, int(gauss(lam, math.sqrt(lam)) + 0.5))
    limit, k, p = math.exp(-lam), 0, rnd()
    while p > limit:
        k += 1
        p *= rnd()
    return k


class _Stamps:
    """RFC 3339 strings, fast: the text up to the minute is cached."""

    def __init__(self) -> None:
        self._minutes: dict[int, tuple[str, str]] = {}

    def _head(self, minute: int, offset_h: int) -> tuple[str, str]:
        key = minute * 64 + offset_h + 32
        found = self._minutes.get(key)
        if found is None:
            if len(self._minutes) > 100_000:  # a long run: keep memory flat
                self._minutes.clear()
            day, rest = divmod(minute + offset_h * 60, 1440)
            h, m = divmod(rest, 60)
            stamp = f"{date.fromordinal(day + _EPOCH).isoformat()}T{h:02d}:{m:02d}:"
            zone = "Z" if offset_h == 0 else f"{offset_h:+03d}:00"
            found = self._minutes[key] = (stamp, zone)
        return found

    def __call__(self, ms: int, offset_h: int, millis: bool) -> str:
        secs, frac = divmod(ms, 1000)
        minute, s = divmod(secs, 60)
        head, zone = self._head(minute, offset_h)
        if millis:
            return f"{head}{s:02d}.{frac:03d}{zone}"
        return f"{head}{s:02d}{zone}"

    def compact_day(self, ms: int, offset_h: int) -> str:
        """`20261123`, for file names."""
        head = self._head(ms // MINUTE, offset_h)[0]
        return head[:4] + head[5:7] + head[8:10]


# -- the registry as it stands on a day of the policy's zone -------------------------


@dataclass
class _AppDay:
    """What an internal access may use on one day, as weighted pick tables."""

    good: list[str]  # evaluated, valid, category permitted: passes SEP-001/002
    unevaluated: list[str]  # SEP-001
    not_permitted: list[str]  # SEP-002
    kiosk_app: str | None  # a document app for read-only kiosks
    designated: list[str]  # good and pseudonymous_designated
    category: dict[str, str] = field(default_factory=dict)


class _Registry:
    """The policy's registry and permitted categories, read as rules.md says:
    the latest entry with `effective_from` on or before the day, dates whole
    days of the policy's zone, both ends inclusive. Written apart from the engine on purpose,
    so a rate-0 run checks the two against each other."""

    def __init__(self, policy: Policy) -> None:
        self._entries: dict[str, list[RegistryApp]] = {}
        for app in policy.registry:
            self._entries.setdefault(app.app_id, []).append(app)
        for entries in self._entries.values():
            entries.sort(key=lambda a: a.effective_from or date.min)
        self._cats = sorted(policy.permitted_categories, key=lambda c: c.effective_from)
        self._days: dict[int, _AppDay] = {}

    def _in_force(self, app_id: str, day: date) -> RegistryApp | None:
        found = None
        for entry in self._entries[app_id]:
            if (entry.effective_from or date.min) <= day:
                found = entry
        return found

    def day(self, ordinal: int) -> _AppDay:
        cached = self._days.get(ordinal)
        if cached is not None:
            return cached
        day = date.fromordinal(ordinal)
        permitted: set[str] = set()
        for entry in self._cats:
            if entry.effective_from <= day:
                permitted = set(entry.categories)
        good: dict[str, int] = {}
        bad: dict[str, int] = {}
        not_permitted: dict[str, int] = {}
        designated: list[str] = []
        category: dict[str, str] = {}
        for app_id in self._entries:
            app = self._in_force(app_id, day)
            weight = APP_WEIGHTS.get(app_id, 3)
            if app is None:
                bad[app_id] = weight
                category[app_id] = self._entries[app_id][0].category
                continue
            category[app_id] = app.category
            lo, hi = app.evaluation_valid_from, app.evaluation_valid_until
            valid = app.evaluated and (lo is None or lo <= day) and (hi is None or day <= hi)
            if not valid:
                bad[app_id] = weight
            elif app.category not in permitted:
                not_permitted[app_id] = weight
            elif app.pseudonymous_designated:
                # Only analysts use it; it is not part of everyone's traffic.
                designated.append(app_id)
            else:
                good[app_id] = weight
        for app_id, cat in UNREGISTERED.items():
            if app_id not in self._entries:
                bad[app_id] = 2
                category[app_id] = cat
        docs = [a for a in good if category[a] == "document"]
        result = _AppDay(
            good=_table(good),
            unevaluated=_table(bad),
            not_permitted=_table(not_permitted),
            kiosk_app=docs[0] if docs else (next(iter(good)) if good else None),
            designated=designated,
            category=category,
        )
        self._days[ordinal] = result
        return result


# -- identifiers for DLP snippets (made up; shaped like the real ones) --------------


def _rrn(rnd: Callable[[], float], foreigner: bool = False) -> str:
    """YYMMDD-SNNNNNN with the pre-2020 check digit."""
    century_2000 = rnd() < 0.2
    yy = int(rnd() * 20) if century_2000 else 50 + int(rnd() * 50)
    sex = int(rnd() * 2)
    s = (7 if century_2000 else 5) + sex if foreigner else (3 if century_2000 else 1) + sex
    digits = [yy // 10, yy % 10]
    mm, dd = 1 + int(rnd() * 12), 1 + int(rnd() * 28)
    digits += [mm // 10, mm % 10, dd // 10, dd % 10, s]
    digits += [int(rnd() * 10) for _ in range(5)]
    total = sum(d * w for d, w in zip(digits, (2, 3, 4, 5, 6, 7, 8, 9, 2, 3, 4, 5), strict=True))
    digits.append((11 - total % 11) % 10)
    text = "".join(map(str, digits))
    return f"{text[:6]}-{text[6:]}"


def _passport(rnd: Callable[[], float]) -> str:
    letter = "MSRGD"[int(rnd() * 5)]
    if rnd() < 0.5:
        return f"{letter}{int(rnd() * 1e8):08d}"
    return f"{letter}{int(rnd() * 1e3):03d}{'ABCDEFGH'[int(rnd() * 8)]}{int(rnd() * 1e4):04d}"


def _driver_license(rnd: Callable[[], float]) -> str:
    region, yy = 11 + int(rnd() * 18), int(rnd() * 100)
    return f"{region}-{yy:02d}-{int(rnd() * 1e6):06d}-{int(rnd() * 100):02d}"


def _card(rnd: Callable[[], float]) -> str:
    """16 digits with a Luhn check, on a 94 prefix no card scheme issues."""
    digits = [9, 4] + [int(rnd() * 10) for _ in range(13)]
    total = 0
    for i, d in enumerate(reversed(digits)):
        d = d * 2 if i % 2 == 0 else d
        total += d - 9 if d > 9 else d
    digits.append((10 - total % 10) % 10)
    text = "".join(map(str, digits))
    return "-".join(text[i : i + 4] for i in range(0, 16, 4))


def _snippet(rnd: Callable[[], float], data_type: str) -> str:
    if data_type == "kr_rrn":
        return f"주민등록번호 {_rrn(rnd)} 본인확인 완료"
    if data_type == "kr_alien_registration":
        return f"외국인등록번호 {_rrn(rnd, foreigner=True)}"
    if data_type == "kr_passport":
        return f"passport no. {_passport(rnd)}"
    if data_type == "kr_driver_license":
        return f"운전면허번호 {_driver_license(rnd)}"
    if data_type == "personal_credit_info":
        account = f"110-{int(rnd() * 1e3):03d}-{int(rnd() * 1e6):06d}"
        loan = int(rnd() * 900 + 10) * 100_000
        return f"계좌 {account} 대출잔액 {loan:,}원 신용점수 {int(rnd() * 400) + 500}"
    if data_type == "pseudonymized":
        return f"pseudo_id=PSN-{int(rnd() * 16**12):012x} 연령대=40대 지역=부산"
    return f"카드번호 {_card(rnd)}"


# -- the simulation -----------------------------------------------------------------

Event = dict[str, Any]
Timed = tuple[int, Event]  # (event time in ms, the event)

# Device states: as expected, never enrolled, agent died before `start`,
# waived and always failing.
_NORMAL, _UNENROLLED, _STALE, _FAILING = 0, 1, 2, 3
# How a failing posture fails, and how often.
POSTURE_FAILURES = _table(
    {"edr_running": 3, "disk_encrypted": 2, "os_patch_age_days": 4, "screen_lock": 2, "managed": 1}
)
# Access violations: SEP-001, SEP-002 and SEP-007 (no device) as 4:3:3.
ACCESS_VIOLATIONS = _table({"unevaluated": 4, "not_permitted": 3, "no_device": 3})


@dataclass
class _Review:
    entity: int
    due: date  # the due date this review meets
    completed: int  # ms
    reported: int | None  # ms
    records: list[int]  # when the GRC tool recorded it, ms


class _Simulation:
    def __init__(
        self,
        policy: Policy,
        users: int,
        devices: int,
        hours: float,
        rate: float,
        seed: int,
        start: datetime,
    ) -> None:
        self.rate = rate
        self.seed = seed
        self.rng = random.Random(seed)
        self.rnd = self.rng.random
        self.start = round(start.timestamp() * 1000)
        self.end = self.start + round(hours * HOUR)
        self.registry = _Registry(policy)
        self._days = Days(policy.timezone)
        self.stamp = _Stamps()
        lateness = int(policy.allowed_lateness.total_seconds() * 1000)
        # Strictly under the allowed lateness, so no decision is made without
        # an event that was still on its way.
        self.max_delay = max(0, min(MAX_DELAY, lateness // 2))
        self.max_age = int(policy.posture.max_age.total_seconds() * 1000)
        self.require = policy.posture.require
        self.heap: list[tuple[int, int, Event]] = []
        self.seq = itertools.count()
        self.ids = itertools.count(1)
        self.action_tables = {c: _table(w) for c, w in ACTIONS_BY_CATEGORY.items()}
        self.default_actions = _table(DEFAULT_ACTIONS)
        self.violation_types = _table(VIOLATION_TYPES)
        # Sign-ins and shares draw from a stream of their own, so adding them
        # left every other event of a seed as it was.
        self.auth_rnd = random.Random(f"{seed}/auth-and-sharing").random
        self.authentication = policy.authentication
        self.sharing = policy.sharing

        self.profiles = self._entities(policy)
        self._people(users)
        self._fleet(devices)
        self._waived_behaviour(policy)
        self._reviews(policy)

    def _day(self, ms: int) -> int:
        """The policy's day (a date ordinal) of a time in milliseconds."""
        return self._days.day_of(ms / 1000)

    def _day_start(self, ordinal: int) -> int:
        """Milliseconds at the start of the policy's day."""
        return round(self._days.day_start(ordinal) * 1000)

    # -- population ----------------------------------------------------------------

    @staticmethod
    def _entities(policy: Policy) -> list[EntityProfile]:
        """The bank's entities, plus any the policy names that it does not know
        (they need reviews too, or SEP-008 fires)."""
        profiles = list(ENTITIES)
        known = {p.entity for p in profiles}
        named = [*policy.review.entity_baselines, *(w.entity for w in policy.waivers if w.entity)]
        for entity in named:
            if entity not in known:
                known.add(entity)
                code = entity.rsplit("-", 1)[-1].lower()
                profiles.append(EntityProfile(entity, code, 0.02, 9, 30 + len(profiles)))
        return profiles

    def _entity_of(self, ident: str, entity: str | None) -> int:
        """The waiver's entity, else the one whose code the id carries, else HQ."""
        names = [p.entity for p in self.profiles]
        if entity in names:
            return names.index(entity)
        parts = ident.split("-")
        codes = [p.code for p in self.profiles]
        return codes.index(parts[1]) if len(parts) > 1 and parts[1] in codes else 0

    def _people(self, users: int) -> None:
        self.user_ids: list[str] = []
        self.user_entity: list[int] = []
        self.user_devices: list[list[int]] = []
        self.entity_users: list[list[int]] = [[] for _ in self.profiles]
        counts = _apportion(users, [p.share for p in self.profiles])
        for e, (prof, n) in enumerate(zip(self.profiles, counts, strict=True)):
            for k in range(n):
                self._add_user(f"u-{prof.code}-{k + 1:05d}", e)
        # A few HQ data analysts send pseudonymized data to the designated app.
        self.analysts = {j for j in self.entity_users[0] if self.rnd() < 0.015}
        self.pilots: dict[int, str] = {}

    def _add_user(self, user_id: str, e: int) -> int:
        j = len(self.user_ids)
        self.user_ids.append(user_id)
        self.user_entity.append(e)
        self.user_devices.append([])
        self.entity_users[e].append(j)
        return j

    def _fleet(self, devices: int) -> None:
        self.dev_ids: list[str] = []
        self.dev_entity: list[int] = []
        self.dev_user: list[str | None] = []
        self.dev_source: list[str] = []
        self.dev_ip: list[str] = []
        self.entity_kiosks: list[list[int]] = [[] for _ in self.profiles]
        branches = [e for e, p in enumerate(self.profiles) if p.entity.startswith("BR-")]
        kiosks = min(12, devices // 200) if branches else 0
        for k in range(kiosks):
            self._add_kiosk(branches[k % len(branches)])
        counts = _apportion(devices - kiosks, [len(us) for us in self.entity_users])
        # Every entity with users gets a device, where there are enough to go round.
        for e, members in enumerate(self.entity_users):
            if members and counts[e] == 0:
                richest = max(range(len(counts)), key=lambda i: (counts[i], -i))
                if counts[richest] > 1:
                    counts[richest] -= 1
                    counts[e] = 1
        for e, n in enumerate(counts):
            members, code = self.entity_users[e], self.profiles[e].code
            for k in range(n):
                if k < len(members):
                    self._add_device(f"lt-{code}-{k + 1:05d}", e, members[k])
                else:  # more devices than people: a desk PC beside the laptop
                    extra = k - len(members)
                    self._add_device(f"dt-{code}-{extra + 1:05d}", e, members[extra % len(members)])
            for k in range(n, len(members) if n else 0):  # shift workers share laptops
                self.user_devices[members[k]].append(self.user_devices[members[k % n]][0])

    def _add_device(self, device_id: str, e: int, owner: int | None, source: str = "") -> int:
        d = len(self.dev_ids)
        self.dev_ids.append(device_id)
        self.dev_entity.append(e)
        self.dev_user.append(self.user_ids[owner] if owner is not None else None)
        self.dev_source.append(source or ("intune" if self.rnd() < 0.75 else "osquery"))
        n = d + 1
        self.dev_ip.append(f"10.{self.profiles[e].ip_octet}.{(n >> 8) & 255}.{n & 255}")
        if owner is not None:
            self.user_devices[owner].append(d)
        return d

    def _add_kiosk(self, e: int, device_id: str | None = None) -> int:
        number = len(self.entity_kiosks[e]) + 1
        name = device_id or f"kiosk-{self.profiles[e].code}-{number:03d}"
        d = self._add_device(name, e, None, source="osquery")
        self.entity_kiosks[e].append(d)
        return d

    def _waived_behaviour(self, policy: Policy) -> None:
        """Waivers name people and devices: they exist, and when violations are
        simulated they do what was waived. Then some devices go dark."""
        for w in policy.waivers:
            if w.user_id and w.user_id not in self.user_ids:
                e = self._entity_of(w.user_id, w.entity)
                code = self.profiles[e].code
                j = self._add_user(w.user_id, e)
                self._add_device(f"lt-{code}-{w.user_id.removeprefix(f'u-{code}-')}", e, j)
            if w.device_id and w.device_id not in self.dev_ids:
                self._add_kiosk(self._entity_of(w.device_id, w.entity), w.device_id)
        r = self.rate
        self.dev_state = [_NORMAL] * len(self.dev_ids)
        for d in range(len(self.dev_ids)):
            u = self.rnd()
            if u < r / 2:
                self.dev_state[d] = _UNENROLLED
            elif u < r:
                self.dev_state[d] = _STALE
        if r <= 0:
            return
        for w in policy.waivers:
            if w.user_id and w.saas_app and w.rule_id in ("SEP-001", "SEP-002"):
                self.pilots[self.user_ids.index(w.user_id)] = w.saas_app
            if w.device_id and w.rule_id in ("SEP-006", "SEP-007"):
                d = self.dev_ids.index(w.device_id)
                self.dev_state[d] = _FAILING if w.rule_id == "SEP-006" else _UNENROLLED

    # -- control reviews -------------------------------------------------------------

    def _reviews(self, policy: Policy) -> None:
        """Each entity's review history from its baseline, on time; then, if
        violations are wanted, some entity skips a review and some reports late."""
        rp = policy.review
        within = rp.report_within_days * DAY
        chains: list[list[_Review]] = []
        for e, prof in enumerate(self.profiles):
            anchor = rp.entity_baselines.get(prof.entity, rp.baseline)
            chain: list[_Review] = []
            while True:
                due = _add_months(anchor, rp.interval_months)
                lead = int(min(self.rng.uniform(35, 70), 0.6 * (due - anchor).days) * DAY)
                completed = self._day_start(due.toordinal()) - lead + int(self.rnd() * 8 * HOUR)
                if completed >= self.end:
                    break
                # Reported, then recorded, well before the due day ends: SEP-008
                # counts a review from when it was recorded.
                slack = lead - DAY
                reported = completed + int(self.rng.uniform(0.1, 0.6) * min(within, slack))
                recorded = reported + int(min(self.rng.uniform(1, 36) * HOUR, 0.3 * slack))
                chain.append(_Review(e, due, completed, reported, [recorded]))
                anchor = date.fromordinal(self._day(completed))
            chains.append(chain)

        # Decisions need the watermark past them, so leave the run's last hours.
        margin = self.end - 2 * HOUR
        if self.rate > 0:
            # SEP-008: the last review whose due date has passed never happened.
            missed = {}
            for e, chain in enumerate(chains):
                passed = [
                    k
                    for k, r in enumerate(chain)
                    if self._day_start(r.due.toordinal() + 1) < margin
                ]
                if passed:
                    missed[e] = passed[-1]
            skip = sorted(missed)
            self.rng.shuffle(skip)
            skip = skip[: max(1, round(self.rate * len(skip)))]
            for e in skip:
                del chains[e][missed[e] :]
            # SEP-009: the latest review whose report deadline has passed.
            judged = {}
            for e, chain in enumerate(chains):
                done = [r for r in chain if r.completed + within < margin]
                if done:
                    judged[e] = done[-1]
            pool = [e for e in sorted(judged) if e not in skip] or sorted(judged)
            self.rng.shuffle(pool)
            for e in pool[: max(1, round(self.rate * len(pool)))]:
                self._report_late(judged[e], within, margin)

        # The whole history, not just the latest review: an entity the policy
        # names is tracked from the first event on, and every due date it has
        # passed by then must already be met by a review on record.
        for chain in chains:
            for review in chain:
                for n, at in enumerate(review.records):
                    self._push(at, self._review_event(review, at, n), delay=False)

    def _report_late(self, review: _Review, within: int, margin: int) -> None:
        """Reported after the deadline if that still fits before the due date
        (and the run's end), else never reported."""
        due_end = self._day_start(review.due.toordinal() + 1)
        reported = review.completed + within + int(self.rng.uniform(1, 10) * DAY)
        recorded = reported + int(self.rng.uniform(1, 24) * HOUR)
        if recorded < min(due_end, margin) and self.rnd() < 0.5:
            review.reported, review.records = reported, [recorded]
        else:
            review.reported = None
            review.records = [review.completed + int(self.rng.uniform(1, 48) * HOUR)]

    def _review_event(self, review: _Review, at: int, n: int) -> Event:
        prof = self.profiles[review.entity]
        offset = prof.utc_offset_h
        reported = review.reported
        return {
            "stream": "control_review",
            "event_id": f"grc-{prof.code}-{date.fromordinal(_utc_day(review.completed))}-{n + 1}",
            "timestamp": self.stamp(at, offset, False),
            "entity": prof.entity,
            "completed_at": self.stamp(review.completed, offset, False),
            "reported_to_committee_at": self.stamp(reported, offset, False)
            if reported is not None and reported <= at
            else None,
            "reviewer": REVIEWERS[review.entity % len(REVIEWERS)],
            "controls_reviewed": list(CONTROLS),
            "source": "grc",
        }

    # -- output ----------------------------------------------------------------------

    def _push(self, ms: int, event: Event, delay: bool = True) -> None:
        """Queue by arrival time: event time plus a delivery delay."""
        if ms >= self.end:
            return
        arrival = ms
        if delay and self.max_delay:
            u = self.rnd()
            if u > 0.85:  # 13 % a few seconds late, 2 % up to the maximum
                cap = self.max_delay if u > 0.98 else min(3 * SECOND, self.max_delay)
                arrival += int(self.rnd() * cap)
        heapq.heappush(self.heap, (arrival, next(self.seq), event))

    def _event_id(self, source: str) -> str:
        # No eight digits in a row: the masks take nine for an account number
        # (and eight after a letter for a passport), and admission would
        # pseudonymise every id, or search each one twice.
        return f"{source}-{self.seed}-ev{next(self.ids):07d}"

    def events(self) -> Iterator[Event]:
        """Minute by minute: postures due, then accesses (and what rides on
        them); everything that arrives before the next minute is final."""
        rnd, gauss, heap = self.rnd, self.rng.gauss, self.heap
        # Initial postures land in the minutes before `start`, so every device
        # has one before its first access.
        lead = min(10 * MINUTE, self.max_age // 2)
        t0 = self.start - -(-lead // MINUTE) * MINUTE
        due: dict[int, list[int]] = {}  # minute index -> devices reporting then
        self.next_posture = [0] * len(self.dev_ids)
        self.interval = [0] * len(self.dev_ids)
        self.patch_base = [0] * len(self.dev_ids)
        for d, state in enumerate(self.dev_state):
            # Every 3-8 h; at most half the max age, so even a late report is in time.
            hours = self.rng.uniform(3, 8) * HOUR
            self.interval[d] = max(30 * SECOND, int(min(hours, 0.5 * self.max_age)))
            self.patch_base[d] = int(rnd() * (self.require.os_patch_age_days_max + 1))
            if state == _UNENROLLED:
                continue
            if state == _STALE:  # its agent last reported yesterday, then died
                at = self.start - int(self.rng.uniform(0.5, 0.95) * self.max_age)
                self._push(*self._posture(d, at, fail=False), delay=False)
                continue
            at = self.start - 1 - int(rnd() * lead)
            self.next_posture[d] = at
            due.setdefault((at - t0) // MINUTE, []).append(d)

        per_minute = ACCESSES_PER_USER_DAY / sum(HOURLY) / 60
        minute, t = 0, t0
        while t < self.end:
            t_next = min(t + MINUTE, self.end)
            for d in due.pop(minute, ()):
                self._report_posture(d, due, t0)
            if t >= self.start:
                span = t_next - t
                for e, members in enumerate(self.entity_users):
                    if not members:
                        continue
                    local = t + self.profiles[e].utc_offset_h * HOUR
                    weekday = date.fromordinal(_utc_day(local)).weekday()
                    hour = (local // HOUR) % 24
                    lam = len(members) * per_minute * HOURLY[hour] * span / MINUTE
                    if weekday >= 5:
                        lam *= WEEKEND_FACTOR
                    working = weekday < 5 and 8 <= hour < 19
                    for _ in range(_poisson(rnd, gauss, lam)):
                        j = members[int(rnd() * len(members))]
                        self._access(j, e, t + int(rnd() * span), working)
            # Nothing generated later has an event time, hence an arrival, before t_next.
            while heap and heap[0][0] < t_next:
                yield heapq.heappop(heap)[2]
            t = t_next
            minute += 1
        while heap:
            yield heapq.heappop(heap)[2]

    # -- device_posture ---------------------------------------------------------------

    def _report_posture(self, d: int, due: dict[int, list[int]], t0: int) -> None:
        at = self.next_posture[d]
        fail = self.dev_state[d] == _FAILING or (self.rate > 0 and self.rnd() < self.rate)
        self._push(*self._posture(d, at, fail))
        if at < self.start:  # the first periodic report at a random phase
            at += int(self.interval[d] * self.rng.uniform(0.2, 1.0))
        else:
            at += int(self.interval[d] * self.rng.uniform(0.85, 1.15))
        if at < self.end:
            self.next_posture[d] = at
            due.setdefault((at - t0) // MINUTE, []).append(d)

    def _posture(self, d: int, at: int, fail: bool) -> Timed:
        req = self.require
        source = self.dev_source[d]
        prof = self.profiles[self.dev_entity[d]]
        at -= at % SECOND  # intune and osquery stamp whole seconds
        days = max(0, (at - self.start) // DAY)
        # Patched monthly-ish: the age cycles below the limit.
        patch_age = (self.patch_base[d] + days) % (req.os_patch_age_days_max + 1)
        values: dict[str, Any] = {
            "managed": req.managed,
            "edr_running": req.edr_running,
            "disk_encrypted": req.disk_encrypted,
            "screen_lock": req.screen_lock,
            "os_patch_age_days": patch_age,
            "jailbroken": req.jailbroken,
        }
        if fail:
            what = POSTURE_FAILURES[int(self.rnd() * len(POSTURE_FAILURES))]
            if what == "os_patch_age_days":
                values[what] = req.os_patch_age_days_max + 5 + int(self.rnd() * 120)
            else:
                values[what] = not values[what]
        return at, {
            "stream": "device_posture",
            "event_id": self._event_id(source),
            "timestamp": self.stamp(at, 0 if source == "intune" else prof.utc_offset_h, False),
            "entity": prof.entity,
            "device_id": self.dev_ids[d],
            "user_id": self.dev_user[d],
            **values,
            "source": source,
        }

    # -- saas_access, and the DLP alerts that ride on it ---------------------------------

    def _access(self, j: int, e: int, t: int, working: bool) -> None:
        rnd, rate = self.rnd, self.rate
        internal = rnd() < (INTERNAL_WORKING if working else INTERNAL_OFF_HOURS)
        devices = self.user_devices[j]
        device: int | None = None
        if devices:
            device = devices[0] if len(devices) == 1 or rnd() < 0.8 else devices[-1]
        apps = self.registry.day(self._day(t))
        action: str | None = None
        if not apps.good:
            internal = False  # the exception is not in force: SaaS only from outside
        if internal:
            u = rnd()
            kiosks = self.entity_kiosks[e]
            if j in self.pilots and u < 0.5:
                app = self.pilots[j]
            elif u < rate:
                kind = ACCESS_VIOLATIONS[int(rnd() * len(ACCESS_VIOLATIONS))]
                table = apps.not_permitted if kind == "not_permitted" else apps.good
                if kind == "unevaluated" or not table:
                    table = apps.unevaluated or apps.good
                app = table[int(rnd() * len(table))]
                if kind == "no_device":
                    device = None
            elif j in self.analysts and apps.designated and u < 0.25:
                app = apps.designated[int(rnd() * len(apps.designated))]
                action = "upload" if rnd() < 0.5 else None
            elif kiosks and apps.kiosk_app and u > 0.97:
                device, app, action = kiosks[int(rnd() * len(kiosks))], apps.kiosk_app, "view"
            else:
                app = apps.good[int(rnd() * len(apps.good))]
        else:
            # From outside anything goes, personal tools included: no rule applies.
            table = apps.unevaluated if rnd() < 0.1 or not apps.good else apps.good
            app = table[int(rnd() * len(table))]
        if action is None:
            table = self.action_tables.get(apps.category.get(app, ""), self.default_actions)
            action = table[int(rnd() * len(table))]

        obj = self._object(t, action)
        access = self._access_event(j, e, t, device, app, action, internal, obj)
        if internal and action in FILE_OUT:
            if rnd() < rate:
                self._dlp_violation(access, j, e, device, app, obj, apps)
                return
            if app in apps.designated and rnd() < 0.6:
                # The analysts' lawful path: pseudonymized data to the designated app.
                alert = self._dlp(
                    j, e, t + int(rnd() * 90 * SECOND), device, "saas_upload", app,
                    ["pseudonymized"], obj and dict(obj),
                )  # fmt: skip
                self._push(*alert)
        self._push(*access)
        if rnd() < DLP_NOISE:
            self._dlp_noise(j, e, t, device)

    def _object(self, t: int, action: str) -> dict[str, Any] | None:
        if action in ("login", "other"):
            return None
        rnd = self.rnd
        stem = FILE_STEMS[int(rnd() * len(FILE_STEMS))]
        ext = FILE_EXTS[int(rnd() * len(FILE_EXTS))]
        if rnd() < 0.6:
            name = f"{stem}_{self.stamp.compact_day(t, 9)}.{ext}"
        else:
            name = f"{stem} v{1 + int(rnd() * 5)}.{ext}"
        if action in ("view", "delete"):
            return {"name": name}
        size = int(math.exp(9 + rnd() * 7))  # 8 KB .. 9 MB, mostly small
        if action == "download":
            return {"name": name, "size": size}
        return {"name": name, "sha256": f"{self.rng.getrandbits(256):064x}", "size": size}

    def _access_event(
        self,
        j: int,
        e: int,
        t: int,
        device: int | None,
        app: str,
        action: str,
        internal: bool,
        obj: dict[str, Any] | None,
        event_id: str | None = None,
    ) -> Timed:
        prof = self.profiles[e]
        if action == "login":
            source, offset, millis = "okta", 0, True
        elif app.startswith("m365-"):
            source, offset, millis = "m365", prof.utc_offset_h, False
        else:
            source, offset, millis = "netskope", 0, True
        if not millis:
            t -= t % SECOND
        if internal:
            ip = self.dev_ip[device] if device is not None else f"10.{prof.ip_octet}.250.17"
        else:  # documentation ranges: never a real address
            net = ("203.0.113", "198.51.100", "192.0.2")[int(self.rnd() * 3)]
            ip = f"{net}.{1 + int(self.rnd() * 254)}"
        return t, {
            "stream": "saas_access",
            "event_id": event_id or self._event_id(source),
            "timestamp": self.stamp(t, offset, millis),
            "entity": prof.entity,
            "user_id": self.user_ids[j],
            "device_id": self.dev_ids[device] if device is not None else None,
            "saas_app": app,
            "action": action,
            "network_zone": "internal" if internal else "external",
            "src_ip": ip,
            "object": obj,
            "auth": self._auth(app, internal) if action == "login" else None,
            **self._share(internal, action),
            "source": source,
        }

    def _auth(self, app: str, internal: bool) -> dict[str, Any]:
        """How a sign-in was authenticated: multi-factor, or single-factor as a
        violation where the policy requires more (SEP-010); a few sources do
        not say (counted, never judged)."""
        rnd, policy = self.auth_rnd, self.authentication
        u = rnd()
        if u < UNSAID_AUTH:
            return {"mfa": None, "method": None}
        required = policy is not None and policy.require_mfa and app not in policy.exempt_apps
        if internal and required and u < UNSAID_AUTH + self.rate:
            return {"mfa": False, "method": "password"}
        return {"mfa": True, "method": "password, push notification"}

    def _share(self, internal: bool, action: str) -> dict[str, Any]:
        """Whom a share reached: colleagues mostly, partners now and then (where
        the policy allows them), the public or an outside address as a
        violation (SEP-011, from inside or outside)."""
        if action != "share":
            return {"share_target": None, "shared_with_domain": None}
        rnd, policy = self.auth_rnd, self.sharing
        own = policy.internal_domains[0] if policy and policy.internal_domains else None
        u = rnd()
        if policy is not None and u < self.rate:
            if rnd() < 0.4:
                return {"share_target": "public", "shared_with_domain": None}
            outside = OUTSIDE_DOMAINS[int(rnd() * len(OUTSIDE_DOMAINS))]
            return {"share_target": "external", "shared_with_domain": outside}
        if policy is not None and policy.external == "partners_only" and u > 0.9:
            partners = policy.partner_domains
            return {
                "share_target": "external",
                "shared_with_domain": partners[int(rnd() * len(partners))],
            }
        return {"share_target": "internal", "shared_with_domain": own}

    def _dlp(
        self,
        j: int,
        e: int,
        t: int,
        device: int | None,
        channel: str,
        app: str | None,
        data_types: list[str],
        obj: dict[str, Any] | None,
    ) -> Timed:
        rnd = self.rnd
        prof = self.profiles[e]
        if channel in ("web", "saas_upload"):
            source, offset, millis = "netskope", 0, True
        else:
            source, offset, millis = "purview", prof.utc_offset_h, False
        if not millis:
            t -= t % SECOND
        matches = max(len(data_types), 1 + int(rnd() ** 3 * 60))
        shown = min(matches, 1 + int(rnd() * 3))
        snippet = " / ".join(_snippet(rnd, data_types[k % len(data_types)]) for k in range(shown))
        return t, {
            "stream": "dlp_alert",
            "event_id": self._event_id(source),
            "timestamp": self.stamp(t, offset, millis),
            "entity": prof.entity,
            "user_id": self.user_ids[j],
            "device_id": self.dev_ids[device] if device is not None else None,
            "channel": channel,
            "saas_app": app,
            "data_types": data_types,
            "match_count": matches,
            "object": obj,
            "snippet": snippet,
            "source": source,
        }

    def _dlp_file(self, data_type: str) -> dict[str, Any]:
        rnd = self.rnd
        stems = DLP_STEMS[data_type]
        ext = ("xlsx", "csv", "pdf", "docx")[int(rnd() * 4)]
        return {
            "name": f"{stems[int(rnd() * len(stems))]}_{int(rnd() * 900) + 100}.{ext}",
            "sha256": f"{self.rng.getrandbits(256):064x}",
            "size": int(math.exp(10 + rnd() * 5)),
        }

    def _dlp_noise(self, j: int, e: int, t: int, device: int | None) -> None:
        """Alerts that make no SEP finding: card numbers anywhere; regulated
        data by email, USB or print, with a file of its own so that it
        correlates with no SaaS access."""
        rnd = self.rnd
        t += int(rnd() * 60 * SECOND)
        app = None
        if rnd() < 0.65:
            channel = ("email", "web", "usb", "print", "saas_upload")[int(rnd() * 5)]
            data_type = "card_number"
            if channel == "saas_upload":
                good = self.registry.day(self._day(t)).good
                app = good[int(rnd() * len(good))] if good else None
        else:
            channel = ("email", "email", "usb", "print")[int(rnd() * 4)]
            data_type = self.violation_types[int(rnd() * len(self.violation_types))]
        printed = data_type == "card_number" and channel == "print" and rnd() < 0.5
        obj = None if printed else self._dlp_file(data_type)
        self._push(*self._dlp(j, e, t, device, channel, app, [data_type], obj))

    def _dlp_violation(
        self,
        access: Timed,
        j: int,
        e: int,
        device: int | None,
        app: str,
        obj: dict[str, Any] | None,
        apps: _AppDay,
    ) -> None:
        """A regulated file goes to a SaaS app: bound by channel, or by the
        access it rode on (same sha256), the alert after it or before it."""
        rnd = self.rnd
        t, event = access
        kind = self.violation_types[int(rnd() * len(self.violation_types))]
        if kind == "pseudonymized" and app in apps.designated:
            kind = "personal_credit_info"  # to its designated app it would be lawful
        types = [kind]
        extra = ("personal_credit_info", "card_number", "kr_rrn")[int(rnd() * 3)]
        if rnd() < 0.15 and extra != kind:
            types.append(extra)
        if obj is not None:
            stems = DLP_STEMS[kind]
            obj["name"] = f"{stems[int(rnd() * len(stems))]}_{int(rnd() * 900) + 100}.xlsx"
        file = dict(obj) if obj is not None else None
        gap = int((3 + rnd() * 297) * SECOND)
        u = rnd()
        if u < 0.4:  # the CASB saw the upload and knows the app
            alert = self._dlp(j, e, t + gap // 10, device, "saas_upload", app, types, file)
        elif u < 0.75 or self._day(t + gap) != self._day(t):  # browser DLP, a bit later
            alert = self._dlp(j, e, t + gap, device, "web", None, types, file)
        else:  # endpoint DLP saw the file first; the upload followed
            alert = self._dlp(j, e, t, device, "other", None, types, file)
            action = event["action"]
            access = self._access_event(
                j, e, t + gap, device, app, action, True, obj, event["event_id"]
            )
        self._push(*access)
        self._push(*alert)
