"""The report's pages as the committee sees them: the rendered PDF, page by
page (pdftoppm), not only its text. Figures come from a hand-made Report; the
integration test (tests/integration/test_report.py) checks that gathered
figures equal counts made from the findings."""

from __future__ import annotations

import re
import subprocess
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from PIL import Image

from detectors import CATALOGUE
from review.gather import _waivers
from review.model import (
    Change,
    DeviceMeasure,
    MonthCount,
    PeriodFigures,
    Report,
    RuleFigures,
    Sources,
    TopList,
)
from review.period import Period
from review.render import html, write
from schemas.policy_file import load_policy

ROOT = Path(__file__).resolve().parent.parent
POLICY = load_policy(ROOT / "deploy" / "policy" / "example.yaml")
STATUSES = ("open", "acknowledged", "resolved", "waived")
SEVERITIES = ("critical", "high", "medium", "low")
ENTITY = "BR-BUSAN-HU"


def _change(current: int, previous: int) -> Change:
    return Change(current=current, previous=previous, delta=current - previous, percent=None)


def _period(p: Period) -> PeriodFigures:
    return PeriodFigures(
        label=p.label, start=p.start, end=p.end, first_day=p.first_day, last_day=p.last_day
    )


def _rule(rule_id: str, n: int) -> RuleFigures:
    rule = CATALOGUE[rule_id]
    empty = TopList(items=[], others=0, exact=True)
    return RuleFigures(
        rule_id=rule_id,
        severity=rule.severity,
        name=rule.title,
        regulation=rule.regulation,
        count=_change(n, n + 3),
        by_status={"open": n, "acknowledged": 0, "resolved": 0, "waived": 0},
        by_month=[MonthCount(month=m, count=0) for m in Period(2026, 2).months()],
        resolved=0,
        resolved_timed=0,
        median_minutes_to_resolve=None,
        top_users=empty,
        top_devices=empty,
        top_apps=empty,
        open_count=n,
        oldest_open=[],
    )


def _devices(entity: str) -> DeviceMeasure:
    return DeviceMeasure(
        entity=entity,
        internal_accesses=1200,
        failing_posture=12,
        unknown_posture=30,
        noncompliant=42,
        compliant=1158,
        compliant_share=1158 / 1200,
        note=None,
    )


def report(lang: str = "ko", entity: str | None = ENTITY) -> Report:
    period = Period(2026, 2)
    rules = [_rule(r, 1234) for r in CATALOGUE]
    return Report(
        generated_at=datetime(2026, 12, 1, 9, 0, tzinfo=UTC),
        as_of=date(2026, 12, 1),
        lang=lang,
        entity=entity,
        period=_period(period),
        previous_period=_period(period.previous),
        sources=Sources(
            findings_index="sepwatch-findings",
            access_index="sepwatch-findings-accesses",
            reviews_topic="sepwatch.control-reviews",
            policy="example.yaml",
        ),
        empty=False,
        total=_change(9 * 1234, 9 * 1237),
        by_status={s: _change(1234, 1000) for s in STATUSES},
        by_severity={s: _change(1234, 1000) for s in SEVERITIES},
        by_rule={r.rule_id: r.count for r in rules},
        by_month=[MonthCount(month=m, count=10) for m in period.months()],
        rules=rules,
        entities=[],
        devices=[_devices(entity)] if entity else [_devices("HQ"), _devices("BR-SEOUL-GN")],
        devices_all=_devices(entity or "*"),
        apps=[],
        expiring=[],
        waivers=_waivers(POLICY, period, None, {"WV-2026-021": 3}, None),
        reviews=[],
        reviews_due=[],
        open_total=0,
        appendix=[],
        appendix_truncated=0,
    )


@pytest.fixture(scope="module")
def pdf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report")
    return write(report(), out)["report.pdf"]


def _text(pdf: Path, *how: str) -> str:
    done = subprocess.run(
        ["pdftotext", *how, str(pdf), "-"], capture_output=True, check=True, timeout=60
    )
    return done.stdout.decode()


def _pages(pdf: Path, tmp: Path) -> list[Path]:
    subprocess.run(
        ["pdftoppm", "-png", "-r", "100", str(pdf), str(tmp / "page")], check=True, timeout=120
    )
    return sorted(tmp.glob("page*.png"))


def test_the_style_sheet_reaches_the_page_unescaped() -> None:
    # `<style>{{ css }}</style>` autoescaped its quotes to &#34;: no page numbers, serif fonts.
    page = html(report())
    assert 'counter(page) " / " counter(pages)' in page
    assert '"Noto Sans CJK KR"' in page
    assert "&#34;" not in page.split("</style>")[0]


def test_every_page_is_numbered_in_its_bottom_right_corner(pdf: Path, tmp_path: Path) -> None:
    pages = _pages(pdf, tmp_path)
    assert len(pages) >= 3
    for png in pages:
        with Image.open(png) as image:
            gray = image.convert("L")
            width, height = gray.size
            # The bottom margin (16 mm of 297) right of the middle holds "n / N" and nothing else.
            corner = gray.crop((width // 2, int(height * 0.955), width, height))
            inked = sum(corner.histogram()[:192])  # 8 pt grey digits, anti-aliased
            assert inked > 20, f"{png.name}: no page number in the bottom-right corner"


def test_the_pdf_is_set_in_the_sans_serif_korean_font(pdf: Path) -> None:
    fonts = subprocess.run(
        ["pdffonts", str(pdf)], capture_output=True, check=True, timeout=60
    ).stdout.decode()
    names = [line.split()[0] for line in fonts.splitlines()[2:]]
    assert names and all("Sans" in n and "CJK" in n for n in names), names


def test_korean_header_cells_break_between_words_not_inside_them(pdf: Path) -> None:
    # Pango breaks Hangul between any two syllables: "위험도" was set as "위험" above "도".
    words = subprocess.run(
        ["pdftotext", "-bbox", str(pdf), "-"], capture_output=True, check=True, timeout=60
    ).stdout.decode()
    set_words = set(re.findall(r"<word [^>]*>([^<]*)</word>", words))
    assert {"위험도", "미조치", "직전", "기간"} <= set_words
    assert not {"위험", "미조", "도", "치"} & set_words, sorted(set_words)


def test_the_device_table_lists_one_entity_once(pdf: Path) -> None:
    text = _text(pdf)
    section = text.split("보호조치 충족 단말에서의 접속 비율")[1].split("승인된 예외")[0]
    assert section.count(ENTITY) == 1, section
    every = _text_of(report(entity=None))
    section = every.split("보호조치 충족 단말에서의 접속 비율")[1].split("승인된 예외")[0]
    assert "HQ" in section and "BR-SEOUL-GN" in section and "합계" in section


def _text_of(r: Report) -> str:
    return html(r)


def test_a_waiver_scope_names_the_user_it_covers(pdf: Path) -> None:
    # The policy names the user; masking it to `*********ilot` left the committee guessing.
    assert "user u-hq-ai-pilot, app chatgpt-enterprise" in html(report())
    # pdftotext drops the hyphen where the cell wraps the id (which hyphen
    # depends on the column's width): compared without hyphens.
    flat = "".join(_text(pdf).split()).replace("-", "")  # cell by cell
    assert "useruhqaipilot" in flat and "**ilot" not in flat


def test_an_identifier_shaped_waiver_scope_is_still_masked() -> None:
    waiver = POLICY.waivers[1].model_copy(update={"user_id": "900101-1234567"})
    policy = POLICY.model_copy(update={"waivers": [waiver]})
    [figures] = _waivers(policy, Period(2026, 2), None, {}, None)
    assert "900101-1******" in figures.scope and "1234567" not in figures.scope
