"""Fixtures for the adapter tests: the example mapping and policy, and a way
to run one vendor file through its adapter as `sepwatch adapt` does."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from adapters import ADAPTERS
from adapters.intake import AdaptCounts, adapt_records, read_raw
from adapters.mapping import VendorMapping, load_mapping
from schemas.policy_file import load_policy

ROOT = Path(__file__).resolve().parents[2]
VENDORS = ROOT / "tests" / "fixtures" / "vendors"
MAPPING = ROOT / "deploy" / "policy" / "vendor-mapping.yaml"
POLICY = ROOT / "deploy" / "policy" / "example.yaml"


@dataclass
class Adapted:
    events: list[dict[str, Any]]
    counts: AdaptCounts
    dead: list[dict[str, Any]]

    def by_id(self) -> dict[str, dict[str, Any]]:
        return {e["event_id"]: e for e in self.events}


@pytest.fixture(scope="session")
def mapping() -> VendorMapping:
    return load_mapping(MAPPING, load_policy(POLICY))


def adapt_file(source: str, name: str, mapping: VendorMapping) -> Adapted:
    adapter = ADAPTERS[source]
    dead = io.StringIO()
    counts = AdaptCounts()
    with (VENDORS / name).open("rb") as f:
        events = list(
            adapt_records(adapter, read_raw(f, adapter, name), mapping, counts, dead, validate=True)
        )
    return Adapted(events, counts, [json.loads(line) for line in dead.getvalue().splitlines()])
