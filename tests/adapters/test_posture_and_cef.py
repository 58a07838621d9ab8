"""osquery and CrowdStrike -> device_posture; CEF DLP -> dlp_alert."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from adapters.cef_dlp import _extension, _extension_by_key, parse_cef
from adapters.mapping import VendorMapping
from tests.adapters.conftest import adapt_file


def test_osquery_differential_and_snapshot_rows(mapping: VendorMapping) -> None:
    run = adapt_file("osquery", "osquery-results.log", mapping)
    got = {e["device_id"]: e for e in run.events}
    pc = got["pc-hq-0142"]  # the hostIdentifier through the device map
    assert pc["timestamp"] == "2026-11-23T00:30:00+00:00"
    assert (pc["managed"], pc["edr_running"], pc["disk_encrypted"], pc["screen_lock"]) == (
        True,
        True,
        True,
        True,
    )
    assert pc["os_patch_age_days"] == 13 and pc["user_id"] == "jiwoo.park@hanbit-bank.example"
    mac = got["gn-mac-0031"]  # snapshot, unixTime as a string
    assert (mac["edr_running"], mac["screen_lock"], mac["user_id"]) == (False, False, None)
    assert mac["os_patch_age_days"] == 69  # 26.0.1 -> 26.0 of 2026-09-15
    assert run.counts.skipped == {"removed row": 1, "query pack/it/usb_devices": 1}
    [letter] = run.dead
    assert letter["field"] == "columns.edr_running"


def test_crowdstrike_zta_signals_decide_the_controls(mapping: VendorMapping) -> None:
    run = adapt_file("crowdstrike", "crowdstrike-zta.json", mapping)
    [win, mac] = run.events
    assert win["device_id"] == "pc-hq-0142"  # the aid through the device map
    assert (win["managed"], win["edr_running"], win["disk_encrypted"], win["screen_lock"]) == (
        True,
        True,
        True,
        True,
    )
    assert win["os_patch_age_days"] == 365  # OS not current
    assert mac["timestamp"] == "2026-11-23T02:05:00+09:00"
    assert (mac["edr_running"], mac["disk_encrypted"]) == (False, False)  # unknown is not met
    [letter] = run.dead
    assert letter["field"] == "aid"


def test_cef_parser_handles_escapes_and_a_syslog_prefix() -> None:
    header, ext = parse_cef(
        r"<134>Nov 23 dlp CEF:0|Fasoo|Data Radar\|Endpoint|5.2|X|Name|6|"
        r"cs1Label=DataTypes cs1=여권번호 msg=a\=b c\\d fname=my file.txt"
    )
    assert header == ["0", "Fasoo", "Data Radar|Endpoint", "5.2", "X", "Name", "6"]
    assert ext == {
        "cs1Label": "DataTypes",
        "cs1": "여권번호",
        "msg": "a=b c\\d",
        "fname": "my file.txt",
    }


# Keys, values, escaped and unescaped "=", runs of spaces, tabs, an ideographic space.
_EXTENSION_PARTS = ["rt", "cs1Label", "_x", "k1", "url", "a/b", "한", "1", "=", "\\=", "\\"]
_EXTENSION_PARTS += [" ", "  ", "\t", "\u3000", ",", "-", ""]


@given(st.lists(st.sampled_from(_EXTENSION_PARTS), max_size=14).map("".join))
def test_cef_extension_split_on_equals_reads_what_the_key_split_reads(text: str) -> None:
    # The fast split hands every line it cannot read exactly to the regex split.
    assert _extension(text) == _extension_by_key(text)


# Values as products write them: words, "=", "\\", "|", newlines, Korean.
_KEYS = st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,8}", fullmatch=True)
_VALUES = st.text(alphabet="ab 1=\\|\n한.", max_size=12).filter(lambda v: v == v.strip())


def _escaped(value: str) -> str:
    return value.replace("\\", "\\\\").replace("=", "\\=").replace("\n", "\\n")


@given(st.dictionaries(_KEYS, _VALUES, max_size=8))
def test_cef_extension_reads_back_what_a_product_wrote(pairs: dict[str, str]) -> None:
    extension = " ".join(f"{k}={_escaped(v)}" for k, v in pairs.items())
    header, ext = parse_cef(f"<134>Nov 23 dlp CEF:0|V|P|1|S|N|5|{extension}")
    assert header == ["0", "V", "P", "1", "S", "N", "5"]
    assert ext == pairs


def test_cef_dlp_alerts_from_korean_products(mapping: VendorMapping) -> None:
    run = adapt_file("cef-dlp", "cef-dlp.log", mapping)
    got = run.by_id()
    upload = got["cef-dlp:PI-2026-000123"]
    assert upload["timestamp"] == "2026-11-23T01:15:02+00:00"
    assert (upload["channel"], upload["saas_app"]) == ("saas_upload", "m365-sharepoint")
    assert upload["data_types"] == ["card_number", "kr_rrn"]
    assert (upload["match_count"], upload["device_id"]) == (14, "pc-hq-0142")
    assert upload["object"] == {"name": "고객명단 2026.xlsx", "size": 48213}
    assert upload["snippet"] == "900101-1******, ****-****-****-1111"
    usb = next(e for e in run.events if e["channel"] == "usb")
    assert usb["timestamp"] == "2026-11-23T10:40:00+09:00"  # the DLP server's local time
    assert usb["data_types"] == ["kr_driver_license", "kr_passport"]
    assert (usb["match_count"], usb["entity"]) == (3, "BR-SEOUL-GN")
    mail = next(e for e in run.events if e["channel"] == "email")
    assert mail["timestamp"] == "2026-11-23T01:41:00.250000+00:00"
    assert mail["data_types"] == ["personal_credit_info"]
    assert run.counts.skipped == {"no data types (AGENT-HB)": 1}
    assert sorted(d["field"] for d in run.dead) == ["(record)", "rt"]
    assert "1234568" not in json.dumps([run.events, run.dead], ensure_ascii=False)
