"""The day of tests/fixtures/vendors/day: raw records of five sources, what
the adapters make of them in arrival order, and the findings the scenario
was written to produce (see the README beside the records)."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from adapters import ADAPTERS
from adapters.intake import AdaptCounts, RawRecord, adapt_one, adapt_records, read_raw
from adapters.mapping import VendorMapping
from adapters.records import Skip, Unmappable
from tests.adapters.conftest import VENDORS

DAY = VENDORS / "day"
FILES = {
    "intune": "intune.json",
    "osquery": "osquery.log",
    "okta": "okta.json",
    "m365": "m365.json",
    "netskope": "netskope.jsonl",
}


def _id(prefix: str, n: int) -> str:
    return f"{prefix}-0000-4000-8000-{n:012d}"


# (rule, the trigger's event id) for every finding but SEP-008.
EXPECTED = {
    ("SEP-007", _id("d1a0a001", 1)),  # Okta SSO to SharePoint, no device known
    ("SEP-004", "d3c0c003000000000000000a"),  # Netskope: credit info to Box
    ("SEP-006", _id("d2b0b002", 2)),  # OneDrive from the non-compliant branch PC
    ("SEP-003", _id("d2b0b002", 3)),  # Purview: RRNs in SharePoint
    ("SEP-001", _id("d1a0a001", 2)),  # Notion
    ("SEP-007", _id("d1a0a001", 2)),
    ("SEP-001", "d3c0c003000000000000000b"),  # Dropbox from the branch PC
    ("SEP-006", "d3c0c003000000000000000b"),
    ("SEP-002", _id("d1a0a001", 4)),  # ChatGPT Enterprise: generative AI
    ("SEP-007", _id("d1a0a001", 4)),
    ("SEP-005", "d3c0c003000000000000000d"),  # pseudonymized to Dooray
}
REVIEW_OVERDUE = {"HQ", "BR-SEOUL-GN"}  # SEP-008: no review since the baseline


@dataclass(frozen=True)
class Arrival:
    source: str
    record: RawRecord
    events: int  # canonical events it gives
    at: datetime | None  # its event time (None: skipped or dead)


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def raw_arrivals(mapping: VendorMapping) -> list[Arrival]:
    """Every raw record of the day, in event-time order: as they would arrive."""
    found = []
    for source, name in FILES.items():
        adapter = ADAPTERS[source]
        with (DAY / name).open("rb") as f:
            for record in read_raw(f, adapter, name):
                try:
                    outcome = adapt_one(adapter, record.value, mapping)
                except Unmappable:
                    outcome = Skip("dead")
                events = [] if isinstance(outcome, Skip) else outcome
                at = min((_time(e["timestamp"]) for e in events), default=None)
                found.append(Arrival(source, record, len(events), at))
    return sorted(found, key=lambda a: (a.at is not None, a.at or datetime.min))


def canonical_day(mapping: VendorMapping) -> tuple[list[bytes], list[dict[str, Any]]]:
    """The day's canonical events as JSON lines in arrival (event-time) order,
    and the dead letters."""
    events: list[dict[str, Any]] = []
    dead = io.StringIO()
    for source, name in FILES.items():
        adapter = ADAPTERS[source]
        with (DAY / name).open("rb") as f:
            events += adapt_records(
                adapter, read_raw(f, adapter, name), mapping, AdaptCounts(), dead
            )
    events.sort(key=lambda e: _time(e["timestamp"]))
    lines = [json.dumps(e, ensure_ascii=False).encode() + b"\n" for e in events]
    return lines, [json.loads(d) for d in dead.getvalue().splitlines()]


def judged(findings: list[dict[str, Any]]) -> tuple[set[tuple[str, str]], set[str]]:
    """(rule, trigger) of every finding but SEP-008, and the entities SEP-008 fired for."""
    triggers = {
        (f["rule_id"], f["evidence_event_ids"][0]) for f in findings if f["rule_id"] != "SEP-008"
    }
    overdue = {f["entity"] for f in findings if f["rule_id"] == "SEP-008"}
    return triggers, overdue
