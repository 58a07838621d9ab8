"""The access tally: internal SaaS accesses per entity, day (of the policy's
time zone) and app, in
Elasticsearch beside the findings (`<index>.accesses`).

Findings hold only the accesses that broke a rule; the report's device
measure (share of accesses from compliant devices) needs every internal
access as its denominator. The tally is counted from the same canonical
`saas_access` events the engine judges (`sepwatch review accesses --events
FILE`, e.g. from the SaaS audit-log export), one document per (entity, day,
app) under a deterministic id: loading a day again replaces its counts, it
never adds to them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from datetime import date
from typing import Any

from elasticsearch import Elasticsearch
from elasticsearch.helpers import bulk
from pydantic import ValidationError

from detectors.calendar import UTC_DAYS, Days
from schemas import EventAdapter, SaasAccess
from streams.elastic import access_index

TallyKey = tuple[str, date, str]  # entity, day of the policy's zone, app

MAPPINGS: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "@timestamp": {"type": "date"},
        "organization": {"properties": {"name": {"type": "keyword"}}},
        "sepwatch": {
            "properties": {
                "saas_app": {"type": "keyword"},
                "internal_accesses": {"type": "long"},
            }
        },
    },
}


def count_internal_accesses(
    lines: Iterable[bytes],
    days: Days = UTC_DAYS,
    on_line: Callable[[int], None] | None = None,
) -> tuple[Counter[TallyKey], int]:
    """Valid internal `saas_access` events per (entity, day, app), as the
    engine sees them (a line it would dead-letter is not counted), and how
    many lines were not valid events."""
    counts: Counter[TallyKey] = Counter()
    bad = 0
    for n, line in enumerate(lines, start=1):
        if on_line is not None and n % 4096 == 0:
            on_line(n)
        if not line.strip() or b"saas_access" not in line:
            continue
        try:
            event = EventAdapter.validate_json(line)
        except ValidationError:
            bad += 1
            continue
        if isinstance(event, SaasAccess) and event.network_zone == "internal":
            day = date.fromordinal(days.day_of(event.timestamp.timestamp()))
            counts[(event.entity, day, event.saas_app)] += 1
    return counts, bad


def store_counts(es: Elasticsearch, findings_index: str, counts: Counter[TallyKey]) -> int:
    """Write the tally; a (entity, day, app) already there is replaced."""
    name = access_index(findings_index)
    if not es.indices.exists(index=name):
        es.indices.create(index=name, mappings=MAPPINGS)
    actions = (
        {
            "_op_type": "index",
            "_index": name,
            "_id": f"{entity}|{day.isoformat()}|{app}",
            "@timestamp": day.isoformat(),
            "organization": {"name": entity},
            "sepwatch": {"saas_app": app, "internal_accesses": n},
        }
        for (entity, day, app), n in counts.items()
    )
    done, _ = bulk(es, actions, chunk_size=2000, refresh="wait_for")
    return int(done)
