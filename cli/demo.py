"""`sepwatch demo`: a real broker, a worker, a simulated day streamed through
it, and the findings shown as they arrive; everything it started is stopped."""

from __future__ import annotations

import gzip
import json
import os
import secrets
import subprocess
import sys
import threading
import time
from collections import Counter, deque
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from kafka import KafkaConsumer, TopicPartition
from pydantic import SecretStr
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from detectors import CATALOGUE
from schemas.policy_file import load_policy
from streams.kafka_connection import KafkaConnection
from streams.kafka_io import ensure_topics, paced, produce
from streams.settings import Settings
from streams.topics import Topics

ROOT = Path(__file__).resolve().parent.parent
KAFKA = ROOT / "deploy" / "local" / "kafka.sh"
ES = ROOT / "deploy" / "local" / "elasticsearch.sh"
MAPPING = ROOT / "deploy" / "policy" / "vendor-mapping.yaml"


def _local(ts: str, zone: ZoneInfo, length: int) -> str:
    """A finding's UTC time as the bank's clock shows it."""
    return datetime.fromisoformat(ts).astimezone(zone).isoformat(" ")[:length]


def _view(
    counts: Counter[tuple[str, str]], recent: deque[dict[str, Any]], status: str, zone: ZoneInfo
) -> Group:
    entities = sorted({e for _, e in counts}) or ["-"]
    table = Table(title="Findings by rule and entity (live)")
    table.add_column("rule")
    table.add_column("severity")
    for e in entities:
        table.add_column(e, justify="right")
    for rule in CATALOGUE.values():
        table.add_row(rule.id, rule.severity, *(str(counts.get((rule.id, e), 0)) for e in entities))
    last = Table(title="Latest findings", show_lines=False)
    last.add_column(f"time ({zone.key})", no_wrap=True, min_width=8)
    last.add_column("rule", no_wrap=True, min_width=7)
    last.add_column("entity", no_wrap=True, min_width=11)
    last.add_column("summary", overflow="ellipsis", no_wrap=True)
    for f in recent:
        last.add_row(_local(f["timestamp"], zone, 19)[11:], f["rule_id"], f["entity"], f["summary"])
    return Group(table, last, status)


def run(policy: Path, events: Path, rate: float, console: Console) -> int:
    broker = os.environ.get("SEPWATCH_BROKER", "127.0.0.1:9092")
    started_kafka = _up_unless_running(KAFKA, "a local Kafka broker", console)
    es_url = os.environ.get("SEPWATCH_ES_URL", "http://127.0.0.1:9200")
    started_es = _up_unless_running(ES, "a local Elasticsearch", console)
    prefix = f"demo-{int(time.time())}."
    index = f"{prefix.rstrip('.')}-findings"
    topics = Topics(prefix)
    # The worker below reads the same environment, so both connect alike.
    kafka = Settings(broker=broker).kafka
    ensure_topics(kafka, topics, 4, retention_ms=3_600_000)
    log = ROOT / "out" / "demo-worker.log"
    log.parent.mkdir(exist_ok=True)
    marker_key = SecretStr(secrets.token_hex(16))
    worker = _start_worker(policy, log, _worker_env(broker, prefix, es_url, index, marker_key))
    try:
        # Generous: a first start on a busy laptop takes a minute or more.
        deadline = time.monotonic() + 300
        while "[^Worker]: Ready" not in log.read_text(errors="replace"):
            if worker.poll() is not None or time.monotonic() > deadline:
                console.print(f"[red]the worker did not start[/]; see {log}")
                return 1
            time.sleep(0.3)
        zone = ZoneInfo(load_policy(policy).timezone)
        found = _stream(kafka, topics, events, rate, console, zone, marker_key)
        shown = _in_elasticsearch(es_url, index, found, console, zone)
        # The day is over: the console needs Elasticsearch only.
        _stop(worker)
        _console(Settings(es_url=es_url, es_index=index, policy=policy, broker=broker), console)
    finally:
        _stop(worker)
        if started_kafka:
            subprocess.run([str(KAFKA), "down"], check=False)
        if started_es:
            # Stopped, its data kept: the findings are there when it is started again.
            keep = {**os.environ, "SEPWATCH_ES_KEEP_DATA": "1"}
            subprocess.run([str(ES), "down"], check=False, env=keep)
    console.print(afterwards(es_url, index, es_stopped=started_es))
    return shown


def _up_unless_running(script: Path, what: str, console: Console) -> bool:
    """Start the local server `script` runs unless one is up; True if started here."""
    if subprocess.run([str(script), "status"], capture_output=True).returncode == 0:
        return False
    console.print(f"starting {what} (deploy/local/{script.name} up) ...")
    subprocess.run([str(script), "up"], check=True)
    return True


def _worker_env(
    broker: str, prefix: str, es_url: str, index: str, marker_key: SecretStr
) -> dict[str, str]:
    """The worker's environment: the demo's broker, prefix and index."""
    return {
        **os.environ,
        "SEPWATCH_BROKER": broker,
        "SEPWATCH_TOPIC_PREFIX": prefix,
        "SEPWATCH_ES_URL": es_url,
        "SEPWATCH_ES_INDEX": index,
        # The demo's file is the whole input: its end is marked, signed with
        # a key only this demo and its worker hold.
        "SEPWATCH_END_OF_INPUT_KEY": marker_key.get_secret_value(),
        # The demo's policy names every app of the shipped mapping, so the
        # worker also adapts raw vendor topics; a bank configures its own.
        "SEPWATCH_MAPPING": os.environ.get("SEPWATCH_MAPPING", str(MAPPING)),
        "PYTHONUNBUFFERED": "1",
    }


def _start_worker(policy: Path, log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """A worker on the demo's topics, its output in `log`."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cli.main",
                "worker",
                "--policy",
                str(policy),
                "--state-dir",
                str(ROOT / "out" / "demo-state"),
                "--web-port",
                "0",
                "--loglevel",
                "info",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )


def _stop(worker: subprocess.Popen[bytes]) -> None:
    if worker.poll() is not None:
        return
    worker.terminate()
    try:
        worker.wait(timeout=30)
    except subprocess.TimeoutExpired:
        worker.kill()


def _console(settings: Settings, console: Console) -> None:
    """The SOC console on the demo's findings, until Ctrl-C (uvicorn stops on it)."""
    from console.serve import run_until_stopped

    url = f"http://{settings.console_host}:{settings.console_port}/"
    console.print(
        f"[bold]SOC console[/] on the demo's findings: open {url} (Ctrl-C stops the demo)"
    )
    run_until_stopped(settings)


def afterwards(es_url: str, index: str, *, es_stopped: bool) -> str:
    """The demo's last words: where its findings are and how to work them."""
    where = f"SEPWATCH_ES_URL={es_url} SEPWATCH_ES_INDEX={index}"
    work = f"{where} .venv/bin/sepwatch findings list\n  {where} .venv/bin/sepwatch console"
    if not es_stopped:
        return f"The demo's findings are in Elasticsearch, index {index}:\n  {work}"
    return (
        f"The demo's findings are kept in index {index} of the Elasticsearch it started "
        "and stopped (its data stays until `deploy/local/elasticsearch.sh down` is run "
        "without SEPWATCH_ES_KEEP_DATA=1). To work them:\n"
        f"  deploy/local/elasticsearch.sh up\n  {work}"
    )


def _in_elasticsearch(
    es_url: str, index: str, expected: int, console: Console, zone: ZoneInfo
) -> int:
    """Wait for the sink to store every finding, then show what an analyst sees."""
    from streams.elastic import client, connection_options
    from streams.lifecycle import search_findings
    from streams.settings import Settings

    es = client(es_url, request_timeout=10, **connection_options(Settings(es_url=es_url)))
    stored, deadline = 0, time.monotonic() + 60
    while stored < expected and time.monotonic() < deadline:
        time.sleep(1)
        if es.indices.exists_alias(name=index):
            es.indices.refresh(index=index)
            stored = int(es.count(index=index)["count"])
    console.print(f"{stored:,} of {expected:,} findings in Elasticsearch ({es_url}, alias {index})")
    total, critical = search_findings(es, index, status="open", limit=5, rule="SEP-003")
    table = Table(title=f"Open SEP-003 findings in Elasticsearch: {total:,} (newest 5)")
    for col in (f"time ({zone.key})", "id", "entity", "user"):
        table.add_column(col, no_wrap=True)
    for f in critical:
        table.add_row(
            _local(str(f["timestamp"]), zone, 16), f["finding_id"], f["entity"], f["user_id"] or ""
        )
    console.print(table)
    return 0 if stored == expected else 1


def _stream(
    kafka: KafkaConnection,
    topics: Topics,
    events: Path,
    rate: float,
    console: Console,
    zone: ZoneInfo,
    marker_key: SecretStr,
) -> int:
    """Stream the file through the worker, showing findings live; how many were found."""
    opener = gzip.open if events.suffix == ".gz" else open
    with opener(events, "rb") as f:
        lines: list[bytes] = list(f)
    done = threading.Event()

    def publish() -> None:
        produce(paced(lines, rate), kafka, topics, end_of_input=True, marker_key=marker_key)
        done.set()

    threading.Thread(target=publish, daemon=True).start()
    consumer = KafkaConsumer(
        **kafka.client_options(),
        enable_auto_commit=False,
        isolation_level="read_committed",  # as the findings' consumers read them
    )
    parts = [
        TopicPartition(topics.findings, p)
        for p in consumer.partitions_for_topic(topics.findings) or ()
    ]
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    counts: Counter[tuple[str, str]] = Counter()
    recent: deque[dict[str, Any]] = deque(maxlen=8)
    seen: set[str] = set()
    quiet_since = time.monotonic()
    with Live(_view(counts, recent, "", zone), console=console, refresh_per_second=4) as live:
        while True:
            batch = consumer.poll(timeout_ms=250)
            for records in batch.values():
                for r in records:
                    f = json.loads(r.value)
                    if f["finding_id"] in seen:
                        continue
                    seen.add(f["finding_id"])
                    counts[(f["rule_id"], f["entity"])] += 1
                    recent.appendleft(f)
                    quiet_since = time.monotonic()
            state = "all events sent" if done.is_set() else "streaming the simulated day"
            live.update(_view(counts, recent, f"{state}; {len(seen):,} findings so far", zone))
            if done.is_set() and time.monotonic() - quiet_since > 5:
                break
    consumer.close()
    console.print()  # the live table's last frame ends without a newline
    console.print(
        f"{len(lines):,} events streamed; {len(seen):,} findings "
        f"(topics under prefix '{topics.prefix}')"
    )
    return len(seen)
