"""The streaming topology on Kafka with faust-streaming.

    input topics --validate--> by-device / by-user / by-review --stages--> findings
                  \\--bad--> dead-letters

The validator (streams.validator, a plain aiokafka consumer group) validates
the four input streams (bad records go to the dead letters with their reason,
masked) and routes the events, raw and in batches, to the stage partitions
that judge them, partitioned so every join is local to one partition. Each
stage is a Faust agent and runs
one engine per partition, its state in changelogged Faust tables, so a
restarted worker recovers it. Findings go to the findings topic keyed by
finding id.

This module is the Faust app's wiring (the app, its agents, timers and web
pages, policy reload, the sinks); how a stage judges its records is in
streams/stages/ (runner.py, store.py, clock.py), the same for either
guarantee.

A producer that reaches the end of a bounded input (`sepwatch produce` of a
file) sends an end-of-input marker to every input partition; once a stage
partition has the marker from every input partition it flushes, as a replay
does at the end of its file.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import faust

from adapters import ADAPTERS
from adapters.intake import OUTCOMES, SkipLabels, adapt_message
from adapters.mapping import configured_mapping
from detectors import Stage
from detectors.pseudonyms import Pseudonymiser
from schemas import Policy
from schemas.policy_file import PolicyError, PolicyFile
from streams import metrics
from streams.exactly_once import ExactlyOnceStages, JudgeRecord, OwnTable
from streams.kafka_io import KafkaUnavailable
from streams.lag import Trailing, records_behind_by_topic
from streams.policy_history import PolicyVersion, in_force, read_versions, record_if_changed
from streams.settings import Settings
from streams.stages.faust_compat import seek_before_fetch
from streams.stages.runner import Publish, StageRunner, stage_judge
from streams.stages.store import TableChanges, Undelivered
from streams.topics import STAGES, STORES, Topics, input_key
from streams.validator import InputValidator, feeds

log = logging.getLogger("sepwatch")

POLICY_POLL_SECONDS = 2.0
HISTORY_EVERY_POLLS = 5
# How long a worker stopping after a refused write may take before it exits anyway.
STOP_GRACE_SECONDS = 60.0


def build_app(
    settings: Settings,
    policy: Policy,
    *,
    pseudonyms: Pseudonymiser,
    partitions: int = 4,
    policy_file: Path | None = None,
    versions: list[PolicyVersion] | None = None,
) -> faust.App:
    topics = Topics(settings.topic_prefix)
    app = _faust_app(settings, partitions)
    # One per stage: a stage's write covers its own record's changes whole.
    changes = {
        stage: TableChanges(app.producer, frozenset({topics.changelog(stage, "meta")}))
        for stage in STAGES
    }
    _changelog_before_commit(app, list(changes.values()))
    seek_before_fetch(app)
    dead = _raw_topic(app, topics.dead_letters, partitions)

    @app.task
    async def validate_inputs() -> None:
        """The input topics to the stages, in batches (streams.validator); the
        input partitions are shared among the workers' validators."""
        await InputValidator(settings, partitions=partitions, pseudonyms=pseudonyms).run()

    _adapters(app, settings, policy, topics, dead)
    runners = _stages(app, settings, policy, topics, partitions, changes)
    applied = PolicyVersions(runners)
    if versions:
        applied.apply(versions)
    if policy_file is not None:
        _policy_reload(app, settings, PolicyFile(policy_file, policy), applied)
    if settings.web_port > 0:
        _web_pages(app)
    _lag_report(app, settings, topics, runners)
    _sinks(app, settings, policy, pseudonyms, applied)
    app.sepwatch_topics = topics  # type: ignore[attr-defined]
    return app


def _faust_app(settings: Settings, partitions: int) -> faust.App:
    exactly_once = settings.processing_guarantee == "exactly_once"
    return faust.App(
        # Exactly once, the stages' own consumer is the group PREFIXworker
        # (their offsets stay where they were); Faust, for the adapters, joins
        # a group of its own: one group cannot mix Faust's assignor and aiokafka's.
        f"{settings.topic_prefix}{'adapters' if exactly_once else 'worker'}",
        # Bootstrap servers are comma-separated for the Kafka clients; Faust
        # takes a list of URLs.
        broker=[f"kafka://{server.strip()}" for server in settings.broker.split(",")],
        broker_credentials=settings.kafka.faust_credentials(),
        store="memory://",
        datadir=str(settings.state_dir),
        topic_partitions=partitions,
        # Resolved against the cluster by `sepwatch worker` (ensure_topics):
        # for the topics Faust itself creates (its assignor's leader topic).
        topic_replication_factor=settings.replication_factor or 1,
        value_serializer="raw",
        key_serializer="raw",
        web_enabled=settings.web_port > 0,
        web_port=max(settings.web_port, 1),
        web_host=settings.web_host,
        # Faust listens on every interface unless told: a bank's worker exposes
        # /metrics only where the settings say.
        web_bind=settings.web_host,
        # /metrics and /healthz only: Faust's table views serve table contents
        # by key, and its router view the partition map, without authentication.
        web_tables_enabled=False,
        web_router_enabled=False,
        web_stats_enabled=False,
        web_graph_enabled=False,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.kafka_session_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_s,
        broker_commit_every=1000,
        broker_commit_interval=1.0,
        producer_linger_ms=5,
        stream_buffer_maxsize=8192,
        table_standby_replicas=settings.standby_replicas,
    )


def _raw_topic(app: faust.App, name: str, partitions: int) -> Any:
    return app.topic(
        name,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=partitions,
    )


def _adapters(
    app: faust.App, settings: Settings, policy: Policy, topics: Topics, dead: Any
) -> None:
    """Raw vendor topics (docs/adapters.md): the adapters turn each record into
    canonical events on the input topics, where `validate` takes them as it
    takes any producer's. Unmappable records go to the dead letters; vendor
    event types with no meaning are counted and logged."""
    mapping = configured_mapping(settings.mapping, policy)
    if mapping is None:
        return
    skipped: Counter[str] = Counter()
    for source in ADAPTERS:  # every series from 0, so the first records count in rate()
        for result in OUTCOMES:
            metrics.ADAPTER_RECORDS.labels(source, result)
    raw_inputs = app.topic(
        *(topics.raw(source) for source in ADAPTERS),
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )
    app.agent(raw_inputs)(_adapt_agent(app, topics, mapping, dead, skipped))

    @app.timer(interval=60.0)
    async def report_skipped() -> None:
        if skipped:
            log.info("adapters skipped (no access, posture or DLP meaning): %s", dict(skipped))


def _adapt_agent(
    app: faust.App, topics: Topics, mapping: Any, dead: Any, skipped: Counter[str]
) -> Callable[[Any], Awaitable[None]]:
    skip_labels = SkipLabels()

    async def adapt(stream: Any) -> None:
        async for event in stream.events():
            msg = event.message
            adapter = ADAPTERS[msg.topic.removeprefix(f"{topics.prefix}raw.")]
            where = {"topic": msg.topic, "partition": msg.partition, "offset": msg.offset}
            outcome = adapt_message(adapter, event.value or b"", mapping, where)
            for canonical in outcome.events:
                await app.send(
                    topics.input(canonical["stream"]),
                    key=input_key(canonical).encode(),
                    value=_json(canonical),
                )
            for letter in outcome.dead_letters:
                await dead.send(value=_json(letter))
                metrics.DEAD_LETTERS.labels("unmappable").inc()
            for result, n in outcome.records.items():
                metrics.ADAPTER_RECORDS.labels(adapter.source, result).inc(n)
            for kind in outcome.skipped:
                label = skip_labels.label(adapter.source, kind)
                metrics.ADAPTER_SKIPPED.labels(adapter.source, label).inc()
                key = f"{adapter.source}: {kind}"
                if key in skipped or len(skipped) < 1000:  # kinds are vendor text: bounded
                    skipped[key] += 1

    return adapt


def _stages(
    app: faust.App,
    settings: Settings,
    policy: Policy,
    topics: Topics,
    partitions: int,
    changes: dict[Stage, TableChanges],
) -> dict[Stage, StageRunner]:
    """A runner per stage, judging its stage topic: a Faust agent each (at
    least once) or one task for all, in Kafka transactions (exactly once)."""
    exactly_once = settings.processing_guarantee == "exactly_once"
    sources = len(topics.inputs) * partitions
    fed_by = feeds(topics)
    fault = settings.test_fault_event_id
    runners: dict[Stage, StageRunner] = {}
    for stage in STAGES:
        # The input partitions whose validator can route to this stage.
        feeding = [t for t in topics.inputs if t in fed_by[stage]]
        stage_sources = [f"{t}:{p}" for t in feeding for p in range(partitions)]
        if exactly_once:
            own = {name: OwnTable(topics.changelog(stage, name)) for name in STORES}
            runners[stage] = StageRunner(stage, own, policy, partitions, stage_sources)
            continue
        tables = {name: _table(app, topics, stage, name, partitions) for name in STORES}
        runner = StageRunner(stage, tables, policy, partitions, stage_sources, changes[stage])
        runners[stage] = runner
        stage_topic = _raw_topic(app, topics.stage(stage), partitions)
        app.agent(stage_topic, name=f"{settings.topic_prefix}stage-{stage}")(
            _stage_agent(app, runner, topics, sources, fault)
        )

    if exactly_once:

        @app.task
        async def stages_exactly_once() -> None:
            """The stages, each fetch's partitions in Kafka transactions."""

            def judge_for(runner: StageRunner, publish: Publish) -> JudgeRecord:
                return stage_judge(runner, topics, sources, fault, publish)

            await ExactlyOnceStages(settings, runners, topics, judge_for).run()

    # mode types its receivers with mypy_extensions' VarArg/NamedArg, which no
    # `async def` with a named `assigned` matches, though Faust calls it so.
    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def _assigned(sender: Any, assigned: Any, **kwargs: Any) -> None:
        for stage, runner in runners.items():
            runner.forget({tp.partition for tp in assigned if tp.topic == topics.stage(stage)})

    return runners


def _table(app: faust.App, topics: Topics, stage: Stage, name: str, partitions: int) -> Any:
    """One of a stage's stores, a Faust table with its changelog."""
    return app.Table(
        f"{stage}-{name}",
        default=None,
        partitions=partitions,
        changelog_topic=app.topic(
            topics.changelog(stage, name),
            partitions=partitions,
            compacting=True,
            key_serializer="json",
            value_serializer="json",
            # As Faust declares its own changelogs: read only to
            # restore, never acknowledged. Acked, its stall monitor
            # watched them and logged an ERROR every few seconds
            # once a worker had run 5 minutes.
            acks=False,
        ),
    )


class PolicyVersions:
    """The versions in force (streams/policy_history.py), applied to the
    stages and the alert router: the earliest judges what came before it, each
    later one events stamped from its time on."""

    def __init__(self, runners: dict[Stage, StageRunner]) -> None:
        self.runners = runners
        self.applied: dict[str, float] = {}
        self.routers: list[Any] = []  # the alert router, once built: the same versions

    def apply(self, found: list[PolicyVersion]) -> None:
        applied = self.applied
        for v in found:
            if v.version in applied or (
                applied and v.effective_from.timestamp() <= max(applied.values())
            ):
                continue
            since = v.effective_from.timestamp()
            first = not applied
            applied[v.version] = since
            for runner in self.runners.values():
                runner.reload(v.parsed(), float("-inf") if first else since)
            for router in self.routers:
                router.adopt(v.parsed())
            if not first:
                metrics.POLICY_RELOADS.labels("loaded").inc()
                log.warning(
                    "policy version %s (%s) loaded; it judges events stamped from %s on",
                    v.version,
                    v.source,
                    v.effective_from.isoformat(),
                )


def _policy_reload(
    app: faust.App, settings: Settings, policy_file: PolicyFile, versions: PolicyVersions
) -> None:
    topics = Topics(settings.topic_prefix)
    polls = [0]

    @app.timer(interval=POLICY_POLL_SECONDS)
    async def reload_policy() -> None:
        """A changed policy file is recorded as a new version (effective from
        now); one that does not validate is refused, and the running one stays.
        Every version recorded, by this worker or another, is applied here."""
        new = _changed_policy(policy_file)
        polls[0] += 1
        # Other workers' versions: read every few polls (a consumer each time).
        if new is None and polls[0] % HISTORY_EVERY_POLLS:
            return
        try:
            if new is not None:
                found = await asyncio.to_thread(
                    record_if_changed, settings, new, str(policy_file.path)
                )
            else:
                found = await asyncio.to_thread(
                    lambda: in_force(read_versions(settings.kafka, topics.policy))
                )
        except KafkaUnavailable as exc:
            log.warning("policy history unreadable (%s); tried again shortly", exc)
            return
        versions.apply(found)


def _changed_policy(policy_file: PolicyFile) -> Policy | None:
    """The file's policy if it changed and validates; logged, None, if not."""
    try:
        return policy_file.changed()
    except OSError as exc:
        log.warning(
            "policy file %s unreadable (%s); keeping the running policy",
            policy_file.path,
            exc.strerror,
        )
    except PolicyError as exc:
        metrics.POLICY_RELOADS.labels("refused").inc()
        log.warning(
            "policy %s refused, the running policy stays:\n%s",
            policy_file.path,
            "\n".join(f"  {p}" for p in exc.problems),
        )
    return None


def _web_pages(app: faust.App) -> None:
    @app.page("/metrics")
    async def metrics_page(web: Any, request: Any) -> Any:
        body, content_type = metrics.exposition()
        return web.bytes(body, headers={"Content-Type": content_type})

    @app.page("/healthz")
    async def health_page(web: Any, request: Any) -> Any:
        """200 while the worker runs (a liveness probe), 503 once it is
        stopping after a fault; the pipeline's health is on /metrics."""
        if app.crashed:
            return web.text("stopping\n", status=503)
        return web.text("ok\n")


def _lag_report(
    app: faust.App, settings: Settings, topics: Topics, runners: dict[Stage, StageRunner]
) -> None:
    # The input topics' lag is the validator's to report; with exactly once,
    # the stage topics' is their own consumer's (ExactlyOnceStages.report_lag):
    # Faust's holds none of them then, and would report 0.
    exactly_once = settings.processing_guarantee == "exactly_once"
    watched_topics = set() if exactly_once else {topics.stage(s) for s in STAGES}

    @app.timer(interval=metrics.REPORT_SECONDS)
    async def report_lag() -> None:
        """Consumer lag of the rules' topics and how far each stage's event
        clock trails the wall clock, for /metrics."""
        # Just after a rebalance a partition has no highwater yet, or is gone
        # again (None): a timer that raised would stop the whole worker.
        behind = await records_behind_by_topic(cast(Trailing, app.consumer))
        if behind is None:
            return
        for topic in watched_topics:
            # Topics lost in a rebalance read 0 here, not their last value.
            metrics.CONSUMER_LAG.labels("rules", topic).set(behind.get(topic, 0))
        now = time.time()
        for stage, runner in runners.items():
            runner.export_counts()
            held = [c for c in runner.event_clocks() if c != float("-inf")]
            if held:
                metrics.EVENT_TIME_LAG.labels(stage).set(max(0.0, now - min(held)))


def _sinks(
    app: faust.App,
    settings: Settings,
    policy: Policy,
    pseudonyms: Pseudonymiser,
    versions: PolicyVersions,
) -> None:
    if settings.es_url:

        @app.task
        async def findings_to_elasticsearch() -> None:
            """The Elasticsearch sink, beside the rules in every worker; the
            findings topic's partitions are shared among the workers' sinks."""
            from streams.sink import FindingsSink

            await FindingsSink(settings).run()

        @app.task
        async def dlp_retractions() -> None:
            """Vendors' undos of DLP matches resolve their findings (streams/retractions.py)."""
            from streams.retractions import Retractions

            await Retractions(settings, pseudonyms).run()

    if settings.channels:
        # Built here, so that a route naming an unconfigured channel stops the
        # worker at its start, with every problem listed.
        from streams.alerts.router import AlertRouter

        # No watcher of its own: it takes the versions the rules take.
        alert_router = AlertRouter(settings, policy)
        versions.routers.append(alert_router)

        @app.task
        async def findings_to_channels() -> None:
            """The alert router, beside the rules in every worker; the findings
            topic's partitions are shared among the workers' routers."""
            await alert_router.run()


def _stage_agent(
    app: faust.App, runner: StageRunner, topics: Topics, sources: int, fault_event_id: str
) -> Any:
    """At least once: the Faust agent of one stage."""
    changes = runner.changes
    judge_record = stage_judge(runner, topics, sources, fault_event_id, changes.publish)

    async def judge(stream: Any) -> None:
        try:
            async for event in stream.events():
                delivering: list[asyncio.Future[Any]] = []
                await judge_record(event, delivering)
                # The findings are on the broker before the state changes that made
                # them (a pending decision's tombstone): a crash between the two
                # leaves the decision to be made again from the changelog, not lost.
                if delivering:
                    await asyncio.gather(*delivering, return_exceptions=True)
                runner.keep_clocks()
                # Before the record is acknowledged, so before its offset is committed.
                await changes.write()
        except Undelivered as exc:
            await _stop_worker(app, exc)
            raise

    return judge


async def _stop_worker(app: faust.App, exc: Undelivered) -> None:
    """A worker that cannot deliver commits nothing from then on: restarted
    by Faust, its agent would fail again and again while the worker kept its
    partitions. It stops instead, exit status 1, so that its service manager
    restarts it and the group gives its partitions to another meanwhile."""
    if not app.crashed:
        log.critical("stopping the worker: %s", exc)
        # Should the orderly stop hang (a thread that does not end, an agent's
        # queue never emptied), the process exits all the same: nothing is
        # committed past the refused write, so nothing is lost by ending it.
        guard = threading.Timer(STOP_GRACE_SECONDS, _exit_now)
        guard.daemon = True
        guard.start()
        await app.crash(exc)


def _exit_now() -> None:
    log.critical("the worker did not stop within %.0f s; exiting", STOP_GRACE_SECONDS)
    os._exit(1)


def _changelog_before_commit(app: faust.App, changes: list[TableChanges]) -> None:
    """Make the producer's flush, which Faust awaits before it commits offsets,
    wait until every table change handed to it so far is on the broker.

    Table changes go to the changelog through Faust's producer buffer (or,
    batched, straight to the Kafka client: TableChanges). Its flush returns
    as soon as 0.1 s pass without a record leaving the buffer, or when the
    buffer is empty while its last record is still being handed to the Kafka
    client, and the client's own flush does not fail on a failed delivery;
    Faust then commits the offsets of events whose changes are not sent.
    Under CPU load that happens, and a worker killed right after restores
    tables without those changes while the events are not read again:
    pending decisions vanish and their findings are lost. Here flush awaits
    each record's delivery instead, and raises once any delivery failed (no
    offset is committed past it: the events are read again by the worker
    that takes over)."""
    buffer = app.producer.buffer
    # Faust's own sends (the adapters' agent) are watched as the stages' are.
    faust_sends = TableChanges(app.producer)
    put = buffer.put

    def tracked_put(fut: Any) -> None:
        faust_sends.track(fut, "a topic written through Faust")
        put(fut)

    async def flush() -> None:
        # Changes made after this point belong to events not yet acknowledged,
        # whose offsets this commit does not cover.
        try:
            for stage_changes in [*changes, faust_sends]:
                await stage_changes.settled()
        except Undelivered as exc:
            await _stop_worker(app, exc)
            raise

    buffer.put = tracked_put  # type: ignore[method-assign]
    buffer.flush = flush  # type: ignore[method-assign]


def _json(record: dict[str, Any]) -> bytes:
    return json.dumps(record, ensure_ascii=False).encode()
