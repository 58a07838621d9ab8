"""What every command group shares: the settings, the policy, the events file
and the Elasticsearch client, each loaded one way, with one wording of each
refusal (exit 2, never a traceback).

cli/main.py and the command groups beside it (cli/review.py, cli/evidence.py,
...) all import from here; none imports another's helpers, so the imports
run one way: main -> command groups -> context."""

from __future__ import annotations

import contextlib
import gzip
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import typer
from elasticsearch import Elasticsearch
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

from schemas import Policy
from schemas.policy_file import PolicyError, load_policy
from streams.settings import Settings

if TYPE_CHECKING:
    from streams.kafka_io import Replication

out = Console()
err = Console(stderr=True)


def load_settings(**flags: object) -> Settings:
    """Flags that were given win over the environment and the config file."""
    given: dict[str, Any] = {k: v for k, v in flags.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        err.print(f"[bold red]settings refused[/]: {exc.error_count()} problem(s)")
        config = os.environ.get("SEPWATCH_CONFIG", "sepwatch.toml")
        for e in exc.errors(include_url=False, include_input=False):
            where = ".".join(str(p) for p in e["loc"]) or "settings"
            msg = e["msg"].removeprefix("Value error, ")
            if e["type"] == "extra_forbidden":
                msg = f"not a setting (in {config}; `sepwatch --help` names them)"
            err.print(f"  {where}: {msg}", markup=False, highlight=False)
        raise typer.Exit(2) from None


def policy_of(path: Path | None) -> Policy:
    """The policy file given, else the settings' (SEPWATCH_POLICY)."""
    chosen = path or Settings().policy
    try:
        return load_policy(chosen)
    except PolicyError as exc:
        err.print(f"[bold red]policy refused[/]: {len(exc.problems)} problem(s) in {chosen}")
        for problem in exc.problems:
            err.print(f"  {problem}", markup=False, highlight=False)
        raise typer.Exit(2) from None


def open_events(events: str) -> tuple[BinaryIO, BinaryIO | gzip.GzipFile, int | None]:
    """The file (or stdin for -), what to read lines from (through gzip for
    .gz), and its size on disk for a progress bar."""
    try:
        raw: BinaryIO = sys.stdin.buffer if events == "-" else open(events, "rb")  # noqa: SIM115
    except OSError as exc:
        err.print(f"[bold red]cannot read events[/] {events}: {exc.strerror}")
        raise typer.Exit(2) from None
    source = gzip.GzipFile(fileobj=raw) if events.endswith(".gz") else raw
    size = Path(events).stat().st_size if events != "-" else None
    return raw, source, size


def es_client(settings: Settings) -> Elasticsearch:
    """The settings' Elasticsearch, or exit 2 when none is set."""
    from streams.elastic import client, connection_options

    if not settings.es_url:
        err.print("[bold red]no Elasticsearch[/]: set --es-url or SEPWATCH_ES_URL")
        raise typer.Exit(2)
    return client(settings.es_url, request_timeout=10, **connection_options(settings))


@contextlib.contextmanager
def es_errors(settings: Settings) -> Iterator[None]:
    """Elasticsearch's failures as one clear line and exit code 2."""
    from elasticsearch import ApiError, NotFoundError, TransportError

    from streams.elastic import FindingNotFound
    from streams.lifecycle import TransitionRefused

    try:
        yield
    except (FindingNotFound, TransitionRefused) as exc:
        err.print(f"[bold red]refused[/]: {exc}")
        raise typer.Exit(2) from None
    except NotFoundError:
        err.print(f"[bold red]no findings index[/] {settings.es_index} at {settings.es_url} yet")
        raise typer.Exit(2) from None
    except TransportError as exc:
        err.print(
            f"[bold red]Elasticsearch unreachable[/] at {settings.es_url}: {type(exc).__name__} "
            "(start it: deploy/local/elasticsearch.sh up, or set SEPWATCH_ES_URL)"
        )
        raise typer.Exit(2) from None
    except ApiError as exc:
        err.print(f"[bold red]Elasticsearch refused[/]: {exc.meta.status} {exc.message}")
        raise typer.Exit(2) from None


@contextlib.contextmanager
def file_progress(what: str, raw: BinaryIO, size: int | None) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr over an events file's bytes, and the callback
    that moves it: by the file's position, or for a pipe, which cannot tell()
    its position, by the bytes read so far."""
    with Progress(
        TextColumn(f"[bold]{what}[/]"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    ) as bar:
        task = bar.add_task(what, total=size)
        if size is not None:
            yield lambda _: bar.update(task, completed=raw.tell())
        else:
            yield lambda read: bar.update(task, completed=read)


@contextlib.contextmanager
def kafka_errors(what: str) -> Iterator[None]:
    """Kafka out of reach (or refusing) as one line, `what` could not be done,
    and exit code 2."""
    from streams.kafka_io import KafkaUnavailable

    try:
        yield
    except KafkaUnavailable as exc:
        err.print(f"[bold red]{what}[/]: {exc}")
        raise typer.Exit(2) from None


def create_topics(settings: Settings, *, retention_ms: int | None = None) -> Replication:
    """The deployment's topics as the settings ask (kafka_io.ensure_topics:
    what is missing is created, what exists is checked), the evidence topics
    kept SEPWATCH_EVIDENCE_RETENTION_DAYS; `retention_ms`: the other topics'
    retention, when not the settings'."""
    from streams.kafka_io import ensure_topics
    from streams.topics import Topics

    return ensure_topics(
        settings.kafka,
        Topics(settings.topic_prefix),
        settings.partitions,
        retention_ms=settings.retention_ms if retention_ms is None else retention_ms,
        replication_factor=settings.replication_factor,
        min_insync_replicas=settings.min_insync_replicas,
        evidence_retention_ms=settings.evidence_retention_days * 24 * 3600 * 1000,
    )


def published(counts: Mapping[str, int]) -> None:
    """What `produce` sent, by stream."""
    err.print("published " + ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items())))
