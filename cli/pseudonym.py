"""`sepwatch pseudonym check|of`: what a pseudonym in a finding stands for,
for someone who holds the deployment's key.

A pseudonym is HMAC-SHA256 of the identifier under the key (detectors.pseudonyms):
it cannot be turned back, by design. "Resolving" one is confirming a candidate
the analyst already has (the customer on the phone, the employee under review):
`check` says whether a value is the pseudonym's identifier, `of` gives the
pseudonym of a value, to search the findings for. No table of identifiers is
kept anywhere, so there is none to leak. The candidate is read from a prompt
or stdin, never from the command line (shell history, `ps`), and is never
printed or logged.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from cli.context import err, load_settings, out
from cli.options import BrokerOpt, PrefixOpt
from detectors.pseudonyms import PSEUDONYM, Pseudonymiser, is_pseudonym_of, pseudonym
from streams.settings import Settings

pseudonym_app = typer.Typer(
    help="Pseudonyms of identifiers found in event fields: confirm a candidate value "
    "(needs the deployment's key: SEPWATCH_PSEUDONYM_KEY, or read from PREFIXpseudonym-key).",
    no_args_is_help=True,
)


StdinOpt = Annotated[
    bool,
    typer.Option("--stdin", help="Read the candidate value from stdin (one line), not a prompt."),
]


def deployment_key(chosen: Settings) -> bytes | None:
    """The settings' key, else the one on the deployment's topic (never
    created here); None if there is neither."""
    from streams.kafka_io import KafkaUnavailable
    from streams.pseudonym_key import read_key, settings_key
    from streams.topics import Topics

    key = settings_key(chosen)
    if key is not None:
        return key
    try:
        return read_key(chosen.kafka, Topics(chosen.topic_prefix), timeout_s=15)
    except KafkaUnavailable as exc:
        err.print(f"[bold red]no pseudonym key[/]: {exc}")
        raise typer.Exit(2) from None


def replay_pseudonyms(chosen: Settings, from_broker: bool) -> Pseudonymiser | None:
    """A replay's pseudonyms: the settings' key, else (given a broker) the
    deployment's topic's. None: neither, and the replay uses a key of its own,
    said on stderr, since its pseudonyms then match no other run's."""
    from streams.pseudonym_key import settings_key

    key = settings_key(chosen) if not from_broker else deployment_key(chosen)
    if key is None:
        err.print(
            "[yellow]pseudonyms[/]: no key (SEPWATCH_PSEUDONYM_KEY, or --broker to read the "
            "deployment's); identifiers found in event fields get pseudonyms of this run "
            "alone, which match no other run's or the stream's"
        )
        return None
    return Pseudonymiser(key)


def pseudonyms_note(document: object) -> str:
    """For people reading a finding: which of its values are pseudonyms, and
    how to confirm one. Empty if none is."""
    found = sorted(set(PSEUDONYM.findall(json.dumps(document, ensure_ascii=False))))
    if not found:
        return ""
    return (
        f"{', '.join(found)}: keyed pseudonym{'s' if len(found) > 1 else ''} of identifiers "
        "found in the events (an RRN, passport, card or account number); the raw values "
        "are kept nowhere. Holding the deployment's key, `sepwatch pseudonym check "
        "PSEUDONYM` confirms a candidate value."
    )


def _required_key(broker: str | None, prefix: str | None) -> bytes:
    key = deployment_key(load_settings(broker=broker, topic_prefix=prefix))
    if key is None:
        err.print(
            "[bold red]no pseudonym key[/]: set SEPWATCH_PSEUDONYM_KEY, or give the "
            "deployment's --broker and --prefix (its workers keep the key there)"
        )
        raise typer.Exit(2)
    return key


def _candidate(stdin: bool) -> str:
    if stdin:
        value = sys.stdin.readline().rstrip("\r\n")
    else:
        value = typer.prompt("candidate value", hide_input=True)
    if not value.strip():
        err.print("[bold red]no candidate value[/] given")
        raise typer.Exit(2)
    return value


@pseudonym_app.command("check")
def check_cmd(
    value: Annotated[str, typer.Argument(help="The pseudonym, e.g. pii-kdtrbnqhsmfcgplktrbc.")],
    stdin: StdinOpt = False,
    broker: BrokerOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """Confirm whether a candidate value (prompted, hidden) is the identifier
    behind a pseudonym. Exit 0: it is; 1: it is not; 2: no key or bad input.

    Written with or without separators, or in full-width digits, a value is
    the same identifier.

    Example:
    echo 850315-1234567 | sepwatch pseudonym check pii-kdtrbnqhsmfcgplktrbc --stdin
    """
    if not PSEUDONYM.fullmatch(value.strip()):
        # Not echoed: it may be the raw value, given in the wrong place.
        err.print("[bold red]not a pseudonym[/]: give pii- and 20 letters, as a finding shows it")
        raise typer.Exit(2)
    key = _required_key(broker, prefix)
    if is_pseudonym_of(key, _candidate(stdin), value):
        out.print(f"match: the candidate is the identifier behind {value.strip()}")
        return
    out.print(f"no match: the candidate is not the identifier behind {value.strip()}")
    raise typer.Exit(1)


@pseudonym_app.command("of")
def of_cmd(
    stdin: StdinOpt = False,
    broker: BrokerOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """The pseudonym of a value (prompted, hidden): what the findings hold
    where an event field held it, to search for (user.id, host.id, ... in
    Elasticsearch).

    Example:
    sepwatch pseudonym of
    """
    key = _required_key(broker, prefix)
    out.print(pseudonym(key, _candidate(stdin)), markup=False, highlight=False)
