"""Options shared by the CLI's commands: one wording of each, everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

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
        help="Topic prefix; runs with different prefixes never see "
        "each other's data. Default: $SEPWATCH_TOPIC_PREFIX, else 'sepwatch.'.",
        show_default=False,
    ),
]

EsOpt = Annotated[
    str | None,
    typer.Option(
        "--es-url",
        help="Elasticsearch URL. Default: $SEPWATCH_ES_URL, else http://localhost:9200.",
        show_default=False,
    ),
]

IndexOpt = Annotated[
    str | None,
    typer.Option(
        "--index",
        help="Alias of the findings indices. Default: $SEPWATCH_ES_INDEX, else sepwatch-findings.",
        show_default=False,
    ),
]

PolicyOpt = Annotated[
    Path | None,
    typer.Option(
        "--policy",
        "-p",
        help="Policy YAML. Default: $SEPWATCH_POLICY, else deploy/policy/example.yaml.",
        show_default=False,
    ),
]
