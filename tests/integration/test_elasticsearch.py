"""Findings into a real Elasticsearch: parity, an outage, rejections, the analyst's CLI."""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import re
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import Elasticsearch
from kafka import KafkaProducer
from typer.testing import CliRunner

from bench.harness import free_port, wait_for
from cli.main import app as cli
from streams.elastic import index_for
from streams.kafka_io import ensure_topics, read_dead_letters, read_topics
from streams.settings import Settings
from streams.sink import FindingsSink
from streams.topics import Topics
from tests.integration.conftest import ES, ES_PORT, MARKER_KEY, Worker
from tests.integration.settle import committed_past, settled
from tests.integration.test_stream import _day, _replayed

pytestmark = pytest.mark.integration
PARTITIONS = 4
# Raw identifiers as the simulator writes them into DLP snippets (RRN, card numbers).
RAW_ID = re.compile(r"\b\d{6}-[1-4]\d{6}\b|\b\d{4}-\d{4}-\d{4}-\d{4}\b|\b\d{13,16}\b")


def _index(prefix: str) -> str:
    return f"{prefix.rstrip('.')}-findings"  # as the Worker fixture sets it


def _stored(es: Elasticsearch, index: str) -> dict[str, dict[str, Any]]:
    if not es.indices.exists_alias(name=index):
        return {}
    es.indices.refresh(index=index)
    out: dict[str, dict[str, Any]] = {}
    resp = es.search(index=index, query={"match_all": {}}, size=10_000, seq_no_primary_term=True)
    for hit in resp["hits"]["hits"]:
        assert hit["_id"] not in out, f"{hit['_id']} stored twice"
        out[hit["_id"]] = hit
    return out


def _count(es: Elasticsearch, index: str) -> int:
    try:
        es.indices.refresh(index=index)
        return int(es.count(index=index)["count"])
    except Exception:
        return -1


@pytest.fixture
def es(elasticsearch: str) -> Iterator[Elasticsearch]:
    client = Elasticsearch(elasticsearch, request_timeout=30)
    yield client
    client.close()


@pytest.fixture
def worker(
    broker: str, prefix: str, elasticsearch: str, tmp_path: Path
) -> Iterator[Callable[..., Worker]]:
    ensure_topics(broker, Topics(prefix), PARTITIONS, retention_ms=3_600_000)
    started: list[Worker] = []

    def start(web_port: int = 0) -> Worker:
        w = Worker(
            broker,
            prefix,
            tmp_path / "state",
            tmp_path / "worker.log",
            es_url=elasticsearch,
            web_port=web_port,
        )
        started.append(w)
        return w

    yield start
    for w in started:
        w.stop()


def _produce(broker: str, prefix: str, lines: list[bytes], end: bool) -> None:
    from streams.kafka_io import produce

    produce(lines, broker, Topics(prefix), end_of_input=end, marker_key=MARKER_KEY)


def test_every_finding_is_in_elasticsearch_once_with_ecs_fields_and_nothing_raw(
    broker: str, prefix: str, es: Elasticsearch, worker: Callable[..., Worker]
) -> None:
    lines = _day(seed=11)
    want = _replayed(lines)
    raw_ids = {m for line in lines for m in RAW_ID.findall(line.decode())}
    assert raw_ids, "the simulated day should carry raw identifiers for this test to mean much"
    w = worker()
    w.wait_ready()
    _produce(broker, prefix, lines, end=True)
    index = _index(prefix)
    assert wait_for(lambda: _count(es, index) >= len(want), timeout=120), (
        f"{_count(es, index)} of {len(want)} findings in Elasticsearch"
    )
    settled(broker, Topics(prefix), sink=True)  # a duplicate or an extra is stored by now
    stored = _stored(es, index)
    assert set(stored) == set(want)
    for fid, hit in stored.items():
        src = hit["_source"]
        assert hit["_index"] == index_for(datetime.fromisoformat(src["@timestamp"]), index)
        assert src["event"]["kind"] == "alert"
        assert src["rule"]["id"] == want[fid]["rule_id"]
        assert src["sepwatch"]["status"] == want[fid]["status"]
        assert src.get("user", {}).get("id") == want[fid]["user_id"]
        assert src.get("host", {}).get("id") == want[fid]["device_id"]
        assert src["organization"]["name"] == want[fid]["entity"]
        text = json.dumps(src, ensure_ascii=False)
        leaked = [r for r in raw_ids if r in text]
        assert not leaked, f"{fid} carries a raw identifier"
    mapping = next(iter(es.indices.get_mapping(index=index).values()))["mappings"]
    props = mapping["properties"]
    assert props["@timestamp"]["type"] == "date"
    assert props["event"]["properties"]["severity"]["type"] == "long"
    for group, field in (("rule", "id"), ("user", "id"), ("host", "id"), ("organization", "name")):
        assert props[group]["properties"][field]["type"] == "keyword"
    assert mapping["dynamic"] == "strict"


def _scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("sepwatch_es_sink_") and " " in line:
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def _es_script(action: str) -> None:
    env = {**os.environ, "SEPWATCH_ES_PORT": ES_PORT, "SEPWATCH_ES_KEEP_DATA": "1"}
    subprocess.run([str(ES), action], check=True, env=env, timeout=900)


def test_elasticsearch_down_loses_nothing_and_duplicates_nothing(
    broker: str, prefix: str, es: Elasticsearch, worker: Callable[..., Worker]
) -> None:
    """Away only until the sink holds findings it could not index and says
    so; a minute's outage under a bank's day is `python -m bench.outages`."""
    lines = _day(seed=13)
    want = _replayed(lines)
    half = len(lines) // 2
    port = free_port()
    w = worker(web_port=port)
    w.wait_ready()
    index = _index(prefix)
    _produce(broker, prefix, lines[:half], end=False)
    assert wait_for(lambda: _count(es, index) > 0, timeout=120)
    _es_script("down")
    try:
        _produce(broker, prefix, lines[half:], end=True)

        # Findings keep coming while ES is away: the sink holds them and says
        # so. Both at once: the backlog also counts findings on the topic not
        # yet read, which (a second's transaction at a time, exactly once)
        # can show before the sink's first write fails.
        def holding_and_down() -> bool:
            now = _scrape(port)
            return (
                now.get("sepwatch_es_sink_backlog_findings", 0) > 0
                and now.get("sepwatch_es_sink_up") == 0
            )

        assert wait_for(holding_and_down, timeout=60)
        seen = _scrape(port)
        assert seen['sepwatch_es_sink_errors_total{kind="unavailable"}'] >= 1
    finally:
        _es_script("up")
    assert wait_for(lambda: _count(es, index) >= len(want), timeout=180), (
        f"{_count(es, index)} of {len(want)} after Elasticsearch came back"
    )
    settled(broker, Topics(prefix), sink=True)
    assert set(_stored(es, index)) == set(want)
    after = _scrape(port)
    assert after["sepwatch_es_sink_up"] == 1
    assert wait_for(lambda: _scrape(port)["sepwatch_es_sink_backlog_findings"] == 0, timeout=30)


def _finding(fid: str, **over: Any) -> dict[str, Any]:
    return {
        "finding_id": fid,
        "rule_id": "SEP-001",
        "rule_name": "Unevaluated SaaS used from the internal network",
        "severity": "high",
        "status": "open",
        "timestamp": "2026-11-23T01:00:00+00:00",
        "detected_at": "2026-11-23T01:00:02+00:00",
        "entity": "HQ",
        "user_id": "u-1",
        "device_id": "d-1",
        "saas_app": "dropbox",
        "evidence_event_ids": ["e-1"],
        "summary": "u-1 used dropbox, which is not in the registry.",
        "regulation": "only SaaS evaluated by the agency",
        **over,
    }


def _run_sink(settings: Settings, until: Callable[[FindingsSink], bool], timeout: float) -> int:
    async def main() -> int:
        stop = asyncio.Event()
        sink = FindingsSink(settings)
        task = asyncio.create_task(sink.run(stop))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not until(sink) and not task.done():
            await asyncio.sleep(0.2)
        stop.set()
        await task
        return sink.settled

    return asyncio.run(main())


def test_a_document_elasticsearch_refuses_goes_to_the_dead_letters_and_the_rest_lands(
    broker: str, prefix: str, es: Elasticsearch, elasticsearch: str
) -> None:
    topics = Topics(prefix)
    ensure_topics(broker, topics, PARTITIONS, retention_ms=3_600_000)
    index = _index(prefix)
    bad_waiver = {
        "id": "W-1",
        "approved_by": "CISO",
        "reason": "pilot",
        "valid_until": "until further notice",  # not a date: the template refuses it
    }
    records = [
        json.dumps(_finding("SEP-001-good")).encode(),
        json.dumps(_finding("SEP-001-bad", status="waived", waiver=bad_waiver)).encode(),
        b'{"not": "a finding", "rrn": "900101-1234567"}',
    ]
    producer = KafkaProducer(bootstrap_servers=broker)
    for r in records:
        producer.send(topics.findings, key=b"k", value=r)
    producer.flush()
    producer.close()
    settings = Settings(broker=broker, topic_prefix=prefix, es_url=elasticsearch, es_index=index)
    assert _run_sink(settings, lambda s: s.settled >= 2, timeout=60) == 2
    assert set(_stored(es, index)) == {"SEP-001-good"}
    letters = read_dead_letters(broker, topics)
    reasons = sorted(letter["reason"] for letter in letters)
    assert len(letters) == 2, reasons
    assert any("document_parsing_exception" in r for r in reasons), reasons
    assert any(r.startswith("not a finding") for r in reasons), reasons
    assert "1234567" not in json.dumps(letters)
    # Settled means committed, the refused ones too: a restarted sink starts
    # past all three and has nothing left to do.
    committed_past(broker, f"{prefix}es-sink", [topics.findings], timeout=10)


def test_findings_arriving_within_the_linger_go_in_one_bulk_request(
    broker: str, prefix: str, es: Elasticsearch, elasticsearch: str
) -> None:
    """Findings come a few at a time; one bulk request each would cost
    Elasticsearch a request and a translog sync per handful."""
    topics = Topics(prefix)
    ensure_topics(broker, topics, PARTITIONS, retention_ms=3_600_000)
    index = _index(prefix)
    settings = Settings(broker=broker, topic_prefix=prefix, es_url=elasticsearch, es_index=index)
    ids = [f"SEP-001-linger-{i}" for i in range(60)]

    async def main() -> list[list[str]]:
        stop = asyncio.Event()
        sink = FindingsSink(settings, linger_ms=3000)
        bulks: list[list[str]] = []
        sink.on_written = bulks.append
        task = asyncio.create_task(sink.run(stop))
        deadline = time.monotonic() + 60
        while not (sink._consumer and sink._consumer.assignment()):
            assert time.monotonic() < deadline and not task.done(), "sink never joined"
            await asyncio.sleep(0.1)
        producer = KafkaProducer(bootstrap_servers=broker)
        for group in range(3):  # three trickles, 0.2 s apart
            for fid in ids[group * 20 : group * 20 + 20]:
                producer.send(
                    topics.findings, key=fid.encode(), value=json.dumps(_finding(fid)).encode()
                )
            producer.flush()
            await asyncio.sleep(0.2)
        producer.close()
        while sink.settled < len(ids) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        stop.set()
        await task
        return bulks

    bulks = asyncio.run(main())
    assert [sorted(b) for b in bulks] == [sorted(ids)]
    assert set(_stored(es, index)) == set(ids)


def test_an_analyst_works_findings_from_the_terminal(
    broker: str, prefix: str, es: Elasticsearch, elasticsearch: str, tmp_path: Path
) -> None:
    topics = Topics(prefix)
    ensure_topics(broker, topics, PARTITIONS, retention_ms=3_600_000)
    index = _index(prefix)
    producer = KafkaProducer(bootstrap_servers=broker)
    findings = [
        _finding("SEP-001-a"),
        _finding("SEP-001-b", entity="BR-SEOUL-GN"),
        _finding("SEP-003-c", rule_id="SEP-003", severity="critical"),
    ]
    for f in findings:
        producer.send(topics.findings, key=f["finding_id"].encode(), value=json.dumps(f).encode())
    producer.flush()
    settings = Settings(broker=broker, topic_prefix=prefix, es_url=elasticsearch, es_index=index)
    assert _run_sink(settings, lambda s: s.settled >= 3, timeout=60) == 3
    es.indices.refresh(index=index)  # searchable now, not at the next periodic refresh
    env = {
        "SEPWATCH_ES_URL": elasticsearch,
        "SEPWATCH_ES_INDEX": index,
        "SEPWATCH_BROKER": broker,
        "SEPWATCH_TOPIC_PREFIX": prefix,
        "COLUMNS": "200",
    }
    runner = CliRunner()

    def run(*args: str) -> Any:
        return runner.invoke(cli, list(args), env=env)

    listed = run("findings", "list", "--status", "open", "--json")
    assert listed.exit_code == 0, listed.output
    assert {json.loads(x)["finding_id"] for x in listed.stdout.splitlines()} == {
        "SEP-001-a",
        "SEP-001-b",
        "SEP-003-c",
    }
    narrow = runner.invoke(cli, ["findings", "list"], env={**env, "COLUMNS": "80"})
    assert narrow.exit_code == 0, narrow.output
    assert all(len(line) <= 80 for line in narrow.stdout.splitlines())
    for f in findings:  # whole, on one line, not folded into one-letter columns
        assert any(f["finding_id"] in line for line in narrow.stdout.splitlines()), narrow.stdout
    wrong = run("findings", "list", "--rule", "SEP-999")
    assert wrong.exit_code == 2 and "--rule SEP-999" in wrong.output, wrong.output
    # No entity has recorded a review: each is overdue from the baseline all the same.
    reviews = runner.invoke(
        cli,
        ["review", "list", "--broker", broker, "--prefix", prefix],
        env={**env, "COLUMNS": "120"},
    )
    assert reviews.exit_code == 0, reviews.output
    due = reviews.stdout.split("Next review due")[1]
    for entity in ("HQ", "BR-SEOUL-GN"):
        assert re.search(rf"{entity} .* 2026-04-20 .* none .* 2026-10-20 .* overdue", due), due
    assert "state" in due  # the flag's column has a header
    only = run("findings", "list", "--rule", "SEP-001", "--entity", "HQ", "--json")
    assert [json.loads(x)["finding_id"] for x in only.stdout.splitlines()] == ["SEP-001-a"]

    # No security on this node: nobody is authenticated, and the records say so.
    me = f"{getpass.getuser()} (unauthenticated)"
    assert run("findings", "--help").exit_code == 0
    assert "--by" not in run("findings", "ack", "--help").output
    acked = run("findings", "ack", "SEP-001-a")
    assert acked.exit_code == 0 and f"acknowledged by {me}" in acked.output, acked.output
    again = run("findings", "ack", "SEP-001-a")
    assert again.exit_code == 2 and f"acknowledged by {me}" in again.output
    done = run("findings", "resolve", "SEP-001-a", "--note", "RRN 900101-1234567")
    assert done.exit_code == 0, done.output
    shown = json.loads(run("findings", "show", "SEP-001-a").stdout)
    assert shown["status"] == "resolved" and shown["status_by"] == me
    assert [r["event"]["action"] for r in shown["lifecycle_records"]] == ["acknowledge", "resolve"]
    assert shown["lifecycle_records"][1]["event"]["reason"] == "RRN 900101-1******"
    actor = shown["lifecycle_records"][0]["sepwatch"]["actor"]
    assert actor == {"username": getpass.getuser(), "authentication_type": "unauthenticated"}
    assert run("findings", "resolve", "SEP-001-a", "--note", "x").exit_code == 2
    assert run("findings", "show", "SEP-009-none").exit_code == 2
    listed = run("findings", "list", "--status", "resolved", "--json")
    assert [json.loads(x)["finding_id"] for x in listed.stdout.splitlines()] == ["SEP-001-a"]
    # Each record is copied to the lifecycle topic, the evidence verify reads.
    copies = [json.loads(r.value) for r in read_topics(broker, [topics.lifecycle])]
    assert [c["record_id"] for c in copies] == ["SEP-001-a.1", "SEP-001-a.2"]
    # The finding itself is never changed.
    assert _stored(es, index)["SEP-001-a"]["_source"]["sepwatch"]["status"] == "open"

    # The same findings read again (a replay, a restarted sink) leave the analyst's work be.
    for f in findings:
        producer.send(topics.findings, key=f["finding_id"].encode(), value=json.dumps(f).encode())
    producer.flush()
    producer.close()
    assert _run_sink(settings, lambda s: s.settled >= 3, timeout=60) == 3
    stored = _stored(es, index)
    assert len(stored) == 3
    assert json.loads(run("findings", "show", "SEP-001-a").stdout)["status"] == "resolved"

    out = tmp_path / "es.jsonl"
    exported = run("findings", "export", "--from", "es", "--out", str(out))
    assert exported.exit_code == 0, exported.output
    rows = {json.loads(x)["finding_id"]: json.loads(x) for x in out.read_text().splitlines()}
    assert set(rows) == {"SEP-001-a", "SEP-001-b", "SEP-003-c"}
    assert rows["SEP-001-a"]["status"] == "resolved" and rows["SEP-001-a"]["status_by"] == me

    down = runner.invoke(
        cli, ["findings", "list"], env={**env, "SEPWATCH_ES_URL": "http://127.0.0.1:9"}
    )
    assert down.exit_code == 2 and "unreachable" in down.output
