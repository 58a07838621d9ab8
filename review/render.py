"""report.json, report.html (jinja2, charts from matplotlib inlined) and
report.pdf (WeasyPrint, Hangul in Noto Sans CJK) from one set of figures."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from review.i18n import APP_STATUS, SEVERITY, STATUS, TEXT, rule_text
from review.model import MonthCount, Report

FILES = ("report.json", "report.html", "report.pdf")


def _chart(months: list[MonthCount], *, wide: bool) -> str:
    """A bar chart of counts by month, as a PNG data URI (labels carry no
    Hangul, so the chart needs no CJK font)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7.0, 2.4) if wide else (5.0, 1.7), dpi=110)
    try:
        labels = [m.month for m in months]
        values = [m.count for m in months]
        bars = ax.bar(labels, values, color="#1f4e79", width=0.6)
        ax.bar_label(bars, labels=[f"{v:,}" for v in values], fontsize=7, padding=2)
        ax.set_ylim(0, max([*values, 1]) * 1.25)
        ax.tick_params(axis="both", labelsize=7)
        ax.spines[["top", "right"]].set_visible(False)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
    finally:
        plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _duration(minutes: float | None, t: dict[str, str]) -> str:
    if minutes is None:
        return "-"
    whole = int(minutes)
    d, rem = divmod(whole, 1440)
    h, m = divmod(rem, 60)
    parts = [f"{d}{t['days']}" if d else "", f"{h}{t['hours']}" if h else ""]
    parts.append(f"{m}{t['minutes']}" if m or not (d or h) else "")
    text = " ".join(p for p in parts if p)
    return text + (f" 30{t['seconds']}" if minutes != whole else "")


def _words(text: str) -> Markup:
    """Each word unbreakable: Pango may break Hangul between any two syllables
    ("위험/도"), and WeasyPrint has no `word-break: keep-all`, so a cell wraps
    only at spaces."""
    return Markup(" ").join(Markup('<span class="w">%s</span>') % w for w in str(text).split())


def _signed(n: int) -> str:
    return f"+{n:,}" if n > 0 else f"{n:,}"


def _percent(p: float | None) -> str:
    return "-" if p is None else f"{p:+.1f}%"


def _share(s: float | None) -> str:
    return "-" if s is None else f"{100 * s:.1f}%"


def html(report: Report) -> str:
    env = Environment(
        loader=PackageLoader("review", "templates"),
        autoescape=select_autoescape(["j2", "html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    lang = report.lang
    t = TEXT[lang]
    zone = ZoneInfo(report.timezone)
    env.filters.update(
        num=lambda n: "-" if n is None else f"{n:,}",
        signed=_signed,
        words=_words,
        percent=_percent,
        share=_share,
        duration=lambda m: _duration(m, t),
        status=lambda s: STATUS[lang].get(s, s),
        severity=lambda s: SEVERITY[lang].get(s, s),
        app_status=lambda s: APP_STATUS[lang].get(s, s),
        day=lambda d: d.strftime("%Y-%m-%d") if d else "-",
        # Times as people at the bank read them: in the policy's zone.
        minute=lambda d: d.astimezone(zone).strftime("%Y-%m-%d %H:%M") if d else "-",
        stamp=lambda d: d.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z"),
    )
    rules: list[dict[str, Any]] = []
    for r in report.rules:
        name, regulation = rule_text(lang, r.rule_id, r.name, r.regulation)
        rules.append(
            {
                "r": r,
                "name": name,
                "regulation": regulation,
                "chart": _chart(r.by_month, wide=False) if r.count.current else None,
            }
        )
    names = {r.rule_id: rule_text(lang, r.rule_id, r.name, r.regulation)[0] for r in report.rules}
    return env.get_template("report.html.j2").render(
        report=report,
        t=t,
        rules=rules,
        rule_names=names,
        chart=_chart(report.by_month, wide=True),
        css=(Path(__file__).parent / "templates" / "report.css").read_text(encoding="utf-8"),
    )


def write(report: Report, out: Path) -> dict[str, Path]:
    """Write the three files; returns their paths."""
    from weasyprint import HTML

    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in FILES}
    paths["report.json"].write_text(report.model_dump_json(indent=2) + "\n", encoding="utf-8")
    page = html(report)
    paths["report.html"].write_text(page, encoding="utf-8")
    HTML(string=page, base_url=str(out)).write_pdf(paths["report.pdf"])
    return paths
