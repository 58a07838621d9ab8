"""`sepwatch devices show|conflicts`: the device identity graph a replay builds.

Registered on the main app in cli/main.py; the policy and the events file
are opened by cli/context.py, as for every command. Alias
values are masked like free text (a hostname can carry a person's name or a
number that identifies them); GUIDs and serials stay readable.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cli.context import open_events, out, policy_of
from detectors import Engine
from detectors.calendar import to_datetime
from detectors.identity import IdentityGraph
from detectors.masking import mask_text
from streams.replay import replay, utc_now

devices_app = typer.Typer(
    help="Device identity learned from posture feeds (detectors/identity.py): which "
    "device an alias names, and the aliases two devices claimed. Read from the graph a "
    "replay of canonical events builds.",
    no_args_is_help=True,
)


EventsOpt = Annotated[
    str,
    typer.Option(
        "--events", "-e", help="Canonical events, JSONL (.gz too), in arrival order; - for stdin."
    ),
]
PolicyOpt = Annotated[
    Path | None,
    typer.Option(
        "--policy",
        "-p",
        help="Policy YAML (identity.alias_ttl). Default: $SEPWATCH_POLICY, else "
        "deploy/policy/example.yaml.",
        show_default=False,
    ),
]


def _graph(events: str, policy: Path | None) -> IdentityGraph:

    pol = policy_of(policy)
    engine = Engine(pol, now=utc_now)
    raw, source, _ = open_events(events)
    with raw, source, open(os.devnull, "w", encoding="utf-8") as nowhere:
        replay(pol, source, nowhere, nowhere, engine=engine, source_name=events)
    return engine.identity


def _when(ts: float) -> str:
    return to_datetime(ts).isoformat()


@devices_app.command("show")
def show_cmd(
    alias: Annotated[str, typer.Argument(help="Any id of a device: Entra, Intune, serial, ...")],
    events: EventsOpt,
    policy: PolicyOpt = None,
) -> None:
    """The device an alias names, and every alias it has, each with when and
    by which source it was last asserted. Exit 1 if no posture named it.

    Example: sepwatch devices show HQ-PC-0142 -e deploy/samples/day.jsonl
    """
    graph = _graph(events, policy)
    if graph.alias(alias) is None:
        out.print(f"{mask_text(alias)}: no posture named this device", markup=False)
        raise typer.Exit(1)
    device = graph.resolve(alias)
    table = Table(title=f"device {mask_text(device)}")
    for column in ("kind", "alias", "last asserted", "source"):
        table.add_column(column)
    for name, held in sorted(graph.aliases_of(device), key=lambda a: (a[1].kind, a[0])):
        pinned = " (devices: entry)" if held.pinned else ""
        table.add_row(held.kind, mask_text(name), _when(held.asserted), held.source + pinned)
    out.print(table)


@devices_app.command("conflicts")
def conflicts_cmd(events: EventsOpt, policy: PolicyOpt = None) -> None:
    """Aliases two devices claimed (a reused hostname, a re-imaged laptop), the
    last 32: each went to the more recent assertion, or to a hand-written entry.

    Example: sepwatch devices conflicts -e deploy/samples/day.jsonl
    """
    found = _graph(events, policy).conflicts
    if not found:
        out.print("no alias was claimed by two devices")
        return
    table = Table(title=f"{len(found)} conflict(s), latest last")
    for column in ("alias", "kind", "held by", "claimed by", "went to", "asserted", "source"):
        table.add_column(column)
    for c in found:
        table.add_row(
            mask_text(c.alias),
            c.kind,
            mask_text(c.held_by),
            mask_text(c.claimed_by),
            mask_text(c.winner),
            _when(c.ts),
            c.source,
        )
    out.print(table)
