"""`sepwatch evidence verify`: Elasticsearch checked against the findings and
lifecycle topics (review/evidence.py). Registered on the main app in
cli/main.py."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from cli.context import err, es_client, es_errors, kafka_errors, load_settings, out
from cli.options import BrokerOpt, EsOpt, IndexOpt, PrefixOpt

if TYPE_CHECKING:
    from review.evidence import Verdict

evidence_app = typer.Typer(
    help="Evidence: check the findings and lifecycle records in Elasticsearch against "
    "the Kafka topics they came from.",
    no_args_is_help=True,
)


ReportDigestOpt = Annotated[
    str | None,
    typer.Option(
        "--digest",
        help="A report's evidence digest (report.json `evidence.digest`): checked "
        "against the period's findings on the topic.",
        show_default=False,
    ),
]


@evidence_app.command("verify")
def verify_cmd(
    period: Annotated[str, typer.Option("--period", help="Half-year: 2026H1 or 2026H2.")],
    digest: ReportDigestOpt = None,
    es_url: EsOpt = None,
    index: IndexOpt = None,
    broker: BrokerOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """Check every finding of the period is in Elasticsearch with its content
    unchanged, and every lifecycle record present and intact; print each one
    missing or altered. Exit 0 when all agree, 1 when not, 2 when it cannot tell.

    sepwatch evidence verify --period 2026H2 --digest 3f1c...
    """
    from review.evidence import check, topic_findings, topic_records
    from review.period import Period, PeriodError
    from streams.kafka_io import read_topics
    from streams.topics import Topics

    try:
        p = Period.parse(period)
    except PeriodError as exc:
        err.print(f"[bold red]--period {period}[/]: {exc}")
        raise typer.Exit(2) from None
    settings = load_settings(es_url=es_url, es_index=index, broker=broker, topic_prefix=prefix)
    topics = Topics(settings.topic_prefix)
    with kafka_errors("cannot read the evidence topics"):
        findings = topic_findings(
            (r.value for r in read_topics(settings.kafka, [topics.findings], 600)), p
        )
        records = topic_records(
            (r.value for r in read_topics(settings.kafka, [topics.lifecycle], 600)), p
        )
    with es_errors(settings):
        verdict = check(
            es_client(settings), settings.es_index, p, findings, records, report_digest=digest
        )
    _print_verdict(verdict, p.label, digest is not None)
    if verdict.problems:
        raise typer.Exit(1)


def _print_verdict(verdict: Verdict, period: str, with_digest: bool) -> None:
    """Each problem, the findings written before digests, what was checked."""
    for problem in verdict.problems:
        out.print(problem, markup=False, highlight=False)
    if verdict.before_digests:
        # Not altered, not proven either: a class of its own, counted, never a problem.
        out.print(
            f"{len(verdict.before_digests):,} finding(s) written before digests; not verifiable: "
            "their content matches the topic, but the status and lifecycle kept in the "
            "document then cannot be checked (not in the evidence digest)",
            markup=False,
            highlight=False,
        )
    out.print(
        f"{period}: {verdict.findings:,} findings and {verdict.records:,} lifecycle records "
        f"on the topics; evidence digest {verdict.digest}",
        markup=False,
        highlight=False,
    )
    if verdict.problems:
        out.print(f"{len(verdict.problems)} problem(s): Elasticsearch does not match the evidence")
    else:
        out.print(
            "Elasticsearch matches the evidence"
            + (" and the report's digest" if with_digest else "")
        )
