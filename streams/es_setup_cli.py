"""`sepwatch elasticsearch setup|roles`: what a secured Elasticsearch needs once,
done with admin credentials, so that the worker runs with a key that may only
write findings.

The split: the admin installs the findings index template (a cluster
privilege, `manage_index_templates`, that would let its holder change any
template) and creates the roles and the worker's API key. The worker then
creates findings, creates the month's index, and deletes expired months,
all within the findings indices (streams.elastic.writer_role); it is run with
SEPWATCH_ES_INSTALL_TEMPLATE=false.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console

from streams.cli_options import EsOpt, IndexOpt

es_app = typer.Typer(
    help="Secured Elasticsearch: install the findings template, the least-privilege "
    "roles and the worker's API key (admin credentials from SEPWATCH_ES_*).",
    no_args_is_help=True,
)

err = Console(stderr=True)

WRITER_ROLE = "sepwatch_findings_writer"
ANALYST_ROLE = "sepwatch_findings_analyst"
READER_ROLE = "sepwatch_findings_reader"


def _roles(index: str) -> dict[str, dict[str, Any]]:
    from streams.elastic import analyst_role, reader_role, writer_role

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
    from streams.cli import _es, _es_errors, _settings
    from streams.elastic import put_template, writer_role

    settings = _settings(es_url=es_url, es_index=index)
    es = _es(settings)
    with _es_errors(settings):
        put_template(es, settings.es_index)
        err.print(f"index template {settings.es_index} installed")
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
    from streams.cli import _settings

    settings = _settings(es_index=index)
    typer.echo(yaml.safe_dump(_roles(settings.es_index), sort_keys=False), nl=False)
