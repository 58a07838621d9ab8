"""CrowdStrike Falcon Zero Trust Assessment -> `device_posture`.

Vendor schema: Falcon Zero Trust Assessment API
(`GET /zero-trust-assessment/entities/assessments/v1`; falconpy
`ZeroTrustAssessment.get_assessment`): resources `{"aid", "cid",
"modified_time" (RFC 3339), "event_platform", "product_type_desc",
"sensor_file_status", "assessment": {"overall", "os", "sensor_config"},
"assessment_items": {"os_signals": [...], "sensor_signals": [...]}}`, each
signal `{"signal_id", "signal_name", "group_name", "criteria",
"meets_criteria": "yes" | "no" | "unknown"}`. Pages: `{"meta", "resources": [...], "errors"}`.

The device is the Falcon agent id (`aid`) through the mapping. The sensor
wrote the assessment, so endpoint protection is running unless its file
status says it is not deployed. Which signals decide encryption, screen
lock, MDM enrolment and a current OS is the mapping's
(`crowdstrike_signals`), since signal ids differ by platform and sensor
version: a control none of whose signals is met counts as not met. ZTA says
whether the OS is current, not since when: a current OS is 0 days behind,
any other is taken as a year behind (SEP-006 will fire).
"""

from __future__ import annotations

from typing import Any

from streams.adapters.canonical import device_posture
from streams.adapters.mapping import Control, VendorMapping
from streams.adapters.records import Adapted, derived_id, iso_time, text_of

SOURCE = "crowdstrike"
ENVELOPES = ("resources",)
SHAPES = (("aid",),)  # A Zero Trust Assessment.
BEHIND_DAYS = 365


def adapt(record: dict[str, Any], mapping: VendorMapping) -> Adapted:
    aid = text_of(record, "aid")
    timestamp = iso_time(record.get("modified_time"), "modified_time")
    items = record.get("assessment_items") or {}
    met = {
        key
        for signal in [*(items.get("os_signals") or ()), *(items.get("sensor_signals") or ())]
        if str(signal.get("meets_criteria", "")).lower() == "yes"
        for key in (
            str(signal.get("signal_id", "")).lower(),
            str(signal.get("signal_name", "")).lower(),
        )
        if key
    }

    def control(name: Control) -> bool:
        return any(s.strip().lower() in met for s in mapping.crowdstrike_signals.get(name, []))

    return [
        device_posture(
            mapping,
            source=SOURCE,
            event_id=derived_id(SOURCE, aid, timestamp),
            timestamp=timestamp,
            device_id=mapping.device_of(aid) or aid,
            user_id=None,
            managed=control("managed"),
            edr_running=str(record.get("sensor_file_status", "")).lower() != "not deployed",
            disk_encrypted=control("disk_encrypted"),
            screen_lock=control("screen_lock"),
            os_patch_age_days=0 if control("os_current") else BEHIND_DAYS,
        )
    ]
