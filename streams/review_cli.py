"""`sepwatch review record|list` and `sepwatch report`: the semiannual review.

Registered on the main app in streams/cli.py; the shared helpers (settings,
policy, Elasticsearch errors) are imported from there when a command runs.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

review_app = typer.Typer(
    help="Control reviews (the six-monthly review of the information-security controls): "
    "record one, list them with each entity's next due date.",
    no_args_is_help=True,
)

out = Console()
err = Console(stderr=True)

BrokerOpt = Annotated[
    str | None,
    typer.Option(
        "--broker",
        help="Kafka bootstrap servers. Default: $SEPWATCH_BROKER, else localhost:9092.",
        show_default=False,
    ),
]
PrefixOpt = Annotated[
    str | None,
    typer.Option(
        "--prefix",
        help="Topic prefix. Default: $SEPWATCH_TOPIC_PREFIX, else 'sepwatch.'.",
        show_default=False,
    ),
]
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


@review_app.command("record")
def review_record(
    entity: Annotated[str, typer.Option("--entity", "-e", help="Entity reviewed (HQ, a branch).")],
    completed_at: Annotated[
        str, typer.Option("--completed-at", help="When the review was completed (RFC 3339).")
    ],
    reviewer: Annotated[str, typer.Option("--reviewer", help="Who did the review.")],
    controls: Annotated[
        str,
        typer.Option(
            "--controls", help="Controls reviewed, comma-separated (e.g. SEP-001,SEP-006)."
        ),
    ],
    reported_at: Annotated[
        str | None,
        typer.Option(
            "--reported-at",
            help="When it was reported to the Information Protection Committee. "
            "Record it later by recording the same --completed-at again with it.",
            show_default=False,
        ),
    ] = None,
    broker: BrokerOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """Record a control review: a control_review event on the control-reviews
    topic. The engine reads it: it resets the entity's review clock (SEP-008)
    and is judged for its report to the committee (SEP-009).

    sepwatch review record --entity HQ --completed-at 2026-10-15T17:00:00+09:00
    --reported-at 2026-10-28T10:00:00+09:00 --reviewer "정보보호부 김OO" --controls SEP-001,SEP-006
    """
    from pydantic import ValidationError

    from streams.cli import _settings
    from streams.kafka_io import KafkaUnavailable, ensure_topics
    from streams.report.reviews import keep_forever, new_review, publish
    from streams.topics import Topics

    done = parse_time(completed_at, "--completed-at")
    reported = parse_time(reported_at, "--reported-at") if reported_at else None
    if reported is not None and reported < done:
        err.print("[bold red]--reported-at is before --completed-at[/]")
        raise typer.Exit(2)
    try:
        review = new_review(
            entity, done, reviewer, [c.strip() for c in controls.split(",")], reported
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        err.print(f"[bold red]review refused[/]: {first['loc']}: {first['msg']}")
        raise typer.Exit(2) from None
    settings = _settings(broker=broker, topic_prefix=prefix)
    topics = Topics(settings.topic_prefix)
    try:
        ensure_topics(
            settings.broker, topics, settings.partitions, retention_ms=settings.retention_ms
        )
        keep_forever(settings.broker, topics)
        publish(settings.broker, topics, review)
    except KafkaUnavailable as exc:
        err.print(f"[bold red]cannot record the review[/]: {exc}")
        raise typer.Exit(2) from None
    err.print(
        f"recorded review {review.event_id} of {entity} completed {done.isoformat()}"
        + (f", reported {reported.isoformat()}" if reported else ", not yet reported")
        + f" on {topics.input('control_review')}"
    )


@review_app.command("list")
def review_list(
    entity: Annotated[
        str | None, typer.Option("--entity", "-e", help="Only this entity.", show_default=False)
    ] = None,
    policy: PolicyOpt = None,
    broker: BrokerOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """Control reviews per entity from the control-reviews topic: done on time
    or late, reported to the committee on time or late, and the next due date."""
    from streams.cli import _policy, _settings
    from streams.kafka_io import KafkaUnavailable
    from streams.report.reviews import merge, read_reviews, schedule
    from streams.topics import Topics

    pol = _policy(policy)
    settings = _settings(broker=broker, topic_prefix=prefix)
    try:
        records, skipped = read_reviews(settings.broker, Topics(settings.topic_prefix))
    except KafkaUnavailable as exc:
        err.print(f"[bold red]cannot read the reviews[/]: {exc}")
        raise typer.Exit(2) from None
    now = datetime.now(UTC)
    plan = schedule(merge(records), pol, now=now)
    if entity is not None:
        plan = {k: v for k, v in plan.items() if k == entity}
    table = Table(title="Control reviews", title_justify="left")
    for col in ("entity", "completed (UTC)", "due", "done", "reported (UTC)", "report", "reviewer"):
        table.add_column(col, overflow="fold")
    table.add_column("controls", overflow="fold")
    for name, s in plan.items():
        for j in s.reviews:
            r = j.review
            table.add_row(
                name,
                r.completed_at.strftime("%Y-%m-%d %H:%M"),
                j.due.isoformat(),
                "on time" if j.done_on_time else "[red]late[/]",
                r.reported_at.strftime("%Y-%m-%d %H:%M") if r.reported_at else "",
                j.report.replace("_", " ")
                if j.report in ("on_time", "pending")
                else f"[red]{j.report.replace('_', ' ')}[/]",
                r.reviewer,
                ", ".join(r.controls),
            )
    out.print(table)
    due = Table(title="Next review due", title_justify="left")
    for col in ("entity", "baseline", "last completed", "next due", ""):
        due.add_column(col)
    for name, s in plan.items():
        last = s.reviews[-1].review.completed_at.date().isoformat() if s.reviews else "none"
        late = "[bold red]overdue[/]" if s.overdue(now.date()) else ""
        due.add_row(name, s.baseline.isoformat(), last, s.next_due.isoformat(), late)
    out.print(due)
    if skipped:
        err.print(f"{skipped} record(s) on the topic are not control reviews and were skipped")
