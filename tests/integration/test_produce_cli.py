"""`sepwatch produce` against a real broker and worker (issue 19): the input
ends only when asked, with a marker the workers can trust; a pipe is read to
its end without seeking."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kafka import KafkaProducer

from bench.harness import free_port, wait_until
from streams.kafka_io import ensure_topics, read_events, read_topics
from streams.topics import Topics
from streams.validator import END_OF_INPUT
from tests.cases import DEFAULTS
from tests.integration.conftest import ROOT, Worker

KEY = "produce-cli-test-key"
T = datetime(2026, 11, 23, 1, 0, tzinfo=UTC)
ENV = {**os.environ, "SEPWATCH_END_OF_INPUT_KEY": KEY}


def _event(stream: str, event_id: str, at: datetime, **fields: Any) -> bytes:
    body = {**DEFAULTS[stream], "stream": stream, "event_id": event_id, **fields}
    return json.dumps({**body, "timestamp": at.isoformat()}).encode()


def sepwatch_produce(broker: str, prefix: str, lines: list[bytes], *args: str) -> str:
    """`sepwatch produce -e -`, its input through a real pipe from `cat`."""
    cat = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    produce = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "produce", "--broker", broker,
         "--prefix", prefix, "-e", "-", *args],
        stdin=cat.stdout, stderr=subprocess.PIPE, env=ENV, cwd=ROOT,
    )  # fmt: skip
    assert cat.stdin is not None and cat.stdout is not None
    cat.stdout.close()  # produce holds the read end now
    cat.stdin.write(b"".join(line + b"\n" for line in lines))
    cat.stdin.close()
    _, stderr = produce.communicate(timeout=120)
    cat.wait(timeout=10)
    assert produce.returncode == 0, stderr.decode()
    return stderr.decode()


def sepwatch_produce_file(broker: str, prefix: str, file: Path, *args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "cli.main", "produce", "--broker", broker,
         "--prefix", prefix, "-e", str(file), *args],
        env=ENV, cwd=ROOT, timeout=120, check=True,
    )  # fmt: skip


def test_produce_reads_a_pipe_to_its_end(broker: str, prefix: str) -> None:
    topics = Topics(prefix)
    ensure_topics(broker, topics, 4, retention_ms=3_600_000)
    # More lines than the progress callback's step (2,048), so it runs mid-stream too.
    lines = [_event("saas_access", f"a{n}", T + timedelta(seconds=n)) for n in range(3000)]
    stderr = sepwatch_produce(broker, prefix, lines)
    assert "Illegal seek" not in stderr and "saas_access 3,000" in stderr
    # Every line, beside the clock marks `produce` writes (streams/partition_clock.py).
    assert len(read_events(broker, [topics.input("saas_access")])) == 3000


def _metric(port: int, name: str, labels: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    for line in text.splitlines():
        if line.startswith(f"{name}{{{labels}}} "):
            return float(line.split()[-1])
    return 0.0


def test_an_empty_produce_or_a_forged_marker_between_two_parts_loses_no_finding(
    broker: str, prefix: str, tmp_path: Path
) -> None:
    """Issue 19's case: a DLP alert before the pause, the upload it matches
    2.5 minutes (event time) after it. A marker in between would have the
    stages decide the alert alone, and the SEP-003 would be lost."""
    topics = Topics(prefix)
    ensure_topics(broker, topics, 4, retention_ms=3_600_000)
    alert = _event("dlp_alert", "d1", T, data_types=["kr_rrn"])
    upload = _event("saas_access", "a1", T + timedelta(minutes=2.5), saas_app="docs",
                    action="upload")  # fmt: skip
    web = free_port()
    worker = Worker(broker, prefix, tmp_path / "state", tmp_path / "worker.log", web_port=web,
                    env={"SEPWATCH_END_OF_INPUT_KEY": KEY})  # fmt: skip
    forger = KafkaProducer(bootstrap_servers=broker)
    try:
        worker.wait_ready()
        (tmp_path / "part1.jsonl").write_bytes(alert + b"\n")
        (tmp_path / "empty.jsonl").write_bytes(b"")
        (tmp_path / "part2.jsonl").write_bytes(upload + b"\n")
        sepwatch_produce_file(broker, prefix, tmp_path / "part1.jsonl")
        sepwatch_produce_file(broker, prefix, tmp_path / "empty.jsonl")  # sends no marker
        # A producer that may write the input topics writes markers of its own.
        for name in topics.inputs:
            for p in forger.partitions_for(name) or ():
                forger.send(name, b'{"max_ts": 1e10}', key=END_OF_INPUT, partition=p)
        forger.flush()
        sepwatch_produce_file(broker, prefix, tmp_path / "part2.jsonl", "--end-of-input")

        def sep003() -> list[dict[str, Any]]:
            found = [json.loads(r.value) for r in read_topics(broker, [topics.findings])]
            return [f for f in found if f["rule_id"] == "SEP-003"]

        [finding] = wait_until(sep003, "the SEP-003 of the alert and the upload")
        assert finding["evidence_event_ids"] == ["d1", "a1"]
        forged = 4 * len(topics.inputs)
        assert _metric(web, "sepwatch_end_of_input_ignored_total", 'reason="unsigned"') == forged
    finally:
        forger.close()
        worker.stop()


def test_end_of_input_without_a_key_is_refused(broker: str, prefix: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SEPWATCH_END_OF_INPUT_KEY"}
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "produce", "--broker", broker, "--prefix", prefix,
         "-e", "/dev/null", "--end-of-input"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "SEPWATCH_END_OF_INPUT_KEY" in done.stderr and "Traceback" not in done.stderr
