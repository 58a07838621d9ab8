"""Every public and look-alike fixture of the issue-14 sources through its
adapter: each has its provenance beside it, and each record is an event, a
counted skip, or a dead letter with a specific reason, never a generic
exception."""

from __future__ import annotations

import pytest

from adapters.mapping import VendorMapping
from tests.adapters.conftest import VENDORS, adapt_file

FILES = {
    "intune-diagnostic-devices.json": "intune",
    "crowdstrike-hosts.jsonl": "crowdstrike",
    "crowdstrike-hosts-edge.jsonl": "crowdstrike",
    "purview-endpoint-dlp.jsonl": "purview-endpoint",
    "purview-aip-discover.json": "purview-endpoint",
    "google-workspace-rules-activities.log": "google-workspace-rules",
    "google-workspace-rules-page.json": "google-workspace-rules",
    "jamf-inventory-elastic.json": "jamf",
    "jamf-computers-inventory.json": "jamf",
    "entra-device-get.json": "entra-device",
    "entra-device-list-page.json": "entra-device",
    "google-workspace-devices-activities.log": "google-workspace-devices",
    "google-workspace-devices-page.json": "google-workspace-devices",
    "google-workspace-devices-caa-activities.log": "google-workspace-devices",
    "slack-audit.log": "slack",
    "slack-audit-page.json": "slack",
    "symantec-dlp-static-attributes.jsonl": "symantec-dlp",
    "symantec-dlp-incidents.jsonl": "symantec-dlp",
}


@pytest.mark.parametrize(("name", "source"), sorted(FILES.items()))
def test_no_generic_reasons(name: str, source: str, mapping: VendorMapping) -> None:
    assert (VENDORS / f"{name}.provenance.md").read_text().strip()
    run = adapt_file(source, name, mapping)
    assert run.counts.records > 0
    generic = [d["reason"] for d in run.dead if "unexpected shape" in d["reason"]]
    assert generic == []
