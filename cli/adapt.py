"""`sepwatch adapt`, and what `replay --format` and `produce --format` share:
files of raw vendor records through the adapters (docs/adapters.md)."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Annotated

import typer
from rich.console import Console
from rich.table import Table

from adapters import ADAPTERS, SOURCES
from adapters.intake import AdaptCounts, LineSink, adapt_records, read_raw
from adapters.mapping import DEFAULT_MAPPING, VendorMapping, load_mapping
from cli.context import err, open_events, policy_of
from schemas import Policy
from schemas.policy_file import PolicyError
from streams.kafka_connection import Broker
from streams.settings import Settings


def _known_source(value: str | None) -> str | None:
    if value is not None and value not in ADAPTERS:
        raise typer.BadParameter(f"{value!r} is none of {', '.join(SOURCES)}")
    return value


FormatOpt = Annotated[
    str | None,
    typer.Option(
        "--format",
        "-f",
        callback=_known_source,
        help="Read raw vendor records of this source instead of canonical events: "
        + ", ".join(SOURCES)
        + ". JSON lines, a JSON array or the vendor's paging envelope (CEF: one a line).",
        show_default=False,
    ),
]
MappingOpt = Annotated[
    Path | None,
    typer.Option(
        "--mapping",
        "-m",
        help="Vendor mapping YAML. Default: $SEPWATCH_MAPPING, "
        "else deploy/policy/vendor-mapping.yaml.",
        show_default=False,
    ),
]


def mapping_for(path: Path | None, policy: Policy | None) -> VendorMapping:
    """The mapping, with the policy's registry; every problem listed, exit 2 if refused."""
    chosen = path or Settings().mapping or DEFAULT_MAPPING
    try:
        return load_mapping(chosen, policy)
    except PolicyError as exc:
        err.print(f"[bold red]mapping refused[/]: {len(exc.problems)} problem(s) in {chosen}")
        for problem in exc.problems:
            err.print(f"  {problem}", markup=False, highlight=False)
        raise typer.Exit(2) from None


def source_of(fmt: str) -> str:
    if fmt not in ADAPTERS:
        err.print(f"[bold red]--format {fmt}[/]: one of {', '.join(SOURCES)}")
        raise typer.Exit(2)
    return fmt


def adapted_lines(
    fmt: str,
    lines: Iterable[bytes],
    mapping: VendorMapping,
    dead_out: LineSink,
    counts: AdaptCounts,
    name: str = "-",
) -> Iterator[bytes]:
    """Canonical JSON lines (with `stream`) for a file of raw records; what
    cannot be mapped goes to `dead_out`, what means nothing is counted."""
    adapter = ADAPTERS[source_of(fmt)]
    for event in adapt_records(adapter, read_raw(lines, adapter, name), mapping, counts, dead_out):
        yield json.dumps(event, ensure_ascii=False).encode() + b"\n"


MAX_REASONS = 20  # dead-letter reasons listed in a summary; the rest summed


def print_counts(fmt: str, counts: AdaptCounts, console: Console = err) -> None:
    """Events by stream, skips by vendor event type, dead letters by reason."""
    table = Table(title=f"{fmt}: {counts.records:,} raw records", title_justify="left")
    table.add_column("outcome")
    table.add_column("what")
    table.add_column("count", justify="right")
    for stream, n in sorted(counts.events.items()):
        table.add_row("event", stream, f"{n:,}")
    for kind, n in counts.skipped.most_common():
        table.add_row("skipped", kind, f"{n:,}")
    reasons = counts.dead_reasons.most_common()
    for reason, n in reasons[:MAX_REASONS]:
        table.add_row("dead letter", reason, f"{n:,}")
    if len(reasons) > MAX_REASONS:
        rest = sum(n for _, n in reasons[MAX_REASONS:])
        table.add_row("dead letter", f"{len(reasons) - MAX_REASONS} other reasons", f"{rest:,}")
    if not reasons:
        table.add_row("dead letter", "none", "0")
    console.print(table)


RegistryPolicyOpt = Annotated[
    Path | None,
    typer.Option(
        "--policy",
        "-p",
        help="Policy whose registry names and domains resolve apps too. "
        "Default: $SEPWATCH_POLICY, else deploy/policy/example.yaml.",
        show_default=False,
    ),
]
AdaptDeadLetterOpt = Annotated[
    str | None,
    typer.Option(
        "--dead-letter",
        help="Where records that cannot be mapped go, one JSON a line with source, "
        "field and reason (masked); - for stderr. "
        "Default: OUT.dead.jsonl, or stderr with --out -.",
        show_default=False,
    ),
]


def adapt_cmd(
    fmt: Annotated[str, typer.Option("--format", "-f", help="Source: " + ", ".join(SOURCES))],
    raw: Annotated[str, typer.Option("--in", "-i", help="Raw vendor records; - for stdin.")],
    output: Annotated[
        str, typer.Option("--out", "-o", help="Canonical events, JSONL; - for stdout.")
    ] = "-",
    mapping: MappingOpt = None,
    policy: RegistryPolicyOpt = None,
    dead_letter: AdaptDeadLetterOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No summary table.")] = False,
) -> None:
    """Turn a file of raw vendor records into canonical events, one a line
    with its `stream` field, checked against the contract: for checking a
    mapping before the records go to Kafka. Records may come inside a
    shipper's envelope (Filebeat, Elastic Agent, Fluent Bit, Vector, Splunk
    HEC, Event Hubs) or the vendor's paging envelope.

    Exit status: 0 when every record became events or a counted skip, 1 when
    any record was dead-lettered, 2 when the input, output or mapping cannot
    be used.

    Example:
    sepwatch adapt --format okta --in okta-2026-11-23.json --out canonical.jsonl
    """

    source = source_of(fmt)
    pol = policy_of(policy)
    mapped = mapping_for(mapping, pol)
    dead_path = dead_letter or ("-" if output == "-" else f"{output}.dead.jsonl")
    raw_file, lines, _ = open_events(raw)
    counts = AdaptCounts()
    adapter = ADAPTERS[source]
    with (
        raw_file,
        lines,
        _writing(dead_path, sys.stderr) as dout,
        _writing(output) as sink,
    ):
        try:
            for event in adapt_records(
                adapter, read_raw(lines, adapter, raw), mapped, counts, dout, validate=True
            ):
                sink.write(json.dumps(event, ensure_ascii=False))
                sink.write("\n")
        except (OSError, EOFError) as exc:  # a truncated .gz, a read error
            err.print(f"[bold red]cannot read[/] {raw}: {exc}", markup=True, highlight=False)
            raise typer.Exit(2) from None
    if not quiet:
        print_counts(source, counts)
        shown = "stderr" if dead_path == "-" else dead_path
        err.print(f"canonical events: {output}   dead letters: {shown}")
    if counts.dead_letters:
        raise typer.Exit(1)


@contextlib.contextmanager
def _writing(path: str, dash: IO[str] | None = None) -> Iterator[IO[str]]:
    """A file to write, or `dash` (stdout) for "-"; exit 2 naming the path if
    it cannot be opened."""
    if path == "-":
        yield dash or sys.stdout
        return
    try:
        out = open(path, "w", encoding="utf-8")  # noqa: SIM115 (closed below)
    except OSError as exc:
        err.print(f"[bold red]cannot write[/] {path}: {exc.strerror}")
        raise typer.Exit(2) from None
    with out:
        yield out


def publish_raw(fmt: str, lines: Iterable[bytes], broker: Broker, prefix: str) -> int:
    """Publish raw records, one record a message, to PREFIXraw.<source>, as a
    connector would (no end-of-input marker: raw topics are live traffic).
    The topic exists (kafka_io.ensure_topics creates it with the others)."""
    from streams.kafka_io import producer
    from streams.topics import Topics

    adapter = ADAPTERS[source_of(fmt)]
    topic = Topics(prefix).raw(adapter.source)
    out = producer(broker)
    sent = 0
    try:
        for record in read_raw(lines, adapter):
            out.send(topic, record.raw)
            sent += 1
        out.flush()
    finally:
        out.close()
    return sent


class DeadLetterTopic:
    """Dead letters of `produce --format`, one JSON line a record on PREFIXdead-letters."""

    def __init__(self, broker: Broker, topic: str) -> None:
        from streams.kafka_io import producer

        self._out = producer(broker)
        self._topic = topic

    def write(self, text: str, /) -> int:
        if text.strip():
            self._out.send(self._topic, text.strip().encode())
        return len(text)

    def close(self) -> None:
        self._out.flush()
        self._out.close()
