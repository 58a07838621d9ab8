"""`sepwatch schema export`: JSON Schema of the canonical shapes, so producers
in other languages can validate what they send (contract.md)."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cli.main import app
from schemas import EventAdapter

NAMES = (
    "event",
    "saas_access",
    "device_posture",
    "dlp_alert",
    "control_review",
    "policy",
    "finding",
)
STREAMS = {"saas_access", "device_posture", "dlp_alert", "control_review"}
# The fields of each input event, from contract.md's tables.
CONTRACT_FIELDS = {
    "saas_access": {
        "event_id",
        "timestamp",
        "entity",
        "user_id",
        "device_id",
        "saas_app",
        "action",
        "network_zone",
        "src_ip",
        "object",
        "auth",
        "share_target",
        "shared_with_domain",
        "source",
    },
    "device_posture": {
        "event_id",
        "timestamp",
        "entity",
        "device_id",
        "user_id",
        "managed",
        "edr_running",
        "disk_encrypted",
        "screen_lock",
        "os_patch_age_days",
        "jailbroken",
        "source",
    },
    "dlp_alert": {
        "event_id",
        "timestamp",
        "entity",
        "user_id",
        "device_id",
        "channel",
        "saas_app",
        "data_types",
        "match_count",
        "object",
        "snippet",
        "source",
    },
    "control_review": {
        "event_id",
        "timestamp",
        "entity",
        "completed_at",
        "reported_to_committee_at",
        "reviewer",
        "controls_reviewed",
    },
}
FINDING_FIELDS = {
    "finding_id",
    "rule_id",
    "severity",
    "status",
    "timestamp",
    "detected_at",
    "entity",
    "user_id",
    "device_id",
    "saas_app",
    "evidence_event_ids",
    "summary",
    "regulation",
    "waiver",
}
POLICY_KEYS = {
    "version",
    "allowed_lateness",
    "timezone",
    "registry",
    "permitted_categories",
    "posture",
    "identity",
    "dlp",
    "review",
    "authentication",
    "sharing",
    "waivers",
    "alerting",
}
SAMPLE_EVENT = {
    "stream": "saas_access",
    "event_id": "evt-1",
    "timestamp": "2026-05-04T09:15:02Z",
    "entity": "HQ",
    "user_id": "u1",
    "device_id": "d1",
    "saas_app": "m365-sharepoint",
    "action": "upload",
    "network_zone": "internal",
    "src_ip": "10.1.2.3",
    "object": {"name": "report.docx", "size": 1024},
    "source": "test",
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    directory = tmp_path_factory.mktemp("export") / "nested" / "schemas"
    result = CliRunner().invoke(app, ["schema", "export", str(directory)])
    assert result.exit_code == 0, result.output
    out = {}
    for name in NAMES:
        path = directory / f"{name}.schema.json"
        assert path.is_file(), f"{path} not written"
        out[name] = json.loads(path.read_text(encoding="utf-8"))
    return out


def resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if ref is None:
        return node
    assert ref.startswith("#/$defs/"), ref
    target: dict[str, Any] = schema["$defs"][ref.removeprefix("#/$defs/")]
    return target


@pytest.mark.parametrize("name", NAMES)
def test_every_file_is_json_schema(exported: dict[str, dict[str, Any]], name: str) -> None:
    schema = exported[name]
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert "properties" in schema or "oneOf" in schema


def test_export_is_repeatable(tmp_path: Path, exported: dict[str, dict[str, Any]]) -> None:
    for _ in range(2):
        result = CliRunner().invoke(app, ["schema", "export", str(tmp_path)])
        assert result.exit_code == 0, result.output
    for name in NAMES:
        again = json.loads((tmp_path / f"{name}.schema.json").read_text(encoding="utf-8"))
        assert again == exported[name]


def test_event_schema_is_one_of_the_four_streams(exported: dict[str, dict[str, Any]]) -> None:
    schema = exported["event"]
    assert schema["discriminator"]["propertyName"] == "stream"
    assert set(schema["discriminator"]["mapping"]) == STREAMS
    tags = set()
    for option in schema["oneOf"]:
        target = resolve(schema, option)
        tags.add(target["properties"]["stream"]["const"])
        assert {"event_id", "timestamp", "entity"} <= set(target["required"])
    assert tags == STREAMS


@pytest.mark.parametrize("stream", sorted(STREAMS))
def test_stream_schemas_carry_the_contract_fields(
    exported: dict[str, dict[str, Any]], stream: str
) -> None:
    schema = exported[stream]
    props = set(schema["properties"])
    assert CONTRACT_FIELDS[stream] <= props, CONTRACT_FIELDS[stream] - props
    assert schema["properties"]["timestamp"]["format"] == "date-time"
    assert {"event_id", "timestamp"} <= set(schema["required"])
    # Unknown extra fields are kept, never refused.
    assert schema.get("additionalProperties", True) is not False


def test_finding_schema_carries_the_contract_fields(exported: dict[str, dict[str, Any]]) -> None:
    schema = exported["finding"]
    assert set(schema["properties"]) >= FINDING_FIELDS
    assert set(schema["properties"]["rule_id"]["enum"]) == {f"SEP-{n:03d}" for n in range(1, 12)}
    assert set(schema["properties"]["severity"]["enum"]) >= {"medium", "high", "critical"}
    required = set(schema["required"])
    assert {"finding_id", "rule_id", "severity", "status", "evidence_event_ids"} <= required


def test_policy_schema_refuses_unknown_keys(exported: dict[str, dict[str, Any]]) -> None:
    schema = exported["policy"]
    assert set(schema["properties"]) == POLICY_KEYS
    assert schema["additionalProperties"] is False
    pattern = re.compile(schema["properties"]["allowed_lateness"]["pattern"])
    for good in ("30s", "10m", "24h", "7d", "1h30m"):
        assert pattern.search(good), good
    for bad in ("soon", "10", "-5s", "1.5h"):
        assert not pattern.search(bad), bad


def test_sample_event_validates(exported: dict[str, dict[str, Any]]) -> None:
    """With `jsonschema` installed, against the exported file; without it (it is
    not a declared dependency), against the same pydantic adapter the file is
    made from, and the file's discriminator must cover the sample's stream."""
    schema = exported["event"]
    try:
        jsonschema: Any = importlib.import_module("jsonschema")
    except ImportError:
        jsonschema = None
    if jsonschema is not None:
        validator = jsonschema.Draft202012Validator(schema)
        assert list(validator.iter_errors(SAMPLE_EVENT)) == []
        assert list(validator.iter_errors({**SAMPLE_EVENT, "stream": "printer_log"}))
        assert list(validator.iter_errors({**SAMPLE_EVENT, "action": "teleport"}))
    event = EventAdapter.validate_python(SAMPLE_EVENT)
    assert event.stream in schema["discriminator"]["mapping"]
    target = resolve(schema, {"$ref": schema["discriminator"]["mapping"][event.stream]})
    assert set(SAMPLE_EVENT) <= set(target["properties"])
    assert SAMPLE_EVENT["action"] in target["properties"]["action"]["enum"]
    assert SAMPLE_EVENT["network_zone"] in target["properties"]["network_zone"]["enum"]


POSTURE_CONTROLS = ("managed", "edr_running", "disk_encrypted", "screen_lock", "os_patch_age_days")


def test_posture_controls_are_nullable_but_must_be_given(
    exported: dict[str, dict[str, Any]],
) -> None:
    """A partial posture says null for what its source does not speak for;
    leaving a control out is an error, so an omission is not read as silence."""
    schema = exported["device_posture"]
    for control in (*POSTURE_CONTROLS, "jailbroken"):
        types = {o.get("type") for o in schema["properties"][control]["anyOf"]}
        assert "null" in types, control
        assert "not speak for" in schema["properties"][control]["description"]
    assert set(POSTURE_CONTROLS) <= set(schema["required"])


def test_a_posture_that_speaks_for_nothing_is_refused() -> None:
    base = {
        "stream": "device_posture",
        "event_id": "p1",
        "timestamp": "2026-05-04T09:15:02Z",
        "entity": "HQ",
        "device_id": "d1",
        **dict.fromkeys(POSTURE_CONTROLS),
    }
    partial = EventAdapter.validate_python({**base, "disk_encrypted": False})
    assert (partial.disk_encrypted, partial.managed, partial.jailbroken) == (False, None, False)
    with pytest.raises(ValueError, match="at least one control"):
        EventAdapter.validate_python({**base, "jailbroken": None})
    with pytest.raises(ValueError, match="managed"):
        EventAdapter.validate_python({k: v for k, v in base.items() if k != "managed"})
