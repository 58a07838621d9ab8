"""Every name a posture record gives its device travels as `device_aliases`
(schemas.DeviceAlias), for the identity graph to learn (detectors/identity.py)."""

from __future__ import annotations

from typing import Any

from adapters.crowdstrike import adapt
from adapters.mapping import VendorMapping
from schemas import DevicePosture
from tests.adapters.conftest import adapt_file


def _aliases(event: dict[str, Any]) -> dict[str, str]:
    DevicePosture.model_validate(event)  # the field is part of the contract
    return {a["kind"]: a["value"] for a in event["device_aliases"]}


def _postures(source: str, name: str, mapping: VendorMapping) -> list[dict[str, Any]]:
    return [e for e in adapt_file(source, name, mapping).events if e["stream"] == "device_posture"]


def test_intune_graph_names_intune_entra_serial_and_hostname(mapping: VendorMapping) -> None:
    event = _postures("intune", "intune-managed-devices.json", mapping)[0]
    aliases = _aliases(event)
    assert aliases == {
        "mapping": "pc-hq-0142",  # the example mapping's hand-written entry
        "intune_device_id": "1c2d3e4f-aaaa-4bbb-8ccc-111111111111",
        "entra_device_id": "3f9c1a52-7d4e-4b8a-9c61-0e2f5a7b9d13",
        "serial": "hb0142x",
        "hostname": "hq-pc-0142",
    }
    unmapped = _postures("intune", "intune-managed-devices.json", mapping)[2]
    assert _aliases(unmapped) == {
        "intune_device_id": unmapped["device_id"],
        "hostname": "iphone-thanh",
    }


def test_intune_diagnostic_export_names_the_same_four(mapping: VendorMapping) -> None:
    events = _postures("intune", "intune-diagnostic-devices.json", mapping)
    assert _aliases(events[0]) == {
        "mapping": "pc-hq-0142",
        "intune_device_id": "9e1f3a5c-7b2d-4e6f-8a0b-1c2d3e4f5a6b",
        "entra_device_id": "3f9c1a52-7d4e-4b8a-9c61-0e2f5a7b9d13",
        "serial": "pf3xk2qa",
        "hostname": "hq-pc-0142",
    }
    assert _aliases(events[1])["serial"] == "f2lz81qxn7"
    assert _aliases(events[2]) == {"intune_device_id": events[2]["device_id"]}


def test_falcon_host_details_name_agent_hostname_and_serial(mapping: VendorMapping) -> None:
    serials = set()
    for event in _postures("crowdstrike", "crowdstrike-hosts.jsonl", mapping):
        aliases = _aliases(event)
        assert {"falcon_aid", "hostname"} <= set(aliases)
        serials.add(aliases.get("serial"))
    assert "fvfdh73hmnhx" in serials


def test_jamf_names_udid_and_computer_name(mapping: VendorMapping) -> None:
    events = _postures("jamf", "jamf-computers-inventory.json", mapping)
    aliases = _aliases(events[0])
    assert aliases["jamf_udid"] == "8e3a1f52-6c4d-5b7e-9a10-2b3c4d5e6f70"
    assert aliases["hostname"] == "gn-mac-0031"
    assert "serial" not in aliases  # the inventory section with it was not requested


def test_google_device_audit_names_device_id_and_serial(mapping: VendorMapping) -> None:
    events = _postures("google-workspace-devices", "google-workspace-devices-page.json", mapping)
    assert [_aliases(e) for e in events] == [
        {"google_device_id": "android-7f3c2a19e0b4", "serial": "r5cx1234abc"},
        {"google_device_id": "ios-2b9d7e51"},
    ]


def test_a_hand_written_entry_is_carried_as_a_mapping_alias() -> None:
    mapping = VendorMapping.model_validate(
        {"devices": [{"device_id": "laptop-7", "ids": ["AID-1"]}]}
    )
    record = {
        "device_id": "AID-1",
        "hostname": "mac-7",
        "serial_number": "FVFDH73HMNHX",
        "last_seen": "2026-01-02T03:04:05Z",
        "platform_name": "Mac",
    }
    event = adapt(record, mapping)[0]
    assert isinstance(event, dict)
    assert event["device_id"] == "laptop-7"
    assert _aliases(event) == {
        "mapping": "laptop-7",
        "falcon_aid": "aid-1",
        "hostname": "mac-7",
        "serial": "fvfdh73hmnhx",
    }


def test_osquery_names_the_host_uuid_decoration_and_the_hostname(mapping: VendorMapping) -> None:
    events = _postures("osquery", "osquery-results.log", mapping)
    aliases = _aliases(events[0])
    assert aliases["osquery_uuid"] == "4c4c4544-0042-3010-8030-b4c04f334b32"
    assert aliases["hostname"] == "hq-pc-0142"
