"""The `sepwatch` command."""

from __future__ import annotations

import functools
import inspect
import json
import sys
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import typer
from pydantic import ValidationError
from rich.table import Table

from adapters.intake import AdaptCounts
from adapters.mapping import VendorMapping
from cli.adapt import (
    FormatOpt,
    MappingOpt,
    adapt_cmd,
    adapted_lines,
    mapping_for,
    print_counts,
)
from cli.context import create_topics, err, file_progress, kafka_errors, out, published
from cli.context import es_client as _es
from cli.context import es_errors as _es_errors
from cli.context import load_settings as _settings
from cli.context import open_events as _open_events
from cli.context import policy_of as _policy
from cli.options import BrokerOpt, EsOpt, IndexOpt, PolicyOpt, PrefixOpt
from detectors import CATALOGUE
from schemas import (
    ControlReview,
    DevicePosture,
    DlpAlert,
    EventAdapter,
    Finding,
    Policy,
    SaasAccess,
)
from streams.replay import ReplaySummary, replay
from streams.settings import Settings

app = typer.Typer(
    name="sepwatch",
    help="Continuous compliance monitor for the network-separation SaaS exception "
    "(Korean Electronic Financial Supervisory Regulation, rev. 2026-04-20).\n\n"
    "Every command reads SEPWATCH_* environment variables and ./sepwatch.toml "
    "(or SEPWATCH_CONFIG) for defaults; flags win.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    # Locals of a failing call may hold a secret (a password, a signing key).
    pretty_exceptions_show_locals=False,
)
policy_app = typer.Typer(help="Validate and inspect policy files.", no_args_is_help=True)
schema_app = typer.Typer(help="JSON Schema of the canonical shapes.", no_args_is_help=True)
findings_app = typer.Typer(
    help="Findings: list, show, acknowledge, resolve and export them (from Elasticsearch), "
    "or export the findings topic.",
    no_args_is_help=True,
)
app.add_typer(policy_app, name="policy")
app.add_typer(schema_app, name="schema")
app.add_typer(findings_app, name="findings")
app.command("adapt")(adapt_cmd)


# -- replay -------------------------------------------------------------------

ReplayEventsOpt = Annotated[
    str,
    typer.Option("--events", "-e", help="Canonical events, JSONL, in arrival order; - for stdin."),
]
ReplayOutOpt = Annotated[
    Path, typer.Option("--out", "-o", help="Where findings go, one JSON a line.")
]
ReplayDeadLetterOpt = Annotated[
    Path | None,
    typer.Option(
        "--dead-letter",
        help="Where bad lines go, with line number and reason. Default: OUT.dead.jsonl",
        show_default=False,
    ),
]
ReplayQuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or table.")]
KeyBrokerOpt = Annotated[
    str | None,
    typer.Option(
        "--broker",
        help="Read the deployment's pseudonym key from this broker's PREFIXpseudonym-key "
        "topic (with --prefix), so pseudonyms match the stream's. Not needed when "
        "SEPWATCH_PSEUDONYM_KEY is set.",
        show_default=False,
    ),
]
PolicyHistoryOpt = Annotated[
    Path | None,
    typer.Option(
        "--policy-history",
        help="Judge each event by the policy version in force at its time, as the "
        "workers did: the versions `sepwatch policy history --json` prints. "
        "Replaces --policy.",
        show_default=False,
    ),
]
ReplayPartitionsOpt = Annotated[
    int | None,
    typer.Option(
        "--partitions",
        min=0,
        help="Compute what a stream of this many partitions finds from `sepwatch "
        "produce` of the file: each input partition's own clock (docs/lateness.md). "
        "Default: the worker's ($SEPWATCH_PARTITIONS, 4); 0: one clock for the file.",
        show_default=False,
    ),
]


@app.command("replay")
def replay_cmd(
    events: ReplayEventsOpt,
    findings: ReplayOutOpt,
    policy: PolicyOpt = None,
    dead_letter: ReplayDeadLetterOpt = None,
    quiet: ReplayQuietOpt = False,
    fmt: FormatOpt = None,
    mapping: MappingOpt = None,
    broker: KeyBrokerOpt = None,
    prefix: PrefixOpt = None,
    policy_history: PolicyHistoryOpt = None,
    partitions: ReplayPartitionsOpt = None,
) -> None:
    """Run the rules over a file of events, exactly as the stream would.

    File order is arrival order; timestamps may be out of order as on a real
    stream. At the end the watermark moves to the last event time and every
    pending decision is made. Bad lines go to the dead-letter file and the run
    goes on. An identifier found in an event field (an RRN as a user id) is
    replaced by its keyed pseudonym, as on the stream: under
    SEPWATCH_PSEUDONYM_KEY, else the deployment's key read with --broker, else
    a key of this run alone.

    Example:
    sepwatch replay -p deploy/policy/example.yaml -e deploy/samples/day.jsonl -o findings.jsonl
    """
    versions = _history_of(policy_history) if policy_history is not None else None
    pol = versions[0].parsed() if versions else _policy(policy)
    mapped = mapping_for(mapping, pol) if fmt is not None else None
    run = _replay_as_the_stream(pol, versions or [], broker, prefix, partitions, events)
    dead_path = dead_letter or Path(f"{findings}.dead.jsonl")
    raw, source, size = _open_events(events)
    counts = AdaptCounts()
    with (
        raw,
        source,
        open(findings, "w", encoding="utf-8") as fout,
        open(dead_path, "w", encoding="utf-8") as dout,
    ):
        lines = (
            adapted_lines(fmt, source, mapped, dout, counts, events)
            if mapped is not None and fmt is not None
            else source
        )
        if quiet or size is None:
            summary = run(lines, fout, dout)
        else:
            with file_progress("replay", raw, size) as moved:
                summary = run(lines, fout, dout, on_progress=moved)
    if not quiet:
        if fmt is not None:
            print_counts(fmt, counts, out)
        _print_summary(summary, findings, dead_path)


def _replay_as_the_stream(
    pol: Policy,
    versions: list[Any],
    broker: str | None,
    prefix: str | None,
    partitions: int | None,
    events: str,
) -> Callable[..., ReplaySummary]:
    """`replay` with what the stream would judge by: the later policy
    versions, the pseudonym key, the partition count and learned identity."""
    from cli.pseudonym import replay_pseudonyms

    settings = _settings(broker=broker, topic_prefix=prefix)
    return functools.partial(
        replay,
        pol,
        source_name=events,
        pseudonyms=replay_pseudonyms(settings, from_broker=broker is not None),
        partitions=settings.partitions if partitions is None else partitions,
        history=[(v.parsed(), v.effective_from.timestamp()) for v in versions[1:]],
        learned_identity=settings.learned_identity,
    )


def _history_of(path: Path) -> list[Any]:
    """Every recorded policy version, the earliest first."""
    from streams.policy_history import read_history_file

    try:
        versions = read_history_file(str(path))
    except OSError as exc:
        err.print(f"[bold red]--policy-history {path}[/]: cannot read: {exc.strerror}")
        raise typer.Exit(2) from None
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(x) for x in first["loc"]) or "line"
        err.print(
            f"[bold red]--policy-history {path}[/]: not a policy history (as `sepwatch "
            f"policy history --json` prints): {where}: {first['msg']}"
        )
        raise typer.Exit(2) from None
    if not versions:
        err.print(f"[bold red]--policy-history {path}[/]: no policy version in it")
        raise typer.Exit(2)
    return versions


def _print_summary(s: ReplaySummary, findings: Path, dead: Path) -> None:
    entities = sorted({e for _, e in s.by_rule_entity})
    table = Table(
        title="Findings by rule and entity",
        caption="sepwatch rules: what each rule checks",
        show_footer=True,
    )
    table.add_column("rule", footer="total")
    table.add_column("severity")
    for e in entities:
        table.add_column(
            e,
            justify="right",
            footer=str(sum(n for (_, x), n in s.by_rule_entity.items() if x == e)),
        )
    table.add_column("all", justify="right", footer=str(s.findings))
    for rule in CATALOGUE.values():
        row = [s.by_rule_entity.get((rule.id, e), 0) for e in entities]
        table.add_row(rule.id, rule.severity, *map(str, row), str(sum(row)))
    out.print(table)
    status = ", ".join(f"{k} {v}" for k, v in sorted(s.by_status.items())) or "none"
    out.print(
        f"{s.events:,} events from {s.lines:,} lines; {s.findings:,} findings ({status}); "
        f"{s.dead_letters:,} dead letters; late events {s.engine_stats.get('events.late', 0):,}; "
        f"sign-ins not saying whether multi-factor {s.engine_stats.get('auth.mfa_unknown', 0):,}"
    )
    if s.pseudonymised:
        fields = ", ".join(f"{k} {v:,}" for k, v in sorted(s.pseudonymised.items()))
        out.print(f"identifiers in event fields, pseudonymised: {fields}")
    out.print(f"findings: {findings}   dead letters: {dead}")


# -- policy -------------------------------------------------------------------


@policy_app.command("check")
def policy_check(
    path: Annotated[Path, typer.Argument(help="Policy YAML file to validate.")],
) -> None:
    """Validate a policy: every problem is listed with file:line, path and reason.

    Exit code 0 when the policy is valid, 2 when it is refused.
    """
    pol = _policy(path)
    out.print(
        f"[green]ok[/] {path}: {len(pol.registry)} registry entries, "
        f"{len(pol.permitted_categories)} category periods, {len(pol.waivers)} waivers"
    )


@policy_app.command("history")
def policy_history_cmd(
    as_json: Annotated[
        bool,
        typer.Option("--json", help="One version a line, whole (for replay --policy-history)."),
    ] = False,
    broker: BrokerOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    """The policy versions the workers loaded, oldest first: when each took
    effect, who loaded it (OS user, host, Kafka principal), its digest and what
    changed in the waivers and the registry.

    sepwatch policy history --json > history.jsonl
    """
    from streams.kafka_io import KafkaUnavailable
    from streams.policy_history import in_force, read_versions
    from streams.topics import Topics

    settings = _settings(broker=broker, topic_prefix=prefix)
    try:
        versions = in_force(read_versions(settings.kafka, Topics(settings.topic_prefix).policy))
    except KafkaUnavailable as exc:
        err.print(f"[bold red]cannot read the policy history[/]: {exc}")
        raise typer.Exit(2) from None
    if as_json:
        for v in versions:
            typer.echo(v.model_dump_json())
        return
    table = Table(title=f"{len(versions)} policy version(s)", title_justify="left")
    for col in ("version", "effective from (UTC)", "loaded by", "digest", "changes"):
        table.add_column(col, overflow="fold")
    for v in versions:
        said = [
            f"{section} {kind} {', '.join(names)}"
            for section, kinds in v.changes.items()
            for kind, names in kinds.items()
            if names
        ]
        by = v.loaded_by
        table.add_row(
            v.version,
            v.effective_from.astimezone(UTC).isoformat(timespec="seconds"),
            f"{by.get('os_user')}@{by.get('host')} (kafka {by.get('kafka_principal')})",
            v.digest[:16],
            "; ".join(said) or "-",
        )
    out.print(table)


# -- schema -------------------------------------------------------------------


@schema_app.command("export")
def schema_export(
    directory: Annotated[Path, typer.Argument(help="Folder to write *.schema.json files into.")],
) -> None:
    """Write JSON Schema files for the events, the policy and findings, so
    producers in other languages can validate what they send."""
    directory.mkdir(parents=True, exist_ok=True)
    shapes = {
        "event": EventAdapter.json_schema(),
        "saas_access": SaasAccess.model_json_schema(),
        "device_posture": DevicePosture.model_json_schema(),
        "dlp_alert": DlpAlert.model_json_schema(),
        "control_review": ControlReview.model_json_schema(),
        "policy": Policy.model_json_schema(),
        "finding": Finding.model_json_schema(mode="serialization"),
    }
    for name, schema in shapes.items():
        schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
        path = directory / f"{name}.schema.json"
        path.write_text(json.dumps(schema, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        out.print(f"wrote {path}")


# -- simulate -----------------------------------------------------------------

UsersOpt = Annotated[int, typer.Option(help="Number of users.", min=1)]
DevicesOpt = Annotated[int, typer.Option(help="Number of devices.", min=1)]
HoursOpt = Annotated[float, typer.Option(help="Hours of event time to generate.", min=0.01)]
ViolationRateOpt = Annotated[
    float, typer.Option(help="Share of opportunities turned into violations.", min=0.0, max=1.0)
]
SeedOpt = Annotated[int, typer.Option(help="Same seed, same events.")]
StartOpt = Annotated[
    datetime | None,
    typer.Option(
        help="Start of the day (ISO 8601). Default 2026-11-23T00:00:00+09:00.",
        show_default=False,
    ),
]
SimulateOutOpt = Annotated[str, typer.Option("--out", "-o", help="JSONL file, or - for stdout.")]
ToKafkaOpt = Annotated[
    bool,
    typer.Option(
        "--to-kafka",
        help="Publish to the input topics instead of a file "
        "(live traffic; --start defaults to --hours before now).",
    ),
]
RateOpt = Annotated[
    float, typer.Option(help="With --to-kafka: events per second (0: as fast as possible).")
]
VendorsOpt = Annotated[
    Path | None,
    typer.Option(
        "--vendors",
        help="Write the day into this folder as the products write it, each naming "
        "devices its own way (Intune export, Falcon hosts, Entra sign-ins; no hand-written "
        "device entry), with day.jsonl (all of it adapted, for replay), one-id.jsonl (the "
        "same day in canonical form) and devices.jsonl (which names are one device).",
        show_default=False,
    ),
]


@app.command("simulate")
def simulate_cmd(
    users: UsersOpt = 500,
    devices: DevicesOpt = 550,
    hours: HoursOpt = 24.0,
    violation_rate: ViolationRateOpt = 0.02,
    seed: SeedOpt = 1,
    start: StartOpt = None,
    output: SimulateOutOpt = "-",
    policy: PolicyOpt = None,
    to_kafka: ToKafkaOpt = False,
    rate: RateOpt = 500.0,
    broker: BrokerOpt = None,
    prefix: PrefixOpt = None,
    vendors: VendorsOpt = None,
    mapping: MappingOpt = None,
) -> None:
    """Generate realistic canonical events (JSONL, arrival order) with a share
    of violations of every rule. Deterministic for a seed.

    Example (a multi-vendor day, then its findings):
    sepwatch simulate --vendors day/ && sepwatch replay -e day/day.jsonl -o findings.jsonl
    """
    from simulator.day import simulate

    pol = _policy(policy)
    begins = _simulated_start(start, hours, live=to_kafka)
    if vendors is not None:
        _simulate_vendors(
            vendors, pol, mapping, begins, users, devices, hours, violation_rate, seed
        )
        return
    events = simulate(
        pol,
        users=users,
        devices=devices,
        hours=hours,
        violation_rate=violation_rate,
        seed=seed,
        start=begins,
    )
    if to_kafka:
        _publish_live(events, _settings(broker=broker, topic_prefix=prefix), rate)
    else:
        _write_events(events, output)


def _simulated_start(start: datetime | None, hours: float, *, live: bool) -> datetime:
    """--start, which needs an offset; by default a fixed day, or for live
    traffic `hours` before now: the worker refuses events stamped ahead of the
    broker's clock (max_event_ahead_s), and a paced day runs faster than one."""
    if start is not None and start.tzinfo is None:
        err.print("[bold red]--start needs an offset[/], e.g. 2026-11-23T00:00:00+09:00")
        raise typer.Exit(2)
    if start is not None:
        return start
    if live:
        return datetime.now(UTC) - timedelta(hours=hours)
    return datetime(2026, 11, 23, tzinfo=ZoneInfo("Asia/Seoul"))


def _publish_live(events: Iterable[dict[str, Any]], settings: Settings, rate: float) -> None:
    """The simulated events to the input topics, `rate` a second, as live traffic."""
    from streams.kafka_io import paced, produce
    from streams.topics import Topics

    lines = (json.dumps(e, ensure_ascii=False).encode() for e in events)
    with kafka_errors("cannot produce"):
        create_topics(settings)
        counts = produce(
            paced(lines, rate), settings.kafka, Topics(settings.topic_prefix), end_of_input=False
        )
    published(counts)


def _write_events(events: Iterable[dict[str, Any]], output: str) -> None:
    """The simulated events as JSON lines, to a file or stdout (-)."""
    sink = sys.stdout if output == "-" else open(output, "w", encoding="utf-8")  # noqa: SIM115
    count = 0
    with sink:
        for event in events:
            sink.write(json.dumps(event, ensure_ascii=False))
            sink.write("\n")
            count += 1
    if output != "-":
        err.print(f"wrote {count:,} events to {output}")


def _simulate_vendors(
    folder: Path,
    pol: Policy,
    mapping: Path | None,
    start: datetime,
    users: int,
    devices: int,
    hours: float,
    violation_rate: float,
    seed: int,
) -> None:
    from simulator.vendors import simulated_vendor_day, write_day

    base = mapping_for(mapping, None)
    try:
        day = simulated_vendor_day(
            pol,
            base,
            start,
            users=users,
            devices=devices,
            hours=hours,
            violation_rate=violation_rate,
            seed=seed,
        )
    except ValueError as exc:
        err.print(f"[bold red]cannot write the vendors' day[/]: {exc}")
        raise typer.Exit(2) from None
    written = write_day(day, folder)
    err.print(f"wrote to {folder}: " + ", ".join(f"{k} {v:,}" for k, v in written.items()))


# -- rules --------------------------------------------------------------------


@app.command("rules")
def rules_cmd() -> None:
    """List the rule catalogue: id, severity, title and the regulation clause."""
    table = Table(title="sepwatch rules")
    for col in ("id", "severity", "title", "regulation"):
        table.add_column(col, overflow="fold")
    for rule in CATALOGUE.values():
        table.add_row(rule.id, rule.severity, rule.title, rule.regulation)
    out.print(table)


# -- streaming --------------------------------------------------------------------

StateDirOpt = Annotated[
    Path | None,
    typer.Option(help="Local state. Default: $SEPWATCH_STATE_DIR.", show_default=False),
]
WebPortOpt = Annotated[
    int | None,
    typer.Option(help="Web port (/metrics); 0: off. Default 6066.", show_default=False),
]
PartitionsOpt = Annotated[
    int | None, typer.Option(help="Partitions of every topic. Default 4.", show_default=False)
]
LogLevelOpt = Annotated[str, typer.Option(help="Log level.")]


@app.command("worker")
def worker_cmd(
    broker: BrokerOpt = None,
    prefix: PrefixOpt = None,
    policy: PolicyOpt = None,
    state_dir: StateDirOpt = None,
    web_port: WebPortOpt = None,
    partitions: PartitionsOpt = None,
    loglevel: LogLevelOpt = "warning",
) -> None:
    """Run the rules continuously on Kafka.

    Creates the topics it needs (refusing partition counts that would break
    co-partitioning), then validates and routes every event in batches (its
    validator, consumer group PREFIXvalidator) and judges it in the stages
    (faust-streaming, consumer group PREFIXworker); findings
    go to PREFIXfindings keyed by id, bad records to PREFIXdead-letters.
    Several workers with the same prefix share the partitions. Editing the
    policy file while it runs loads the new policy for events stamped from
    then on; a policy that does not validate is refused and logged, and the
    running one stays.
    """
    from faust import Worker

    from streams.collector import long_lived_state

    settings = _settings(
        broker=broker,
        topic_prefix=prefix,
        state_dir=state_dir,
        web_port=web_port,
        partitions=partitions,
    )
    policy_path = policy or settings.policy
    pol = _policy(policy_path)
    if settings.mapping is not None:
        # A mapping that is wrong in itself is refused here, every problem
        # listed; one that names apps this policy lacks only keeps the raw
        # topics unread (streams.topology), the rules run.
        mapping_for(settings.mapping, None)
    settings, key = _worker_topics(settings)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    faust_app = _worker_app(settings, pol, policy_path, key)
    _quiet_loggers(faust_app, loglevel)
    with long_lived_state():  # the tables and engines live as long as the worker
        Worker(faust_app, loglevel=loglevel, quiet=True).execute_from_commandline()


def _worker_topics(settings: Settings) -> tuple[Settings, bytes]:
    """Create or check the topics, read (or make) the deployment's pseudonym
    key, and carry the adapters' raw topic offsets over a switch of the
    guarantee (streams.adapter_offsets); the settings with the replication
    the cluster gave the defaults, so the topics Faust and the alert router
    create get the same."""
    from streams.adapter_offsets import carry_adapter_offsets
    from streams.pseudonym_key import worker_key
    from streams.topics import Topics

    with kafka_errors("cannot start"):
        replication = create_topics(settings, retention_ms=7 * 24 * 3600 * 1000)
        key = worker_key(settings, Topics(settings.topic_prefix))
        carry_adapter_offsets(settings)
    resolved = settings.model_copy(
        update={
            "replication_factor": replication.factor,
            "min_insync_replicas": replication.min_insync,
        }
    )
    return resolved, key


def _worker_app(settings: Settings, pol: Policy, policy_path: Path, key: bytes) -> Any:
    """The Faust app of the stages, its policy recorded as a new version if
    the file is not the newest already (earlier events are judged by the
    versions in force at their time); exit 2 on an alert route it cannot serve."""
    from detectors.pseudonyms import Pseudonymiser
    from streams.alerts.router import AlertConfigError
    from streams.policy_history import record_if_changed
    from streams.topology import build_app

    with kafka_errors("cannot start: the policy history"):
        versions = record_if_changed(settings, pol, str(policy_path))
    try:
        return build_app(
            settings,
            pol,
            pseudonyms=Pseudonymiser(key),
            partitions=settings.partitions,
            policy_file=policy_path,
            versions=versions,
        )
    except AlertConfigError as exc:
        err.print(f"[bold red]cannot start[/]: {exc}")
        raise typer.Exit(2) from None


def _quiet_loggers(faust_app: Any, loglevel: str) -> None:
    @faust_app.task
    async def _log_levels() -> None:
        # Faust leaves the loggers at DEBUG and filters in the handler, so every
        # debug call on the hot path (aiokafka's producer, Faust's topics) still
        # builds a log record: about a tenth of a busy worker's time.
        import logging

        level = logging.getLevelName(loglevel.upper())
        for name in ("", "aiokafka", "faust", "mode", "kafka"):
            logging.getLogger(name).setLevel(level)


def _ensure_topics(settings: Settings) -> None:
    """Create the topics `produce` writes if no worker has yet (as a worker
    would); topics that exist are the worker's to check. Not left to the
    broker's auto-creation, which would make them with its own replication
    (one copy on a default broker)."""
    from adapters import ADAPTERS
    from streams.kafka_io import admin
    from streams.topics import Topics

    topics = Topics(settings.topic_prefix)
    client = admin(settings.kafka)
    try:
        existing = set(client.list_topics())
    finally:
        client.close()
    written = [*topics.inputs, topics.dead_letters, *(topics.raw(s) for s in ADAPTERS)]
    if not existing.issuperset(written):
        create_topics(settings)


EndOfInputOpt = Annotated[
    bool,
    typer.Option(
        "--end-of-input",
        help="After the file, tell the workers the input has ended, so they decide "
        "everything still waiting for other events (as replay does at the end). Only "
        "for a bounded input that nothing else writes to: on a live stream it decides "
        "early. The marker is signed with SEPWATCH_END_OF_INPUT_KEY; workers honour "
        "only markers signed with their own key.",
    ),
]
ToRawTopicOpt = Annotated[
    bool,
    typer.Option(
        "--raw",
        help="With --format: publish the raw records to PREFIXraw.<source> for the "
        "workers' adapter agent, as a log connector would (no end-of-input marker).",
    ),
]


@app.command("produce")
def produce_cmd(
    events: Annotated[str, typer.Option("--events", "-e", help="JSONL (or .gz); - for stdin.")],
    broker: BrokerOpt = None,
    prefix: PrefixOpt = None,
    end_of_input: EndOfInputOpt = False,
    fmt: FormatOpt = None,
    mapping: MappingOpt = None,
    to_raw_topic: ToRawTopicOpt = False,
) -> None:
    """Publish a mixed canonical JSONL file to the input topics, in file order,
    keyed by user (device for postures, entity for reviews). With --format, a
    file of raw vendor records is adapted here first (unmappable records go
    to the dead-letters topic)."""
    from streams.end_of_input import MarkerKeyMissing

    settings = _settings(broker=broker, topic_prefix=prefix)
    if end_of_input and settings.end_of_input_key is None:
        err.print(f"[bold red]cannot produce[/]: {MarkerKeyMissing()}")
        raise typer.Exit(2)
    if fmt is not None and to_raw_topic:
        _produce_raw(settings, events, fmt)
        return
    mapped = mapping_for(mapping, _policy(None)) if fmt is not None else None
    adapt_counts = AdaptCounts()
    raw, source, size = _open_events(events)
    with kafka_errors("cannot produce"), raw, source, file_progress("produce", raw, size) as moved:
        _ensure_topics(settings)
        if mapped is not None and fmt is not None:
            counts = _produce_lines(
                settings,
                _adapted(settings, source, fmt, mapped, adapt_counts, events),
                end_of_input,
                moved,
            )
        else:
            counts = _produce_lines(settings, source, end_of_input, moved)
    if fmt is not None:
        print_counts(fmt, adapt_counts)
    published(counts)


def _produce_lines(
    settings: Settings,
    lines: Iterable[bytes],
    end_of_input: bool,
    moved: Callable[[int], None],
) -> dict[str, int]:
    """Canonical lines to the input topics, then the end-of-input marker if asked."""
    from streams.kafka_io import produce
    from streams.topics import Topics

    return produce(
        lines,
        settings.kafka,
        Topics(settings.topic_prefix),
        end_of_input=end_of_input,
        marker_key=settings.end_of_input_key,
        on_progress=moved,
    )


def _adapted(
    settings: Settings,
    source: Iterable[bytes],
    fmt: str,
    mapped: VendorMapping,
    adapt_counts: AdaptCounts,
    events: str,
) -> Iterator[bytes]:
    """Raw vendor records adapted here into canonical lines; the records that
    cannot be mapped go to the dead-letters topic, flushed once all are read."""
    from cli.adapt import DeadLetterTopic
    from streams.topics import Topics

    letters = DeadLetterTopic(settings.kafka, Topics(settings.topic_prefix).dead_letters)
    yield from adapted_lines(fmt, source, mapped, letters, adapt_counts, events)
    letters.close()


def _produce_raw(settings: Settings, events: str, fmt: str) -> None:
    """`produce --format --raw`: the records as they are, to PREFIXraw.<source>."""
    from cli.adapt import publish_raw
    from streams.topics import Topics

    raw, source, _ = _open_events(events)
    with kafka_errors("cannot produce"), raw, source:
        _ensure_topics(settings)
        n = publish_raw(fmt, source, settings.kafka, settings.topic_prefix)
    err.print(f"published {n:,} raw records to {Topics(settings.topic_prefix).raw(fmt)}")


@findings_app.command("export")
def findings_export(
    output: Annotated[Path, typer.Option("--out", "-o", help="JSONL file to write.")],
    source: Annotated[
        str,
        typer.Option(
            "--from",
            help="kafka: the findings topic from its beginning, one line per id. "
            "es: the findings indices, with each finding's lifecycle.",
        ),
    ] = "kafka",
    broker: BrokerOpt = None,
    prefix: PrefixOpt = None,
    es_url: EsOpt = None,
    index: IndexOpt = None,
) -> None:
    """Write every finding to a JSONL file, one line per finding id."""
    from streams.kafka_io import KafkaUnavailable, export_findings
    from streams.topics import Topics

    if source not in ("kafka", "es"):
        err.print(f"[bold red]--from {source}[/]: choose kafka or es")
        raise typer.Exit(2)
    settings = _settings(broker=broker, topic_prefix=prefix, es_url=es_url, es_index=index)
    if source == "es":
        from streams.lifecycle import scan_with_status

        es = _es(settings)
        with output.open("w", encoding="utf-8") as sink, _es_errors(settings):
            n = 0
            for finding in scan_with_status(es, settings.es_index):
                sink.write(json.dumps(finding, ensure_ascii=False) + "\n")
                n += 1
        err.print(f"wrote {n:,} findings from {settings.es_index} to {output}")
        return
    try:
        with output.open("w", encoding="utf-8") as sink:
            n = export_findings(settings.kafka, Topics(settings.topic_prefix), sink)
    except KafkaUnavailable as exc:
        err.print(f"[bold red]cannot export[/]: {exc}")
        raise typer.Exit(2) from None
    err.print(f"wrote {n:,} findings to {output}")


def _since(text: str | None) -> datetime | None:
    """`2026-05-04`, an RFC 3339 time, or a duration back from now (`24h`, `7d`)."""
    if text is None:
        return None
    from schemas.durations import parse_duration

    try:
        return datetime.now(UTC) - parse_duration(text)
    except ValueError:
        pass
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        err.print(f"[bold red]--since {text}[/]: give a date, an RFC 3339 time or a duration (24h)")
        raise typer.Exit(2) from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


RuleOpt = Annotated[str | None, typer.Option(help="Only this rule (SEP-003).")]
EntityOpt = Annotated[str | None, typer.Option(help="Only this entity (HQ, a branch).")]
StatusOpt = Annotated[str | None, typer.Option(help="open, acknowledged, resolved or waived.")]
SinceOpt = Annotated[
    str | None,
    typer.Option(help="Event time from: a date, an RFC 3339 time, or back from now (24h)."),
]
LimitOpt = Annotated[int, typer.Option(help="At most this many, newest first.")]
JsonLinesOpt = Annotated[bool, typer.Option("--json", help="One JSON a line (times in UTC).")]
ZonePolicyOpt = Annotated[
    Path | None,
    typer.Option(
        "--policy",
        "-p",
        help="Policy whose time zone the times are shown in. Default: $SEPWATCH_POLICY, "
        "else deploy/policy/example.yaml, else UTC if there is none.",
        show_default=False,
    ),
]


@findings_app.command("list")
def findings_list(
    rule: RuleOpt = None,
    entity: EntityOpt = None,
    status: StatusOpt = None,
    since: SinceOpt = None,
    limit: LimitOpt = 50,
    as_json: JsonLinesOpt = False,
    policy: ZonePolicyOpt = None,
    es_url: EsOpt = None,
    index: IndexOpt = None,
) -> None:
    """List findings from Elasticsearch, newest first, filtered; times in the
    policy's time zone (findings keep UTC: see --json).

    sepwatch findings list --status open --rule SEP-003 --since 24h
    """
    from streams.elastic import STATUSES
    from streams.lifecycle import search_findings

    if status is not None and status not in STATUSES:
        err.print(f"[bold red]--status {status}[/]: one of {', '.join(STATUSES)}")
        raise typer.Exit(2)
    if rule is not None and rule not in CATALOGUE:
        err.print(f"[bold red]--rule {rule}[/]: one of {', '.join(CATALOGUE)}")
        raise typer.Exit(2)
    settings = _settings(es_url=es_url, es_index=index)
    es = _es(settings)
    with _es_errors(settings):
        total, found = search_findings(
            es,
            settings.es_index,
            rule=rule,
            entity=entity,
            status=status,
            since=_since(since),
            limit=limit,
        )
    if as_json:
        for f in found:
            out.print_json(json.dumps(f, ensure_ascii=False), indent=None)
    else:
        _print_findings(found, total, _display_zone(policy))


def _print_findings(found: list[dict[str, Any]], total: int, zone: ZoneInfo) -> None:
    from cli.findings_table import findings_table

    out.print(
        findings_table(
            found,
            total,
            out.width,
            f"time ({zone.key})",
            lambda ts: datetime.fromisoformat(ts).astimezone(zone).strftime("%Y-%m-%d %H:%M"),
        )
    )


def _display_zone(policy: Path | None) -> ZoneInfo:
    """The policy's zone; UTC when no policy is given and the default one is not there."""
    if policy is None and not Settings().policy.exists():
        return ZoneInfo("UTC")
    return ZoneInfo(_policy(policy).timezone)


@findings_app.command("show")
def findings_show(
    finding_id: Annotated[str, typer.Argument(help="The finding's id.")],
    es_url: EsOpt = None,
    index: IndexOpt = None,
) -> None:
    """One finding, whole: evidence, regulation, waiver, its status and every
    lifecycle record (who, when, why)."""
    from cli.pseudonym import pseudonyms_note
    from streams.elastic import get_finding
    from streams.lifecycle import records_of, with_status

    settings = _settings(es_url=es_url, es_index=index)
    es = _es(settings)
    with _es_errors(settings):
        found = get_finding(es, settings.es_index, finding_id)
        records = records_of(es, settings.es_index, finding_id)
    if records:
        found = with_status([found], {finding_id: records[-1]})[0]
        found["lifecycle_records"] = records
    out.print_json(json.dumps(found, ensure_ascii=False))
    note = pseudonyms_note(found)
    if note:
        err.print(note, highlight=False)


def _actor_note() -> str:
    return (
        "Who acted is the user Elasticsearch authenticated for the credentials used "
        "(SEPWATCH_ES_USERNAME/PASSWORD or API key); on a node without security, the OS "
        "user, marked unauthenticated."
    )


@findings_app.command("ack", help=f"Acknowledge an open finding: someone is on it. {_actor_note()}")
def findings_ack(
    finding_id: Annotated[str, typer.Argument(help="The finding's id.")],
    es_url: EsOpt = None,
    index: IndexOpt = None,
    broker: BrokerOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    _lifecycle(finding_id, "acknowledge", None, es_url, index, broker, prefix)


@findings_app.command(
    "resolve", help=f"Resolve an open or acknowledged finding, with a note. {_actor_note()}"
)
def findings_resolve(
    finding_id: Annotated[str, typer.Argument(help="The finding's id.")],
    note: Annotated[str, typer.Option("--note", help="What was done (kept, masked).")],
    es_url: EsOpt = None,
    index: IndexOpt = None,
    broker: BrokerOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    _lifecycle(finding_id, "resolve", note, es_url, index, broker, prefix)


@findings_app.command(
    "reopen", help=f"Reopen an acknowledged, resolved or waived finding. {_actor_note()}"
)
def findings_reopen(
    finding_id: Annotated[str, typer.Argument(help="The finding's id.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (kept, masked).")],
    es_url: EsOpt = None,
    index: IndexOpt = None,
    broker: BrokerOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    _lifecycle(finding_id, "reopen", reason, es_url, index, broker, prefix)


@findings_app.command(
    "waive",
    help="Decide to waive an open or acknowledged finding (a one-off decision; a "
    f"standing exception belongs in the policy's waivers). {_actor_note()}",
)
def findings_waive(
    finding_id: Annotated[str, typer.Argument(help="The finding's id.")],
    reason: Annotated[str, typer.Option("--reason", help="Why, and who approved (kept, masked).")],
    es_url: EsOpt = None,
    index: IndexOpt = None,
    broker: BrokerOpt = None,
    prefix: PrefixOpt = None,
) -> None:
    _lifecycle(finding_id, "waive", reason, es_url, index, broker, prefix)


def _lifecycle(
    finding_id: str,
    verb: str,
    reason: str | None,
    es_url: str | None,
    index: str | None,
    broker: str | None,
    prefix: str | None,
) -> None:
    """Add the record in Elasticsearch, then its copy to the lifecycle topic
    (the evidence `sepwatch evidence verify` checks Elasticsearch against)."""
    from review.evidence import publish_lifecycle
    from streams.kafka_io import KafkaUnavailable
    from streams.lifecycle import actor_name, record

    settings = _settings(es_url=es_url, es_index=index, broker=broker, topic_prefix=prefix)
    with _es_errors(settings):
        record_id, stored = record(
            _es(settings), settings.es_index, finding_id, verb, at=datetime.now(UTC), reason=reason
        )
    try:
        publish_lifecycle(settings, record_id, stored)
    except KafkaUnavailable as exc:
        err.print(
            f"[bold red]recorded in Elasticsearch ({record_id}) but not on the lifecycle "
            f"topic[/]: {exc}. `sepwatch evidence verify` will name it until it is copied."
        )
        raise typer.Exit(1) from None
    err.print(f"{finding_id}: {stored['sepwatch']['to_status']} by {actor_name(stored)}")


@app.command("demo")
def demo_cmd(
    events: Annotated[Path, typer.Option("--events", "-e", help="Events to stream.")] = Path(
        "deploy/samples/day.jsonl.gz"
    ),
    rate: Annotated[
        float, typer.Option(help="Events per second to send; 0: as fast as possible.")
    ] = 3000.0,
    policy: PolicyOpt = None,
) -> None:
    """Start a local Kafka broker and a worker, stream a simulated day through
    them, and show the findings as they arrive; then stop what it started."""
    from cli import demo

    pol_path = policy or Settings().policy
    _policy(pol_path)
    raise typer.Exit(demo.run(pol_path, events, rate, out))


@app.command("console")
def console_cmd(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    es_url: EsOpt = None,
    index: IndexOpt = None,
    policy: PolicyOpt = None,
) -> None:
    """The SOC console in the browser: findings (live, filtered, exported),
    a finding's evidence and triage, the overview per entity, the policy and
    the semiannual reports. Default http://127.0.0.1:8080.

    People sign in with their own Elasticsearch user (their roles decide what
    they may do), or SEPWATCH_CONSOLE_TRUSTED_HEADER names the user an
    authenticating reverse proxy vouches for. On a node with security off the
    console says so and acts as the local operator.

    sepwatch console --port 8080 --es-url http://localhost:9200
    """
    from console.serve import serve

    settings = _settings(
        console_host=host, console_port=port, es_url=es_url, es_index=index, policy=policy
    )
    _policy(settings.policy)
    serve(settings, err)


# -- the semiannual review (cli/review.py) ------------------------------
from cli.review import report_cmd, review_app  # noqa: E402

app.add_typer(review_app, name="review")
app.command("report")(report_cmd)

# -- pseudonyms of identifiers in event fields (cli/pseudonym.py) --------
from cli.pseudonym import pseudonym_app  # noqa: E402

app.add_typer(pseudonym_app, name="pseudonym")

# -- secured Elasticsearch: the admin's one-off setup (cli/es_setup.py) --
from cli.es_setup import es_app  # noqa: E402

app.add_typer(es_app, name="elasticsearch")

# -- device identity learned from posture feeds (cli/devices.py) --------
from cli.devices import devices_app  # noqa: E402

app.add_typer(devices_app, name="devices")

# -- evidence: Elasticsearch checked against the topics (cli/evidence.py) --
from cli.evidence import evidence_app  # noqa: E402

app.add_typer(evidence_app, name="evidence")


def _one_line_paragraphs(doc: str) -> str:
    """A docstring's paragraphs each on one line, for the terminal to wrap:
    typer's rich help keeps the source's line breaks. A paragraph of command
    lines (examples) keeps its lines."""
    paragraphs = inspect.cleandoc(doc).split("\n\n")
    return "\n\n".join(
        p if all(line.startswith("sepwatch ") for line in p.splitlines()) else " ".join(p.split())
        for p in paragraphs
    )


def _help_from_docstrings(typer_app: typer.Typer) -> None:
    for command in typer_app.registered_commands:
        doc = command.help or inspect.getdoc(command.callback)
        if doc:
            command.help = _one_line_paragraphs(doc)
    for group in typer_app.registered_groups:
        if group.typer_instance is not None:
            _help_from_docstrings(group.typer_instance)


_help_from_docstrings(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
