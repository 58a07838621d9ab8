"""What SEP-003, SEP-004 and SEP-005 share: a SaaS-bound DLP alert and its
destination app, found by the engine (rules.md, "SaaS-bound DLP alerts")."""

from __future__ import annotations

from typing import Any, NamedTuple

from detectors.views import AccessView, DlpView


class Destination(NamedTuple):
    app_id: str
    via: AccessView | None  # the correlated internal access, when the alert did not name the app


def evidence(dest: Destination) -> tuple[str, ...]:
    return (dest.via.event_id,) if dest.via is not None else ()


def details(alert: DlpView, dest: Destination, matched: frozenset[str]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "data_types": sorted(matched),
        "match_count": alert.match_count,
        "channel": alert.channel,
        "bound_by": "correlated_access" if dest.via is not None else "saas_upload",
    }
    if alert.snippet is not None:
        out["snippet_masked"] = alert.snippet
    if dest.via is not None:
        out["correlated_access_gap_s"] = round(abs(dest.via.ts - alert.ts), 3)
    if alert.match_ref is not None:
        workload, object_id, rule_ids = alert.match_ref
        out["match_ref"] = {
            "source": alert.source,
            "workload": workload,
            "object_id": object_id,
            "rule_ids": list(rule_ids),
        }
    return out
