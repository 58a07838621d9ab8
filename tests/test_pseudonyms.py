"""Identifiers in event fields: replaced by keyed pseudonyms at admission
(detectors.pseudonyms), in replay as on the stream; technical ids kept."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from pydantic_core import SchemaValidator

from detectors.masking import _DASHES, identifier_spans, mask_text
from detectors.pseudonyms import (
    _MASK_CLASSES,
    _SEPARATOR,
    PSEUDONYM,
    QUIET,
    Pseudonymiser,
    _clean_pattern,
    identifier_number,
    is_pseudonym_of,
    may_hold_identifier,
    pseudonym,
    pseudonymise_text,
)
from schemas import EventAdapter, SaasAccess
from schemas.policy_file import load_policy
from streams.admission import Admitted, admit
from streams.metrics import OTHER_ENTITY, entity_label, policy_entities
from streams.replay import replay
from tests.test_replay_cli import EXAMPLE

KEY = b"a test key of thirty-two bytes.."
RRN = "850315-1234567"  # made up
CARD = "4111111111111111"  # the well-known test card number
FORMS = {  # one identifier of each kind the masks know, written as people write them
    "rrn": RRN,
    "rrn_bare": "8503151234567",
    "rrn_spaced": "850315 - 1234567",
    "rrn_fullwidth": "８５０３１５－１２３４５６７",
    "alien": "900101-5234567",
    "passport": "M12345678",
    "passport_2021": "M123A4567",
    "licence": "11-23-456789-01",
    "card": CARD,
    "card_grouped": "4111 1111 1111 1111",
    "account": "110-123-456789",
}
TECHNICAL = [
    "3f2504e0-4f89-11d3-9a0c-030512345678",  # GUID
    "{6B29FC40-CA47-1067-B31D-00DD010662DA}",
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",  # SHA-256
    "d41d8cd98f00b204e9800998ecf8427e",  # MD5
    "d3c0c003000000000000000a",  # Netskope _id (a 12-byte object id)
    "10.0.19045.3803",  # Windows build
    "00u1abcd2EFGH3ijk4x7",  # Okta user id
    "192.168.100.200",
    "2026-11-23",
    "weekly-report_20261123.docx",
    "lt-hq-12868",
]


def digits(text: str) -> str:
    """The identifier without separators, ASCII digits: how a leak is looked for."""
    return "".join(str(int(c)) if c.isdecimal() else c for c in text if c.isalnum())


def access(**over: Any) -> dict[str, Any]:
    return {
        "stream": "saas_access",
        "event_id": "a1",
        "timestamp": "2026-06-10T09:56:00Z",
        "entity": "HQ",
        "user_id": "u1",
        "device_id": "d1",
        "saas_app": "docs",
        "action": "upload",
        "network_zone": "internal",
        "source": "test",
        **over,
    }


def dlp(**over: Any) -> dict[str, Any]:
    return {
        "stream": "dlp_alert",
        "event_id": "d1",
        "timestamp": "2026-06-10T10:00:00Z",
        "entity": "HQ",
        "user_id": "u1",
        "device_id": "d1",
        "channel": "web",
        "data_types": ["kr_rrn"],
        "match_count": 1,
        "source": "test",
        **over,
    }


# -- the pseudonym -----------------------------------------------------------


@pytest.mark.parametrize("form", [f for k, f in FORMS.items() if k.startswith("rrn")])
def test_an_identifier_has_one_pseudonym_however_it_is_written(form: str) -> None:
    assert pseudonym(KEY, form) == pseudonym(KEY, RRN)
    assert pseudonymise_text(KEY, form) == pseudonym(KEY, RRN)


def test_a_pseudonym_is_keyed_letters_only_and_left_alone_by_the_masks() -> None:
    p = pseudonym(KEY, RRN)
    assert PSEUDONYM.fullmatch(p) and not re.search(r"[0-9]", p)
    assert pseudonym(b"another key of thirty-two bytes.", RRN) != p
    assert pseudonym(KEY, "850315-1234568") != p
    assert mask_text(p) == p and identifier_spans(p) == []
    assert pseudonymise_text(KEY, p) == p, "pseudonymising again keeps it"


def test_a_candidate_is_confirmed_against_a_pseudonym() -> None:
    p = pseudonym(KEY, RRN)
    assert is_pseudonym_of(KEY, "8503151234567", p)
    assert not is_pseudonym_of(KEY, "850315-1234568", p)
    assert not is_pseudonym_of(b"another key of thirty-two bytes.", RRN, p)


@pytest.mark.parametrize("kind", sorted(FORMS))
def test_every_kind_the_masks_know_is_pseudonymised_in_place(kind: str) -> None:
    out = pseudonymise_text(KEY, f"user {FORMS[kind]}@bank.example")
    assert re.fullmatch(r"user pii-[b-t]{20}@bank\.example", out), out
    assert digits(FORMS[kind]) not in digits(out)


@pytest.mark.parametrize("value", TECHNICAL)
def test_technical_identifiers_stay_as_they_are(value: str) -> None:
    assert pseudonymise_text(KEY, value) is value
    event = EventAdapter.validate_python(access(device_id=value, event_id=value))
    assert Pseudonymiser(KEY).event(event) == (event, ())


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.text(alphabet=st.sampled_from("0123456789０１２３４５６７８９٣-‐－. \tMAx_@"), max_size=40)
)
def test_the_quick_test_misses_nothing_the_masks_find(text: str) -> None:
    """may_hold_identifier (and the shapes the pseudonymiser keeps) must say
    yes wherever the masks find an identifier, or one would pass raw."""
    if identifier_spans(text):
        assert may_hold_identifier(text), text
        assert not Pseudonymiser(KEY)._clean_text(text), text


@settings(max_examples=400)
@given(
    st.lists(
        st.sampled_from(
            [
                *("850315", "1234567", "2026-11-23", "T09:56:00", "4111", "M", "A", "T", "x"),
                *"0123456789 -.:#_@/\t\x1c",
            ]
        ),
        max_size=16,
    ).map("".join)
)
def test_a_class_shape_the_masks_find_nothing_in_holds_nothing(text: str) -> None:
    """Clean text is known by its class shape: wherever the masks find an
    identifier in ASCII text, they find one in its shape, so no text is
    passed as clean because another of its shape was."""
    if identifier_spans(text):
        shape = text.encode().translate(_MASK_CLASSES).decode()
        assert identifier_spans(shape), (text, shape)
        assert not Pseudonymiser(KEY)._clean_text(text), text


# -- events ------------------------------------------------------------------


PLANTED = [  # an identifier in each field, and where it is counted
    ({"user_id": RRN}, "user_id"),
    ({"device_id": CARD}, "device_id"),
    ({"entity": RRN}, "entity"),
    ({"saas_app": CARD}, "saas_app"),
    ({"event_id": f"evt-{RRN}"}, "event_id"),
    ({"source": RRN}, "source"),
    ({"src_ip": CARD}, "src_ip"),
    ({"object": {"name": f"{RRN}.xlsx"}}, "object.name"),
    ({"auth": {"mfa": True, "method": f"otp {CARD}"}}, "auth"),
    ({"auth": {"mfa": True, "factor": {"phone": RRN}}}, "auth"),
    ({"shared_with_domain": f"{RRN}.example"}, "shared_with_domain"),
    ({"vendor_user": {"id": RRN}}, "extra"),
    ({RRN: "x"}, "extra"),
]


@pytest.mark.parametrize(("over", "label"), PLANTED)
def test_an_identifier_in_any_field_is_replaced_and_counted(
    over: dict[str, Any], label: str
) -> None:
    event = EventAdapter.validate_python(access(**over))
    admitted, fields = Pseudonymiser(KEY).event(event)
    assert fields == (label,)
    text = admitted.model_dump_json()
    assert digits(RRN) not in digits(text) and digits(CARD) not in digits(text)
    assert pseudonym(KEY, RRN) in text or pseudonym(KEY, CARD) in text
    assert EventAdapter.validate_json(text) == admitted, "the stages read it back alike"


def test_a_device_alias_holding_an_identifier_is_replaced() -> None:
    """A posture's aliases (a serial that is a card number) are fields too."""
    posture = EventAdapter.validate_python(
        {
            "stream": "device_posture",
            "event_id": "p1",
            "timestamp": "2026-06-10T09:56:00Z",
            "entity": "HQ",
            "device_id": "lt-hq-00001",
            "managed": True,
            "edr_running": None,
            "disk_encrypted": None,
            "screen_lock": None,
            "os_patch_age_days": None,
            "device_aliases": [
                {"kind": "hostname", "value": "lt-hq-00001"},
                {"kind": "serial", "value": CARD},
            ],
        }
    )
    admitted, fields = Pseudonymiser(KEY).event(posture)
    assert fields == ("device_aliases",)
    assert digits(CARD) not in digits(admitted.model_dump_json())
    assert [a.value for a in admitted.device_aliases or []] == ["lt-hq-00001", pseudonym(KEY, CARD)]


def test_a_pseudonym_too_long_for_its_field_is_refused() -> None:
    event = EventAdapter.validate_python(dlp(data_types=[("x" * 120) + RRN[:6]]))
    assert Pseudonymiser(KEY).event(event) == (event, ())
    long_name = EventAdapter.validate_python(dlp(entity=("x" * 110) + " " + CARD))
    with pytest.raises(Exception, match="128"):
        Pseudonymiser(KEY).event(long_name)


def _replay(events: list[dict[str, Any]], key: bytes = KEY) -> tuple[str, str, Any]:
    out, dead = io.StringIO(), io.StringIO()
    lines = [json.dumps(e, ensure_ascii=False).encode() for e in events]
    summary = replay(load_policy(EXAMPLE), lines, out, dead, pseudonyms=Pseudonymiser(key))
    return out.getvalue(), dead.getvalue(), summary


def test_a_dlp_alert_and_its_upload_by_the_same_rrn_still_correlate() -> None:
    found, _, summary = _replay([access(user_id=RRN), dlp(user_id="8503151234567")])
    findings = [json.loads(line) for line in found.splitlines()]
    (finding,) = [f for f in findings if f["rule_id"] == "SEP-003"]
    assert finding["evidence_event_ids"] == ["d1", "a1"]
    assert finding["user_id"] == pseudonym(KEY, RRN)
    assert pseudonym(KEY, RRN) in finding["summary"]
    assert all(f["user_id"] == pseudonym(KEY, RRN) for f in findings)
    assert digits(RRN) not in digits(found)
    assert summary.pseudonymised == {"user_id": 2}


STRING_FIELDS = {
    "saas_access": ["event_id", "entity", "user_id", "device_id", "saas_app", "src_ip", "source"],
    "dlp_alert": ["event_id", "entity", "user_id", "device_id", "saas_app", "source"],
}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    stream=st.sampled_from(sorted(STRING_FIELDS)),
    data=st.data(),
    kind=st.sampled_from(sorted(FORMS)),
    around=st.sampled_from(["{}", "u-{}", "{}@bank.example", "EMP {} (HR)"]),
)
def test_no_raw_identifier_reaches_findings_dead_letters_or_logs(
    stream: str, data: st.DataObject, kind: str, around: str
) -> None:
    """Planted in any string field (or as a vendor field, or a file name), in
    any written form: nothing raw comes out, whatever the rules make of it."""
    planted = around.format(FORMS[kind])
    nested = ["object.name", "extra"] + (["auth.method"] if stream == "saas_access" else [])
    where = data.draw(st.sampled_from([*STRING_FIELDS[stream], *nested]))
    event = access() if stream == "saas_access" else dlp(channel="saas_upload", saas_app="docs")
    if where == "object.name":
        event["object"] = {"name": f"{planted}.xlsx"}
    elif where == "auth.method":
        event["auth"] = {"mfa": False, "method": planted}
    elif where == "extra":
        event["vendor"] = {"actor": planted}
    else:
        event[where] = planted
    # The other half of a correlation, and one that is refused (its time).
    events = [
        event,
        access(event_id="a2", user_id=event["user_id"]),
        {**event, "timestamp": "1969-01-01T00:00:00Z"},
    ]
    logs = io.StringIO()
    handler = logging.StreamHandler(logs)
    logging.getLogger().addHandler(handler)
    try:
        found, dead, summary = _replay(events)
    finally:
        logging.getLogger().removeHandler(handler)
    raw = digits(FORMS[kind])
    for name, text in (("findings", found), ("dead letters", dead), ("logs", logs.getvalue())):
        assert raw not in digits(text), f"{kind} in {where} reached the {name}"
        assert FORMS[kind] not in text
    assert sum(summary.pseudonymised.values()) >= 1


# -- the check made while parsing ---------------------------------------------

CLEAN_TEXT = SchemaValidator({"type": "str", "pattern": _clean_pattern()})
ORDINARY = [  # the ids, users, devices, addresses and file names of the benchmark's file
    "okta-11-ev0049540",
    "u-hq-12868",
    "lt-hq-12868",
    "m365-sharepoint",
    "192.0.2.89",
    "IT운영_현황 v4.pdf",
    "weekly-report_20261123.docx",
    "password, push notification",
]


def parses_clean(text: str) -> bool:
    """Whether pydantic-core's check of a string, as `clean_events` makes it, passes it."""
    try:
        CLEAN_TEXT.validate_python(text)
    except ValidationError:
        return False
    return True


CHUNKS = [
    *("850315", "1234567", "12345678", "123", "4567", "2026-11-23", "4111", "19045"),
    *("M", "A", "x", "T", "192.168.1.1", "10.0.", "０１２３", "٣٤", "2021"),
    *"0123456789 -.:#_@/\t\x1c\u3000‐－．",
]


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.sampled_from(CHUNKS), max_size=14).map("".join)
    | st.text(alphabet=st.sampled_from("0123456789０١ -‐－.．\t\x1cMAax_"), max_size=40)
)
def test_the_check_while_parsing_passes_no_text_the_masks_find_an_identifier_in(
    text: str,
) -> None:
    """The pattern pydantic-core matches every string against while parsing
    (detectors.pseudonyms, "Known clean at parsing") passes only text in
    which the masks find nothing: what it passes is not looked at again."""
    if parses_clean(text):
        assert identifier_spans(text) == [], text


def test_the_check_while_parsing_reads_every_digit_and_separator_the_masks_read() -> None:
    """Its separators are the masks' in ASCII, and the other text it passes
    (QUIET) holds no digit, space or dash of any script."""
    chars = [chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF]
    read = [c for c in chars if re.fullmatch(r"[\d\s.\-]", c) or c in _DASHES + "\uff0e"]
    ascii_separators = {c for c in read if c.isascii() and not c.isdigit()}
    assert ascii_separators == {
        chr(c) for c in range(128) if re.fullmatch(f"[{_SEPARATOR}]", chr(c))
    }
    quiet = re.compile(re.sub(r"\\x\{(\w+)\}", lambda m: f"\\u{int(m[1], 16):04x}", f"[{QUIET}]"))
    assert not [c for c in read if quiet.fullmatch(c)]
    assert all(quiet.fullmatch(c) for c in "운영현황정보보호부이과장ÀéßΩЖ漢字かなカナ")


@pytest.mark.parametrize("kind", sorted(FORMS))
def test_the_check_while_parsing_refuses_every_kind_the_masks_know(kind: str) -> None:
    assert not parses_clean(f"user {FORMS[kind]}@bank.example")
    assert parses_clean("user pii-kdtrbnqhsmfcgplktrbc@bank.example")


@pytest.mark.parametrize("value", ORDINARY)
def test_ordinary_ids_and_names_are_known_clean_while_parsing(value: str) -> None:
    """What keeps admission fast: the ordinary events are never looked at in Python."""
    raw = json.dumps(access(user_id=value, object={"name": value}), ensure_ascii=False).encode()
    event, clean = Pseudonymiser(KEY).validate_json(raw)
    assert clean and event == EventAdapter.validate_json(raw)


@pytest.mark.parametrize(("over", "label"), PLANTED)
def test_a_record_holding_an_identifier_is_not_known_clean(
    over: dict[str, Any], label: str
) -> None:
    raw = json.dumps(access(**over)).encode()
    event, clean = Pseudonymiser(KEY).validate_json(raw)
    assert not clean and event == EventAdapter.validate_json(raw)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    field=st.sampled_from(["event_id", "entity", "user_id", "device_id", "saas_app", "src_ip"]),
    text=st.lists(st.sampled_from(CHUNKS), min_size=1, max_size=10).map("".join),
)
def test_a_record_known_clean_is_one_the_pseudonymiser_finds_nothing_in(
    field: str, text: str
) -> None:
    raw = json.dumps(access(**{field: text}), ensure_ascii=False).encode()
    try:
        event, clean = Pseudonymiser(KEY).validate_json(raw)
    except ValidationError:
        return  # blank, or too long: refused alike either way
    if clean:
        assert Pseudonymiser(KEY).event(event) == (event, ())


# -- numbers -------------------------------------------------------------------

VENDORS = Path(__file__).parent / "fixtures" / "vendors"
# Epoch times in seconds and milliseconds as published vendor records carry
# them (elastic/integrations' pipeline test records), where they are names.
PUBLISHED = [
    "netskope-alerts-v2-elastic.jsonl",
    "netskope-events-v2-elastic.jsonl",
    "slack-audit.log",
]
VENDOR_TIMES = sorted(
    {
        (name, int(value))
        for f in PUBLISHED
        for name, value in re.findall(r'"(\w+)" ?: ?(\d{10}|\d{13})\b', (VENDORS / f).read_text())
    }
)


@pytest.mark.parametrize(
    ("extra", "raw"),
    [
        ({"vendor_card": int(digits(CARD))}, digits(CARD)),
        ({"card": {"pan": 5555555555554444}}, "5555555555554444"),
        ({"holders": [{"rrn": 8503151234567}]}, "8503151234567"),
        # An RRN that, read as milliseconds, is a time (2023-11-26): not in a time's field.
        ({"resident_no": 1701011234567}, "1701011234567"),
        ({"auth": {"mfa": True, "card_no": 4111111111111111}}, CARD),
    ],
)
def test_a_card_or_rrn_sent_as_a_json_number_is_replaced(extra: dict[str, Any], raw: str) -> None:
    line = json.dumps(access(**extra)).encode()
    decision = admit(line, where={"file": "t", "line": 1}, pseudonyms=Pseudonymiser(KEY))
    assert isinstance(decision, Admitted)
    text = decision.record.decode()
    assert raw not in digits(text) and pseudonym(KEY, raw) in text
    assert decision.pseudonymised == ("auth" if "auth" in extra else "extra",)


def test_vendor_epoch_times_account_numbers_and_record_ids_stay_numbers() -> None:
    assert any(len(str(v)) == 13 for _, v in VENDOR_TIMES), "a time in milliseconds among them"
    kept = {
        **{f"{name}_{i}": value for i, (name, value) in enumerate(VENDOR_TIMES)},
        "timestamp": 1701011234567,  # a time in milliseconds that reads as an RRN's date
        "completed_at": 278284214465937,  # passes the Luhn check, in a time's field
        "account": 110123456789,  # an account number: not read from a number
        "dlp_incident_id": 8254116512347895412,  # Netskope's, published
        "request_id": 1000000000000000000,
        "session_id": 913888259765,
    }
    event = EventAdapter.validate_python(
        access(vendor=kept, **{f"vendor_{name}": value for name, value in kept.items()})
    )
    assert Pseudonymiser(KEY).event(event) == (event, ())
    assert not identifier_number(1673631621862, "action_timestamp")


def test_a_number_the_contract_names_is_not_read() -> None:
    event = EventAdapter.validate_python(
        dlp(match_count=4111111111111111, object={"name": "a.txt", "size": 4111111111111111})
    )
    assert Pseudonymiser(KEY).event(event) == (event, ())


# -- metric labels -----------------------------------------------------------


def test_the_entity_label_takes_only_entities_the_policy_names() -> None:
    named = policy_entities(load_policy(EXAMPLE))
    assert {"HQ", "SUB-VN", "BR-BUSAN-HU"} <= named
    assert entity_label("HQ", named) == "HQ"
    assert entity_label(RRN, named) == OTHER_ENTITY
    assert entity_label(pseudonym(KEY, RRN), named) == OTHER_ENTITY


def test_a_saas_access_keeps_its_type() -> None:
    event = EventAdapter.validate_python(access(user_id=RRN))
    admitted, _ = Pseudonymiser(KEY).event(event)
    assert isinstance(admitted, SaasAccess) and admitted.user_id == pseudonym(KEY, RRN)


# -- the command line ----------------------------------------------------------

SETTINGS_KEY = "a bank's own key, thirty-two chars"


def test_pseudonym_check_confirms_a_candidate_read_from_stdin(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from typer.testing import CliRunner

    from cli.main import app

    monkeypatch.setenv("SEPWATCH_PSEUDONYM_KEY", SETTINGS_KEY)
    p = pseudonym(SETTINGS_KEY.encode(), RRN)
    runner = CliRunner()
    yes = runner.invoke(app, ["pseudonym", "check", p, "--stdin"], input="8503151234567\n")
    assert yes.exit_code == 0 and "match" in yes.output and RRN not in yes.output
    no = runner.invoke(app, ["pseudonym", "check", p, "--stdin"], input="850315-1234568\n")
    assert no.exit_code == 1 and "no match" in no.output
    of = runner.invoke(app, ["pseudonym", "of", "--stdin"], input=f"{RRN}\n")
    assert of.exit_code == 0 and of.output.strip() == p
    bad = runner.invoke(app, ["pseudonym", "check", RRN, "--stdin"], input=f"{RRN}\n")
    assert bad.exit_code == 2 and RRN not in bad.output


def test_a_short_key_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from cli.main import app

    monkeypatch.setenv("SEPWATCH_PSEUDONYM_KEY", "too short")
    out = CliRunner().invoke(app, ["pseudonym", "of", "--stdin"], input=f"{RRN}\n")
    assert out.exit_code == 2 and "at least 32 characters" in out.output
    assert "too short" not in out.output


def test_replay_uses_the_settings_key_or_says_its_pseudonyms_are_its_own(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    from typer.testing import CliRunner

    from cli.main import app

    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps(access(user_id=RRN)) + "\n")
    runner = CliRunner()
    args = ["replay", "-p", str(EXAMPLE), "-e", str(events), "-o", str(tmp_path / "f.jsonl")]
    monkeypatch.delenv("SEPWATCH_PSEUDONYM_KEY", raising=False)
    own = runner.invoke(app, args)
    assert own.exit_code == 0 and "match no other run's" in own.output
    monkeypatch.setenv("SEPWATCH_PSEUDONYM_KEY", SETTINGS_KEY)
    keyed = runner.invoke(app, args)
    assert keyed.exit_code == 0 and "user_id 1" in keyed.output
    found = [json.loads(line) for line in (tmp_path / "f.jsonl").read_text().splitlines()]
    assert found and all(f["user_id"] == pseudonym(SETTINGS_KEY.encode(), RRN) for f in found)


def test_findings_show_says_which_values_are_pseudonyms() -> None:
    from cli.pseudonym import pseudonyms_note

    p = pseudonym(KEY, RRN)
    note = pseudonyms_note({"user_id": p, "summary": f"User {p} sent kr_rrn"})
    assert p in note and "sepwatch pseudonym check" in note
    assert pseudonyms_note({"user_id": "u1"}) == ""
