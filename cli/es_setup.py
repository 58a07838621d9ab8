"""`sepwatch elasticsearch setup|roles|retention`: what a secured Elasticsearch
needs, done with admin credentials, so that the worker runs with a key that may
only create findings.

The split: the admin installs the findings index template (a cluster
privilege, `manage_index_templates`, that would let its holder change any
template), the lifecycle records' index and the pipeline that stamps their
authenticated user, creates the roles and the worker's API key, and deletes
expired months (`retention`). The worker only creates findings and the
month's index (streams.indices.writer_role); it is run with
SEPWATCH_ES_INSTALL_TEMPLATE=false. Analysts read findings and add lifecycle
records (streams.indices.analyst_role).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from cli.context import err, es_client, es_errors, load_settings
from cli.options import EsOpt, IndexOpt

es_app = typer.Typer(
    help="Secured Elasticsearch: install the findings template, the least-privilege "
    "roles and the worker's API key (admin credentials from SEPWATCH_ES_*).",
    no_args_is_help=True,
)


WRITER_ROLE = "sepwatch_findings_writer"
ANALYST_ROLE = "sepwatch_findings_analyst"
READER_ROLE = "sepwatch_findings_reader"


def _roles(index: str) -> dict[str, dict[str, Any]]:
    from streams.indices import analyst_role, reader_role, writer_role

    return {
        WRITER_ROLE: writer_role(index),
        ANALYST_ROLE: analyst_role(index),
        READER_ROLE: reader_role(index),
    }


@es_app.command("setup")
def setup_cmd(
    es_url: EsOpt = None,
    index: IndexOpt = None,
    roles: Annotated[
        bool,
        typer.Option(
            "--roles/--no-roles",
            help="Also create the writer and analyst roles in Elasticsearch's native "
            "realm (needs its .security index; with file-based roles, see `roles`).",
        ),
    ] = False,
    api_key_file: Annotated[
        Path | None,
        typer.Option(
            "--api-key-file",
            help="Create an API key for the worker with the writer role's privileges "
            "and write it (encoded) to this new file, mode 0600; it is never printed. "
            "Give it to the worker as SEPWATCH_ES_API_KEY.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Install the findings index template with admin credentials; optionally the
    roles and the worker's API key."""
    from streams.elastic import MAPPINGS
    from streams.indices import put_template, writer_role
    from streams.lifecycle import lifecycle_index

    settings = load_settings(es_url=es_url, es_index=index)
    es = es_client(settings)
    with es_errors(settings):
        put_template(es, settings.es_index, settings.es_replicas)
        # Months made before a field was in the template learn it here (strict mappings).
        if es.indices.exists(index=f"{settings.es_index}-*", allow_no_indices=False):
            es.indices.put_mapping(
                index=f"{settings.es_index}-*", properties=MAPPINGS["properties"]
            )
        err.print(
            f"index templates {settings.es_index} and {lifecycle_index(settings.es_index)} "
            "installed"
        )
        if roles:
            for name, body in _roles(settings.es_index).items():
                es.security.put_role(name=name, **body)
                err.print(f"role {name} created")
        if api_key_file is not None:
            key = es.security.create_api_key(
                name=f"sepwatch-worker-{settings.es_index}",
                role_descriptors={WRITER_ROLE: writer_role(settings.es_index)},
            )
            # O_EXCL: an existing key file is never overwritten by a new key.
            fd = os.open(api_key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(key["encoded"] + "\n")
            err.print(f"API key {key['id']} for the worker written to {api_key_file}")


@es_app.command("roles")
def roles_cmd(index: IndexOpt = None) -> None:
    """Print the writer, analyst and reader roles as a roles.yml (Elasticsearch's file
    realm), for nodes whose roles are files rather than the .security index."""

    settings = load_settings(es_index=index)
    typer.echo(yaml.safe_dump(_roles(settings.es_index), sort_keys=False), nl=False)


@es_app.command("retention")
def retention_cmd(
    older_than: Annotated[
        str | None,
        typer.Option(
            "--older-than",
            help="Delete the monthly findings indices whose whole month is older than "
            "this (400d), and the lifecycle records of their findings. "
            "Default: SEPWATCH_ES_RETENTION_DAYS days.",
            show_default=False,
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would be deleted; delete nothing.")
    ] = False,
    es_url: EsOpt = None,
    index: IndexOpt = None,
) -> None:
    """Delete findings past their retention, with admin credentials: the
    worker cannot (its role only creates). Run it from cron or a scheduler.

    sepwatch elasticsearch retention --older-than 400d --dry-run
    """
    from datetime import UTC, datetime

    from schemas.durations import parse_duration
    from streams.elastic import expired_indices
    from streams.lifecycle import lifecycle_index

    settings = load_settings(es_url=es_url, es_index=index)
    days = settings.es_retention_days
    if older_than is not None:
        try:
            days = parse_duration(older_than).days
        except ValueError:
            err.print(f"[bold red]--older-than {older_than}[/]: give a duration such as 400d")
            raise typer.Exit(2) from None
    es = es_client(settings)
    today = datetime.now(UTC).date()
    with es_errors(settings):
        names = list(es.indices.get(index=f"{settings.es_index}-*", allow_no_indices=True))
        expired = expired_indices(names, settings.es_index, today, days)
        for name in expired:
            if not dry_run:
                es.indices.delete(index=name)
            err.print(f"{'would delete' if dry_run else 'deleted'} {name}")
        if expired and not dry_run:
            # The records of findings in the deleted months, by id (a bulk delete:
            # delete-by-query needs a module not every node has).
            cutoff = max(_month_end(n, settings.es_index) for n in expired)
            gone = _delete_records(es, lifecycle_index(settings.es_index), cutoff)
            err.print(f"deleted {gone:,} lifecycle records of findings before {cutoff}")
    err.print(f"{len(expired)} index(es) past {days} days")


def _delete_records(es: Any, name: str, before: str) -> int:
    from elasticsearch.helpers import bulk, scan

    if not es.indices.exists(index=name):
        return 0
    query = {"query": {"range": {"sepwatch.finding_time": {"lt": before}}}, "_source": False}
    deletes = (
        {"_op_type": "delete", "_index": name, "_id": hit["_id"]}
        for hit in scan(es, index=name, query=query, size=2000)
    )
    done, _ = bulk(es, deletes, chunk_size=2000, refresh=True)
    return int(done)


def _month_end(name: str, index: str) -> str:
    year, month = (int(x) for x in name.removeprefix(f"{index}-").split("."))
    return f"{year + month // 12:04d}-{month % 12 + 1:02d}-01T00:00:00Z"
