"""The simulated multi-vendor day (simulator/vendors.py) the identity
tests and bench/identity.py share, and how its findings are compared with
those of the same day in canonical form."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo

from adapters.mapping import DEFAULT_MAPPING, load_mapping
from schemas.policy_file import load_policy
from simulator.vendors import VendorDay, lines, names_of, simulated_vendor_day

POLICY = "deploy/policy/example.yaml"
START = datetime(2026, 11, 23, tzinfo=ZoneInfo("Asia/Seoul"))
Judged = tuple[str, str, str | None]


@cache
def day(users: int = 60, hours: float = 12, seed: int = 6) -> VendorDay:
    policy = load_policy(POLICY)
    return simulated_vendor_day(
        policy,
        load_mapping(DEFAULT_MAPPING),
        START,
        users=users,
        devices=users + users // 10,
        hours=hours,
        violation_rate=0.05,
        seed=seed,
    )


def canonical_lines(d: VendorDay) -> list[bytes]:
    return lines(d.canonical)


def vendor_lines(d: VendorDay) -> list[bytes]:
    return lines(d.adapted)


def judged(findings: list[dict[str, Any]], d: VendorDay) -> Counter[Judged]:
    """Each finding as (rule, its trigger, its device), the device by its id
    in the canonical day, whichever of its names (devices.jsonl) the finding
    gives: so a canonical day's findings and a vendor day's compare."""
    canonical = {e["device_id"] for e in d.canonical if e.get("device_id")}
    truth = {name.lower(): c for c in canonical for name in names_of(c)}

    def device(f: dict[str, Any]) -> str | None:
        name = f["device_id"]
        return None if name is None else truth.get(name.lower(), name)

    return Counter(
        (f["rule_id"], (f["evidence_event_ids"] or [f["entity"]])[0], device(f)) for f in findings
    )
