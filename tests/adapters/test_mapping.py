"""The vendor mapping: loading with every problem listed, and its lookups."""

from __future__ import annotations

from datetime import UTC, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.canonical import masked
from adapters.mapping import VendorMapping, load_mapping, parse_mapping
from adapters.records import Unmappable, ctime_time, epoch_time, iso_time
from detectors.masking import mask_text
from schemas.policy_file import PolicyError, load_policy
from tests.adapters.conftest import POLICY


def test_every_problem_is_listed_with_its_line() -> None:
    text = """version: 1
internal_networks:
  - {cidr: 10.0.0.0/33, entity: HQ}
source_timezones: {zscaler-zia: Asia/Nowhere}
apps:
  - {app_id: a, names: [Box]}
  - {app_id: b, names: [box]}
devices:
  - {device_id: d1, ids: [X1]}
  - {device_id: d2, ids: [x1]}
data_types: {Foo: Not-A-Type}
colour: blue
"""
    with pytest.raises(PolicyError) as caught:
        parse_mapping(text, "m.yaml")
    problems = {p.path: p for p in caught.value.problems}
    assert set(problems) == {
        "internal_networks[0].cidr",
        "source_timezones",
        "apps",
        "devices",
        "data_types.Foo",
        "colour",
    }
    assert problems["internal_networks[0].cidr"].line == 3
    assert "box" in problems["apps"].reason and "x1" in problems["devices"].reason


def test_the_example_mapping_is_valid(mapping: VendorMapping) -> None:
    assert mapping.app_of("Microsoft SharePoint Online") == "m365-sharepoint"  # registry name


@pytest.mark.parametrize(
    ("ip", "zone", "entity"),
    [
        ("203.0.113.30", "internal", "BR-BUSAN-HU"),  # branch egress proxy
        ("10.80.1.9", "internal", "SUB-VN"),  # inside a branch network
        ("::ffff:10.10.0.1", "internal", "HQ"),
        ("10.10.0.1:8443", "internal", "HQ"),
        ("203.0.113.99", "external", None),
        ("172.16.0.1", "external", None),  # private, but not the bank's
    ],
)
def test_zones(mapping: VendorMapping, ip: str, zone: str, entity: str | None) -> None:
    assert mapping.zone_of(ip)[:2] == (zone, entity)


def test_not_an_address_is_unmappable(mapping: VendorMapping) -> None:
    with pytest.raises(Unmappable):
        mapping.zone_of("unknown")


def test_app_domains_match_subdomains_only_at_label_boundaries(mapping: VendorMapping) -> None:
    assert mapping.app_of(host="hanbit.atlassian.net") == "jira-cloud"
    assert mapping.app_of(host="notatlassian.net") is None
    assert mapping.app_or_passthrough(None, "files.example.org") == "files.example.org"


def test_patch_age_uses_the_line_of_the_build(mapping: VendorMapping) -> None:
    at = "2026-11-23T09:00:00+09:00"
    assert mapping.patch_age("Windows", "10.0.26100.7200", at) == 41  # between two: older one
    assert mapping.patch_age("windows", "10.0.26100.9999", at) == 13  # newer than the table
    assert mapping.patch_age("macOS", "26.1.2", at) == 20
    with pytest.raises(Unmappable, match="release table"):
        mapping.patch_age("Windows", "10.0.26100.6000", at)  # older than the table knows
    with pytest.raises(Unmappable, match="release table") as again:  # remembered, same reason
        mapping.patch_age("Windows", "10.0.26100.6000", at, path="osVersion")
    assert again.value.field == "osVersion"
    with pytest.raises(Unmappable, match="platform"):
        mapping.patch_age("BeOS", "5", at)


def test_vendor_times() -> None:
    assert iso_time("2026-11-23T00:00:00", "t") == "2026-11-23T00:00:00+00:00"
    assert iso_time("2026-11-23T09:00:00+09:00", "t") == "2026-11-23T09:00:00+09:00"
    # A UTC time in calendar form is rewritten from its text; other forms formatted.
    assert iso_time("2026-11-23T00:05:00Z", "t") == "2026-11-23T00:05:00+00:00"
    assert iso_time("2026-11-23T000500.1Z", "t") == "2026-11-23T00:05:00.100000+00:00"
    assert iso_time("2026-11-23 00:05:00Z", "t") == "2026-11-23T00:05:00+00:00"
    assert iso_time("2026-11-23T00:06:40.1180000Z", "t") == "2026-11-23T00:06:40.118000+00:00"
    assert iso_time("2026-11-23 00:05:00.0000000", "t") == "2026-11-23T00:05:00+00:00"
    assert iso_time("2026-W47-1T00:05:00Z", "t") == "2026-11-16T00:05:00+00:00"  # a week date
    kst = timezone(timedelta(hours=9))
    assert iso_time("2026-11-23 09:00:00", "t", kst) == "2026-11-23T09:00:00+09:00"
    assert epoch_time(1795392000, "t") == "2026-11-23T00:00:00+00:00"
    assert epoch_time("1795392000123", "t") == "2026-11-23T00:00:00.123000+00:00"
    assert ctime_time("Mon Nov 23 00:15:02 2026 UTC", "t") == "2026-11-23T00:15:02+00:00"
    assert ctime_time("Mon Nov 23 09:15:02 2026", "t", kst) == "2026-11-23T09:15:02+09:00"
    assert ctime_time("Mon Nov  3 09:15:02 2026 +0900", "t", UTC) == "2026-11-03T09:15:02+09:00"
    for bad in ("yesterday", "", None, 12):
        with pytest.raises(Unmappable):
            iso_time(bad, "t")
    with pytest.raises(Unmappable):
        ctime_time("Mon Foo 23 00:15:02 2026", "t")
    with pytest.raises(Unmappable):
        epoch_time("soon", "t")


@given(st.text(alphabet="0123456789 -.:/_MmAa가", max_size=40))
def test_the_masking_shortcut_never_skips_what_mask_text_would_change(text: str) -> None:
    assert masked(text) == mask_text(text)


def test_an_app_id_the_registry_does_not_know_is_a_problem(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("apps:\n  - {app_id: m365-sharepoint, names: [SPO]}\n  - {app_id: jira-clod}\n")
    with pytest.raises(PolicyError) as caught:
        load_mapping(path, load_policy(POLICY))
    [problem] = caught.value.problems
    assert (problem.path, problem.line) == ("apps[1].app_id", 3)
    assert "jira-clod" in problem.reason
    assert load_mapping(path).app_of("SPO") == "m365-sharepoint"  # no policy: not checked
