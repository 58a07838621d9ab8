"""`sepwatch review record|list` and `sepwatch report`: the semiannual review.

Registered on the main app in cli/main.py; the settings, the policy and
Elasticsearch come from cli/context.py, as for every command.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated
from zoneinfo import ZoneInfo

import typer
from rich.table import Table

from cli.context import (
    create_topics,
    err,
    es_client,
    es_errors,
    kafka_errors,
    load_settings,
    out,
    policy_of,
)
from cli.options import BrokerOpt, EsOpt, IndexOpt, PrefixOpt
from streams.settings import Settings

if TYPE_CHECKING:
    from review.model import Report
    from review.period import Period
    from review.reviews import EntitySchedule
    from schemas import ControlReview, Policy
    from streams.topics import Topics

review_app = typer.Typer(
    help="Control reviews (the six-monthly review of the information-security controls): "
    "record one, list them with each entity's next due date.",
    no_args_is_help=True,
)


PolicyOpt = Annotated[
    Path | None,
    typer.Option(
        "--policy",
        "-p",
        help="Policy YAML (review baseline, interval, report days). "
        "Default: $SEPWATCH_POLICY, else deploy/policy/example.yaml.",
        show_default=False,
    ),
]


def _local_day(text: str, zone: str) -> date:
    """`--as-of`: a date as given, or the zone's day of an RFC 3339 time."""
    if len(text.strip()) == 10:
        return parse_time(text, "--as-of").date()
    return parse_time(text, "--as-of").astimezone(ZoneInfo(zone)).date()


def parse_time(text: str, flag: str) -> datetime:
    """An RFC 3339 time with an offset, or a date (00:00 UTC of that day)."""
    try:
        if len(text.strip()) == 10:
            return datetime.combine(date.fromisoformat(text.strip()), datetime.min.time(), UTC)
        t = datetime.fromisoformat(text.strip())
    except ValueError:
        err.print(f"[bold red]{flag} {text}[/]: give an RFC 3339 time (2026-10-15T17:00:00+09:00)")
        raise typer.Exit(2) from None
    if t.tzinfo is None:
        err.print(f"[bold red]{flag} {text}[/]: the time needs an offset (+09:00 or Z)")
        raise typer.Exit(2)
    return t


ReviewEntityOpt = Annotated[
    str, typer.Option("--entity", "-e", help="Entity reviewed (HQ, a branch).")
]
CompletedAtOpt = Annotated[
    str, typer.Option("--completed-at", help="When the review was completed (RFC 3339).")
]
ReviewerOpt = Annotated[str, typer.Option("--reviewer", help="Who did the review.")]
ControlsOpt = Annotated[
    str,
    typer.Option("--controls", help="Controls reviewed, comma-separated (e.g. SEP-001,SEP-006)."),
]
ReportedAtOpt = Annotated[
    str | None,
    typer.Option(
        "--reported-at",
        help="When it was reported to the Information Protection Committee. "
        "Record it later by recording the same --completed-at again with it.",
        show_default=False,
    ),
]


@review_app.command("record")
def review_record(
    entity: ReviewEntityOpt,
    completed_at: CompletedAtOpt,
    reviewer: ReviewerOpt,
    controls: ControlsOpt,
    reported_at: ReportedAtOpt = None,
    broker: BrokerOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """Record a control review: a control_review event on the control-reviews
    topic. The engine reads it: it resets the entity's review clock (SEP-008)
    and is judged for its report to the committee (SEP-009).

    sepwatch review record --entity HQ --completed-at 2026-10-15T17:00:00+09:00
    --reported-at 2026-10-28T10:00:00+09:00 --reviewer "정보보호부 김OO" --controls SEP-001,SEP-006
    """
    from review.reviews import keep_forever, publish
    from streams.topics import Topics

    done = parse_time(completed_at, "--completed-at")
    reported = parse_time(reported_at, "--reported-at") if reported_at else None
    review = _new_review(entity, done, reviewer, controls, reported)
    settings = load_settings(broker=broker, topic_prefix=prefix)
    topics = Topics(settings.topic_prefix)
    with kafka_errors("cannot record the review"):
        create_topics(settings)
        keep_forever(settings.kafka, topics)
        publish(settings.kafka, topics, review)
    err.print(
        f"recorded review {review.event_id} of {entity} completed {done.isoformat()}"
        + (f", reported {reported.isoformat()}" if reported else ", not yet reported")
        + f" on {topics.input('control_review')}"
    )


def _new_review(
    entity: str, done: datetime, reviewer: str, controls: str, reported: datetime | None
) -> ControlReview:
    """The review as the contract has it, or exit 2 saying what is refused."""
    from pydantic import ValidationError

    from review.reviews import new_review

    if reported is not None and reported < done:
        err.print("[bold red]--reported-at is before --completed-at[/]")
        raise typer.Exit(2)
    try:
        return new_review(
            entity, done, reviewer, [c.strip() for c in controls.split(",")], reported
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        err.print(f"[bold red]review refused[/]: {first['loc']}: {first['msg']}")
        raise typer.Exit(2) from None


@review_app.command("list")
def review_list(
    entity: Annotated[
        str | None, typer.Option("--entity", "-e", help="Only this entity.", show_default=False)
    ] = None,
    policy: PolicyOpt = None,
    broker: BrokerOpt = None,
    prefix: PrefixOpt = None,
    es_url: EsOpt = None,
    index: IndexOpt = None,
) -> None:
    """Control reviews per entity from the control-reviews topic: done on time
    or late, reported to the committee on time or late, and the next due date.

    Every entity named by a finding in Elasticsearch is listed too, reviewed or
    not (one with no review is due from the policy's baseline)."""
    from review.reviews import merge, read_reviews, schedule
    from streams.topics import Topics

    pol = policy_of(policy)
    settings = load_settings(broker=broker, topic_prefix=prefix, es_url=es_url, es_index=index)
    with kafka_errors("cannot read the reviews"):
        records, skipped = read_reviews(settings.kafka, Topics(settings.topic_prefix))
    now = datetime.now(UTC)
    plan = schedule(merge(records), pol, _entities_with_findings(settings), now=now)
    if entity is not None:
        plan = {k: v for k, v in plan.items() if k == entity}
    out.print(_reviews_table(plan, pol.timezone))
    out.print(_due_table(plan, pol.timezone, now))
    if skipped:
        err.print(f"{skipped} record(s) on the topic are not control reviews and were skipped")


def _reviews_table(plan: dict[str, EntitySchedule], timezone: str) -> Table:
    """Each review: when done and reported (days and times as the policy
    counts them), whether each was on time, who and what."""
    zone = ZoneInfo(timezone)
    table = Table(title="Control reviews", title_justify="left")
    for col in (
        "entity",
        f"completed ({timezone})",
        "due",
        "done",
        f"reported ({timezone})",
        "report",
        "reviewer",
    ):
        table.add_column(col, overflow="fold")
    table.add_column("controls", overflow="fold")
    for name, s in plan.items():
        for j in s.reviews:
            r = j.review
            table.add_row(
                name,
                r.completed_at.astimezone(zone).strftime("%Y-%m-%d %H:%M"),
                j.due.isoformat(),
                "on time" if j.done_on_time else "[red]late[/]",
                r.reported_at.astimezone(zone).strftime("%Y-%m-%d %H:%M") if r.reported_at else "",
                j.report.replace("_", " ")
                if j.report in ("on_time", "pending")
                else f"[red]{j.report.replace('_', ' ')}[/]",
                r.reviewer,
                ", ".join(r.controls),
            )
    return table


def _due_table(plan: dict[str, EntitySchedule], timezone: str, now: datetime) -> Table:
    """Each entity's next review due, and whether it is overdue today."""
    zone = ZoneInfo(timezone)
    due = Table(title="Next review due", title_justify="left")
    for col in ("entity", "baseline", "last completed", "next due", "state"):
        due.add_column(col)
    for name, s in plan.items():
        last = (
            s.reviews[-1].review.completed_at.astimezone(zone).date().isoformat()
            if s.reviews
            else "none"
        )
        state = "[bold red]overdue[/]" if s.overdue(now.astimezone(zone).date()) else "in time"
        due.add_row(name, s.baseline.isoformat(), last, s.next_due.isoformat(), state)
    return due


def _entities_with_findings(settings: Settings) -> list[str]:
    """The entities the findings name, from Elasticsearch where there is one:
    an entity that never recorded a review is overdue all the same."""
    from elastic_transport import TransportError
    from elasticsearch import ApiError

    from streams.elastic import client, connection_options, finding_entities

    if not settings.es_url:
        return []
    # One try: the reviews are listed either way.
    es = client(settings.es_url, request_timeout=10, max_retries=0, **connection_options(settings))
    try:
        return finding_entities(es, settings.es_index)
    except (ApiError, TransportError) as exc:
        err.print(
            f"[yellow]entities with findings not read[/] ({settings.es_url}: {exc}); "
            "listing the entities of the reviews and the policy only"
        )
        return []


# -- the report ---------------------------------------------------------------


ReportPeriodOpt = Annotated[
    str,
    typer.Option(
        "--period",
        help="Half-year in the policy's time zone: 2026H1 (Jan-Jun) or 2026H2 (Jul-Dec).",
    ),
]
ReportOutOpt = Annotated[Path, typer.Option("--out", "-o", help="Folder for the three files.")]
ReportEntityOpt = Annotated[
    str | None,
    typer.Option("--entity", "-e", help="One entity; default: every entity together, and each."),
]
LangOpt = Annotated[str, typer.Option("--lang", help="ko (default) or en.")]
AsOfOpt = Annotated[
    str | None,
    typer.Option(
        "--as-of",
        help="Date the open items' ages and the next six months' expiries count from. "
        "Default: today in the policy's time zone.",
        show_default=False,
    ),
]
AppendixLimitOpt = Annotated[
    int,
    typer.Option(
        help="At most this many open findings in the appendix (the oldest first; the "
        "report says how many more). Each 1,000 rows cost WeasyPrint about 200 MB.",
        min=0,
    ),
]
ReviewsOpt = Annotated[
    bool,
    typer.Option(
        "--reviews/--no-reviews",
        help="Read the control reviews from the control-reviews topic (needs Kafka).",
    ),
]


def report_cmd(
    period: ReportPeriodOpt,
    out_dir: ReportOutOpt,
    entity: ReportEntityOpt = None,
    lang: LangOpt = "ko",
    as_of: AsOfOpt = None,
    appendix_limit: AppendixLimitOpt = 500,
    reviews: ReviewsOpt = True,
    policy: PolicyOpt = None,
    es_url: EsOpt = None,
    index: IndexOpt = None,
    broker: BrokerOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """The semiannual review for the Information Protection Committee:
    report.html, report.pdf and report.json (the same figures) in --out.

    Built from the findings in Elasticsearch (aggregations), the access tally
    (`sepwatch review accesses`), the policy and the control reviews.

    sepwatch report --period 2026H2 --entity HQ --out out/2026H2-HQ
    """
    from review.period import Period
    from review.render import write

    _check_period_and_lang(period, lang)
    settings = load_settings(es_url=es_url, es_index=index, broker=broker, topic_prefix=prefix)
    policy_path = policy or settings.policy
    pol = policy_of(policy_path)
    asked = ReportAsked(
        half=Period.parse(period, pol.timezone),  # its days are the policy's
        entity=entity,
        lang=lang,
        as_of=_local_day(as_of, pol.timezone) if as_of else None,
        appendix_limit=appendix_limit,
        reviews=reviews,
    )
    with _report_progress() as step:
        figures = _report_figures(settings, pol, str(policy_path), asked, step)
        step("report.json, report.html, report.pdf")
        paths = write(figures, out_dir)
        step("done")
    half = asked.half
    summary = (
        f"no findings in {half.label}"
        if figures.empty
        else f"{figures.total.current:,} findings in {half.label} "
        f"({figures.total.delta:+,} against {half.previous.label}), "
        f"{figures.open_total:,} still open"
    )
    err.print(f"{summary}; wrote " + ", ".join(str(p) for p in paths.values()))


@dataclass(frozen=True)
class ReportAsked:
    """What `sepwatch report` was asked for, checked."""

    half: Period
    entity: str | None
    lang: str
    as_of: date | None
    appendix_limit: int
    reviews: bool


# The report's steps, each moving the bar once: the control reviews, gather's six, the writing.
REPORT_STEPS = 8


@contextlib.contextmanager
def _report_progress() -> Iterator[Callable[[str], None]]:
    """A bar on stderr over the report's steps, and the callback naming the next."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with Progress(
        TextColumn("[bold]report[/] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=err,
        transient=True,
    ) as bar:
        task = bar.add_task("control reviews", total=REPORT_STEPS)
        yield lambda what: bar.update(task, advance=1, description=what)


def _report_figures(
    settings: Settings,
    pol: Policy,
    policy_name: str,
    asked: ReportAsked,
    step: Callable[[str], None],
) -> Report:
    """The report's figures from Elasticsearch, with the control reviews and
    the policy versions the waivers came from (when --reviews); exit 2 when
    there is no findings index."""
    from review.gather import NoFindingsIndex, gather
    from streams.topics import Topics

    es = es_client(settings)
    topics = Topics(settings.topic_prefix)
    records: list[ControlReview] = []
    cited: dict[str, str] | None = None
    if asked.reviews:
        records, cited = _reviews_and_waiver_versions(settings, topics, pol)
    with es_errors(settings):
        try:
            return gather(
                es,
                settings.es_index,
                asked.half,
                policy=pol,
                reviews=records,
                entity=asked.entity,
                lang=asked.lang,
                as_of=asked.as_of,
                appendix_limit=asked.appendix_limit,
                reviews_topic=topics.input("control_review") if asked.reviews else None,
                policy_name=policy_name,
                waiver_versions=cited,
                step=step,
            )
        except NoFindingsIndex:
            err.print(
                f"[bold red]no findings index[/] {settings.es_index} at {settings.es_url}: "
                "nothing was ever stored under that name (check --index)"
            )
            raise typer.Exit(2) from None


def _check_period_and_lang(period: str, lang: str) -> None:
    """`--period` and `--lang` refused (exit 2) before anything is read."""
    from review.i18n import LANGS
    from review.period import Period, PeriodError

    try:
        Period.parse(period)
    except PeriodError as exc:
        err.print(f"[bold red]--period[/]: {exc}")
        raise typer.Exit(2) from None
    if lang not in LANGS:
        err.print(f"[bold red]--lang {lang}[/]: one of {', '.join(LANGS)}")
        raise typer.Exit(2)


def _reviews_and_waiver_versions(
    settings: Settings, topics: Topics, pol: Policy
) -> tuple[list[ControlReview], dict[str, str]]:
    """The control reviews on their topic, and which recorded policy version
    each waiver came from (same broker); exit 2 when Kafka cannot be read."""
    from review.reviews import read_reviews
    from streams.kafka_io import KafkaUnavailable
    from streams.policy_history import in_force, read_versions, waiver_versions

    try:
        records, _ = read_reviews(settings.kafka, topics)
        return records, waiver_versions(in_force(read_versions(settings.kafka, topics.policy)), pol)
    except KafkaUnavailable as exc:
        err.print(
            f"[bold red]cannot read the control reviews and policy versions[/]: {exc} "
            "(or leave them out: --no-reviews)"
        )
        raise typer.Exit(2) from None


@review_app.command("accesses")
def review_accesses(
    events: Annotated[
        Path,
        typer.Option("--events", help="Canonical events, JSONL (or .gz), whole policy days."),
    ],
    policy: PolicyOpt = None,
    es_url: EsOpt = None,
    index: IndexOpt = None,
) -> None:
    """Count internal SaaS accesses per entity, day and app from canonical
    events into the access tally beside the findings: the denominator of the
    report's share of accesses from compliant devices. Days are the policy's
    (its `timezone`, UTC if it names none), as the report's periods are. A day
    loaded again is replaced, not added to."""
    import gzip

    from detectors.calendar import Days
    from review.accesses import count_internal_accesses, store_counts
    from streams.elastic import access_index

    settings = load_settings(es_url=es_url, es_index=index)
    days = Days(policy_of(policy or settings.policy).timezone)
    try:
        raw = events.open("rb")
    except OSError as exc:
        err.print(f"[bold red]cannot read events[/] {events}: {exc.strerror}")
        raise typer.Exit(2) from None
    with raw, gzip.GzipFile(fileobj=raw) if events.suffix == ".gz" else raw as lines:
        counts, bad = count_internal_accesses(lines, days)
    es = es_client(settings)
    with es_errors(settings):
        stored = store_counts(es, settings.es_index, counts)
    err.print(
        f"{sum(counts.values()):,} internal accesses in {stored:,} (entity, day, app) counts "
        f"into {access_index(settings.es_index)}"
        + (f"; {bad:,} lines not valid events" if bad else "")
    )
