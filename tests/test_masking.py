"""Masking of identifiers (shared/design/rules.md, "Masking").

A resident or alien registration number keeps its first seven characters
(`YYMMDD-S`) and hides the rest; any other identifier keeps at most its last
four characters. Every number here is made up (shared/context/regulation.md).
"""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.masking import mask_identifier, mask_text

RRN_WEIGHTS = (2, 3, 4, 5, 6, 7, 8, 9, 2, 3, 4, 5)


def rrn_check_digit(first12: str) -> str:
    """The pre-2020 check digit: weights 2..9,2..5, (11 - sum mod 11) mod 10."""
    total = sum(int(d) * w for d, w in zip(first12, RRN_WEIGHTS, strict=True))
    return str((11 - total % 11) % 10)


def made_up_rrn(yymmdd: str, gender: str, serial: str, sep: str = "-") -> str:
    """A made-up registration number of valid shape: YYMMDD, S, 5 digits, check."""
    assert len(yymmdd) == 6 and len(gender) == 1 and len(serial) == 5
    first12 = yymmdd + gender + serial
    return f"{yymmdd}{sep}{gender}{serial}{rrn_check_digit(first12)}"


def luhn_complete(body: str) -> str:
    """Append the Luhn check digit to a made-up card number body."""
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return body + str((10 - total % 10) % 10)


def alnum(text: str) -> str:
    return "".join(c for c in text if c.isalnum())


def revealed(original: str, masked: str) -> str:
    """The letters and digits of `original` still readable in `masked`,
    position by position (for masks that keep the length)."""
    assert len(masked) == len(original), (original, masked)
    return "".join(o for o, m in zip(original, masked, strict=True) if o.isalnum() and o == m)


def assert_keeps_at_most_last_four(original: str, masked: str) -> None:
    shown = revealed(original, masked)
    assert len(shown) <= 4, f"{original!r} -> {masked!r} shows {shown!r}"
    assert alnum(original).endswith(shown), f"{original!r} -> {masked!r} shows {shown!r}"
    # Separators and layout stay, so an analyst still recognises the shape.
    for o, m in zip(original, masked, strict=True):
        assert m == o or (o.isalnum() and m == "*"), (original, masked)


# -- the helpers themselves ------------------------------------------------------


def test_made_up_numbers_have_the_documented_check_digits() -> None:
    # 9,0,0,1,0,1,1,2,3,4,5,6 weighted: 124; 124 mod 11 = 3; (11 - 3) mod 10 = 8.
    assert rrn_check_digit("900101123456") == "8"
    assert made_up_rrn("900101", "1", "23456") == "900101-1234568"
    assert luhn_complete("453201511283036") == "4532015112830366"


# -- resident and alien registration numbers ------------------------------------------


@pytest.mark.parametrize(
    ("raw", "prefix"),
    [
        (made_up_rrn("900101", "1", "23456"), "900101-1"),
        (made_up_rrn("900101", "1", "23456", sep=""), "900101-1"),
        (made_up_rrn("021231", "4", "01234"), "021231-4"),
        (made_up_rrn("021231", "3", "99999", sep=""), "021231-3"),
    ],
    ids=["citizen-dash", "citizen-no-dash", "2000s-dash", "2000s-no-dash"],
)
def test_rrn_keeps_birth_date_and_gender_digit(raw: str, prefix: str) -> None:
    out = mask_text(raw)
    assert out == f"{prefix}******"
    assert raw[-6:] not in out


def test_rrn_example_from_the_design() -> None:
    assert mask_text("900101-1234568") == "900101-1******"
    assert mask_text("9001011234568") == "900101-1******"


@pytest.mark.parametrize("gender", ["5", "6", "7", "8"])
@pytest.mark.parametrize("sep", ["-", ""], ids=["dash", "no-dash"])
def test_alien_registration_number_is_masked_like_an_rrn(gender: str, sep: str) -> None:
    raw = made_up_rrn("850505", gender, "12345", sep=sep)
    out = mask_text(f"외국인등록번호 {raw}")
    assert out == f"외국인등록번호 850505-{gender}******"
    assert raw[-6:] not in out


# -- other identifiers: at most the last four ------------------------------------------


@pytest.mark.parametrize("passport", ["M12345678", "M123A4567", "s98765432", "R000B9999"])
def test_passport_keeps_only_last_four(passport: str) -> None:
    out = mask_text(f"여권번호: {passport} (만료 예정)")
    assert out.startswith("여권번호: ") and out.endswith(" (만료 예정)")
    masked = out.removeprefix("여권번호: ").removesuffix(" (만료 예정)")
    assert_keeps_at_most_last_four(passport, masked)
    assert alnum(passport)[:-4] not in out


@pytest.mark.parametrize("licence", ["11-23-456789-01", "21-19-000123-45", "112345678901"])
def test_drivers_licence_keeps_at_most_last_four(licence: str) -> None:
    out = mask_text(licence)
    assert_keeps_at_most_last_four(licence, out)


CARD = luhn_complete("453201511283036")


@pytest.mark.parametrize(
    "card",
    [
        CARD,
        " ".join(CARD[i : i + 4] for i in range(0, 16, 4)),
        "-".join(CARD[i : i + 4] for i in range(0, 16, 4)),
        luhn_complete("37828224631000"),  # 15 digits
    ],
    ids=["plain", "spaces", "dashes", "15-digits"],
)
def test_card_number_keeps_at_most_last_four(card: str) -> None:
    out = mask_text(f"카드 {card} 결제")
    assert out.startswith("카드 ") and out.endswith(" 결제")
    masked = out.removeprefix("카드 ").removesuffix(" 결제")
    assert_keeps_at_most_last_four(card, masked)
    assert alnum(card)[:8] not in alnum(out)


@pytest.mark.parametrize(
    "account",
    [
        "110-123-456789",  # 12 digits, 3-3-6
        "1002-123-456789",  # 13 digits, 4-3-6
        "3333-01-1234567",  # 13 digits, 4-2-7
        "123-456789-12345",  # 14 digits, 3-6-5
        "123456-01-123456",  # 14 digits, 6-2-6
        "12345678901234",  # 14 digits, no separators
    ],
)
def test_account_number_keeps_at_most_last_four(account: str) -> None:
    out = mask_text(f"입금 계좌 {account} 로 송금")
    assert out.startswith("입금 계좌 ") and out.endswith(" 로 송금")
    masked = out.removeprefix("입금 계좌 ").removesuffix(" 로 송금")
    assert_keeps_at_most_last_four(account, masked)


def test_thirteen_digit_account_number_is_not_taken_for_an_rrn() -> None:
    # 13 digits without separators, but "102112" is no birth date (month 21):
    # it is an account number, so at most its last four digits may remain.
    account = "1021123456789"
    out = mask_text(account)
    assert len(alnum(out).replace("*", "")) <= 4, out
    assert "102112" not in out


# -- what must stay readable ---------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "2026-05-04",
        "20260504",
        "2026.05.04",
        "09:15:02",
        "09:15",
        "2026-05-04T09:15:02Z",
        "2026-05-04T18:15:02+09:00",
        "2026-05-04T09:15:02.123456Z",
        "2026-05-04 09:15:02",
        "2026-05-04 09:15",
        "at 09:15 on 2026-05-04",
        "from 2026-05-04 to 2026-05-05",
    ],
)
def test_dates_and_times_are_not_masked(text: str) -> None:
    assert mask_text(text) == text


def test_text_without_identifiers_is_unchanged() -> None:
    text = "분기 보고서 초안을 SharePoint 에 올렸습니다 (v2, 3쪽). event a-17, user u42."
    assert mask_text(text) == text


def test_korean_text_around_an_identifier_is_kept() -> None:
    rrn = made_up_rrn("900101", "1", "23456")
    text = f"고객 홍길동 주민등록번호 {rrn} 확인 부탁드립니다."
    assert mask_text(text) == "고객 홍길동 주민등록번호 900101-1****** 확인 부탁드립니다."


def test_several_identifiers_in_one_text() -> None:
    rrn = made_up_rrn("900101", "1", "23456")
    alien = made_up_rrn("851130", "6", "54321", sep="")
    card = " ".join(CARD[i : i + 4] for i in range(0, 16, 4))
    parts = {
        "passport": "M123A4567",
        "licence": "11-23-456789-01",
        "account": "110-123-456789",
    }
    text = (
        f"주민 {rrn}, 외국인 {alien}; 여권 {parts['passport']} / 면허 {parts['licence']}"
        f" / 카드 {card} / 계좌 {parts['account']} (2026-05-04 기준)"
    )
    out = mask_text(text)
    assert "900101-1******" in out
    assert "851130-6******" in out
    assert rrn[-6:] not in out and alien[-6:] not in out
    for raw in [*parts.values(), card]:
        assert alnum(raw)[:-4] not in alnum(out), raw
    for kept in (
        "주민 ",
        ", 외국인 ",
        "; 여권 ",
        " / 면허 ",
        " / 카드 ",
        " / 계좌 ",
        "(2026-05-04 기준)",
    ):
        assert kept in out


# -- properties ----------------------------------------------------------------------

CENTURY_DIGITS = {18: "90", 19: "1256", 20: "3478"}


@st.composite
def rrns(draw: st.DrawFn) -> tuple[str, str, str, str]:
    """(the number as written, YYMMDD, S, the six hidden digits)."""
    born = draw(st.dates(min_value=date(1850, 1, 1), max_value=date(2025, 12, 31)))
    gender = draw(st.sampled_from(CENTURY_DIGITS[born.year // 100]))
    serial = f"{draw(st.integers(0, 99_999)):05d}"
    sep = draw(st.sampled_from(["-", ""]))
    yymmdd = born.strftime("%y%m%d")
    raw = made_up_rrn(yymmdd, gender, serial, sep=sep)
    return raw, yymmdd, gender, raw[-6:]


# Free text with no decimal digits, so that nothing but the number is a number.
WORDS = st.text(
    alphabet=st.characters(blacklist_categories=("Nd", "Cs")),
    max_size=40,
)
KOREAN = st.text(alphabet=st.sampled_from("가나다라마바사아자차카타파하 ,.:-()\n"), max_size=20)
AROUND = st.one_of(WORDS, KOREAN)


@settings(max_examples=300, deadline=None)
@given(rrns(), AROUND, AROUND)
def test_property_rrn_in_free_text_never_shows_the_hidden_digits(
    rrn: tuple[str, str, str, str], before: str, after: str
) -> None:
    raw, yymmdd, gender, hidden = rrn
    out = mask_text(before + raw + after)
    kept = f"{yymmdd}-{gender}"
    assert kept + "******" in out
    assert hidden not in out.replace(kept, "", 1)
    # Dashes and digits of other scripts come back as ASCII (mask_text's docstring).
    assert out == mask_text(before) + kept + "******" + mask_text(after)


@settings(max_examples=100, deadline=None)
@given(st.lists(rrns(), min_size=2, max_size=5), st.lists(AROUND.filter(bool), min_size=6))
def test_property_several_rrns_in_one_text(
    numbers: list[tuple[str, str, str, str]], gaps: list[str]
) -> None:
    text = gaps[0] + "".join(n[0] + gap for n, gap in zip(numbers, gaps[1:], strict=False))
    out = mask_text(text)
    for _, yymmdd, gender, _hidden in numbers:
        assert f"{yymmdd}-{gender}******" in out
    digits_left = "".join(c for c in out if c in "0123456789")
    assert digits_left == "".join(yymmdd + gender for _, yymmdd, gender, _ in numbers)


# -- mask_identifier -----------------------------------------------------------------


def test_mask_identifier_examples() -> None:
    assert mask_identifier("900101-1234568") == "900101-1******"
    assert mask_identifier("9001011234568") == "900101-1******"
    out = mask_identifier("acct-110123456789")
    assert out.endswith("6789") and "1101234" not in out
    assert mask_identifier("abc") == "***"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_property_mask_identifier_keeps_at_most_last_four(value: str) -> None:
    # An RRN (13 ASCII digits) keeps its YYMMDD-S prefix instead; see above.
    if sum(c in "0123456789" for c in value) == 13:
        value = value + "x"
    out = mask_identifier(value)
    assert len(out) == len(value)
    start = len(value) - 4
    for i, (o, m) in enumerate(zip(value, out, strict=True)):
        assert m == "*" or (i >= start and m == o), (value, out)
    if len(value) > 4:
        assert out[:start] == "*" * start


# -- technical identifiers an operator needs: readable (issue 14, problem 8) ---------


@pytest.mark.parametrize(
    "text",
    [
        "windows 10.0.22631.2428",  # an OS build (Intune osVersion)
        "osVersion 10.0.26100.7309, agent 7.18.17106.0",
        "Chrome/97.0.4692.99 Safari/537.36",
        "version=10.0.19041.1266&user=65792",  # Zscaler's eurl, elastic/integrations fixture
        "SensitiveType 50842eb7-edc8-4019-85dd-5a5c1f2bb085",
        "{12345678-1234-1234-1234-123456789012}",  # a GUID of decimal digits only
        "md5 deadbeefcafe00000000000000000000",
        "sha256 7d9a763411c73a4c7f85eb1f3cf04d6693696588b3fb3c98e8982bbe4245920c",
        "sha1 2fd4e1c67a2d28fced849ee1bb76e7391b93eb12",
    ],
)
def test_technical_identifiers_stay_readable(text: str) -> None:
    assert mask_text(text) == text


@pytest.mark.parametrize(
    ("text", "hidden"),
    [
        (f"os 10.0.22631.2428 rrn {made_up_rrn('900101', '1', '23456')}", "234568"),
        (f"guid 50842eb7-edc8-4019-85dd-5a5c1f2bb085 card {CARD}", CARD[:12]),
        ("build 10.0.19045.5011 acct 110-123-456789", "110123"),
        ("sha1 2fd4e1c67a2d28fced849ee1bb76e7391b93eb12 passport M12345678", "M1234"),
        ("v 6.1.7601 licence 11-23-456789-01", "112345"),
        # A card written in a version's layout (dots, short first groups): Luhn says card.
        (f"{CARD[:2]}.{CARD[2:4]}.{CARD[4:10]}.{CARD[10:]}", CARD[:10]),
        # A letter before two card numbers: 33 hex digits, no hash's length.
        (f"a{CARD}{CARD}", CARD[:12]),
    ],
)
def test_identifiers_beside_technical_ones_are_still_masked(text: str, hidden: str) -> None:
    out = mask_text(text)
    assert hidden not in alnum(out), out


def test_a_dead_letter_keeps_builds_and_guids_and_hides_the_rrn() -> None:
    from detectors.dead_letters import dead_letter

    raw = (
        b'{"id": "2d3e4f5a-bbbb-4ccc-8ddd-222222222222", "osVersion": "10.0.22631.6100", '
        b'"notes": "owner 900101-1234568"}'
    )
    letter = dead_letter(raw, "intune: lastSyncDateTime: missing", where={})
    assert "2d3e4f5a-bbbb-4ccc-8ddd-222222222222" in letter["raw_masked"]
    assert "10.0.22631.6100" in letter["raw_masked"]
    assert "900101-1******" in letter["raw_masked"] and "1234568" not in letter["raw_masked"]


def test_a_shared_file_name_is_masked_in_the_sep011_summary() -> None:
    from tests import cases

    rrn = made_up_rrn("850315", "1", "23456")
    found = cases.run(
        {
            "events": [
                {
                    "stream": "saas_access",
                    "event_id": "s1",
                    "timestamp": "2026-06-10T10:00:00+09:00",
                    "saas_app": "docs",
                    "action": "share",
                    "share_target": "public",
                    "object": {"name": f"{rrn}.xlsx"},
                }
            ]
        }
    )
    [finding] = [f for f in found if f.rule_id == "SEP-011"]
    assert rrn not in finding.summary and rrn.replace("-", "") not in finding.summary
    assert "850315-1******" in finding.summary
