"""Real servers for integration tests, started by the project's own scripts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kafka import KafkaProducer
from pydantic import SecretStr

from bench.harness import free_port
from streams.kafka_io import admin, ensure_topics
from streams.topics import Topics
from tests.adapters.conftest import MAPPING

ROOT = Path(__file__).resolve().parents[2]
KAFKA = ROOT / "deploy" / "local" / "kafka.sh"
PORT = os.environ.get("SEPWATCH_TEST_KAFKA_PORT", "19092")
BROKER = f"127.0.0.1:{PORT}"
POLICY = ROOT / "deploy" / "policy" / "example.yaml"
ES = ROOT / "deploy" / "local" / "elasticsearch.sh"
ES_PORT = os.environ.get("SEPWATCH_TEST_ES_PORT", "19200")
ES_URL = f"http://127.0.0.1:{ES_PORT}"
# Signs the end-of-input markers tests send; every test worker holds it.
MARKER_KEY = SecretStr("integration-tests-end-of-input")
ADAPTER_PARTITIONS = 4  # of every topic an adapter_worker test makes


@pytest.fixture(scope="session")
def broker() -> Iterator[str]:
    """A real broker on its own port, started for the test session, stopped after."""
    env = {**os.environ, "SEPWATCH_KAFKA_PORT": PORT}
    # A broker already running on the port (started by hand) is used and left running.
    ours = subprocess.run([str(KAFKA), "status"], env=env, capture_output=True).returncode != 0
    subprocess.run([str(KAFKA), "up"], check=True, env=env, timeout=600)
    try:
        yield BROKER
    finally:
        if ours:
            subprocess.run([str(KAFKA), "down"], check=False, env=env, timeout=120)


@pytest.fixture(scope="session")
def elasticsearch() -> Iterator[str]:
    """A real Elasticsearch node on its own port, started for the session."""
    env = {**os.environ, "SEPWATCH_ES_PORT": ES_PORT}
    ours = subprocess.run([str(ES), "status"], env=env, capture_output=True).returncode != 0
    subprocess.run([str(ES), "up"], check=True, env=env, timeout=900)
    try:
        yield ES_URL
    finally:
        if ours:
            subprocess.run([str(ES), "down"], check=False, env=env, timeout=180)


@pytest.fixture(autouse=True)
def topics_removed_after(request: pytest.FixtureRequest) -> Iterator[None]:
    """The topics a test made on the session's broker are deleted after it.

    Every test makes its own (a fresh prefix): left in place, a whole suite's
    worth of partitions holds a file descriptor and two memory maps each, and
    the broker died of that near the end of a CI run (ECONNREFUSED in the
    last tests). Kafka's internal topics (`__...`) stay."""
    if "broker" not in request.fixturenames:
        yield
        return
    request.getfixturevalue("broker")  # up before the topics are listed
    before = _topics()
    yield
    made = sorted(t for t in _topics() - before if not t.startswith("__"))
    if made:
        try:
            client = admin(BROKER)
            try:
                client.delete_topics(made, timeout_ms=30_000)
            finally:
                client.close()
        except Exception as exc:  # a test that left the broker down: nothing to clean
            print(f"topics of {request.node.name} not deleted: {exc}")


def _topics() -> set[str]:
    try:
        client = admin(BROKER)
    except Exception:  # the broker is not up (yet): the test will say so
        return set()
    try:
        return set(client.list_topics())
    finally:
        client.close()


@pytest.fixture
def prefix() -> str:
    """A fresh topic prefix: every test sees only its own data."""
    return f"t{uuid.uuid4().hex[:8]}."


class Worker:
    """`sepwatch worker` as a separate process, as an operator runs it."""

    def __init__(
        self,
        broker: str,
        prefix: str,
        state: Path,
        log: Path,
        policy: Path = POLICY,
        es_url: str = "",
        web_port: int = 0,
        env: dict[str, str] | None = None,
    ) -> None:
        self.log = log
        self._out = log.open("ab")
        env = {
            **os.environ,
            "SEPWATCH_BROKER": broker,
            "SEPWATCH_TOPIC_PREFIX": prefix,
            # Without an Elasticsearch the worker runs no sink.
            "SEPWATCH_ES_URL": es_url,
            "SEPWATCH_ES_INDEX": f"{prefix.rstrip('.')}-findings",
            "SEPWATCH_END_OF_INPUT_KEY": MARKER_KEY.get_secret_value(),
            "PYTHONUNBUFFERED": "1",  # the log is read while the worker runs
            **(env or {}),  # e.g. credentials: in the environment, never in argv
        }
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cli.main",
                "worker",
                "--policy",
                str(policy),
                "--state-dir",
                str(state),
                "--web-port",
                str(web_port),
                "--loglevel",
                "info",
            ],
            stdout=self._out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            text = self.log.read_text(errors="replace")
            if text.count("Ready") > seen or "[^Worker]: Ready" in text:
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited {self.proc.returncode}:\n{text[-3000:]}")
            time.sleep(0.3)
        raise AssertionError("worker not ready in time:\n" + self.log.read_text()[-3000:])

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        self._out.close()


@dataclass(frozen=True)
class AdapterWorker:
    """A ready worker that adapts raw vendor records with the example mapping:
    its topics (the raw ones too), /metrics on `port`, and a producer onto
    the raw topics."""

    topics: Topics
    worker: Worker
    port: int
    raw: KafkaProducer

    def series(self, prefix: str = "sepwatch_adapter_") -> dict[str, float]:
        """The /metrics series whose names start with `prefix`, by name and labels."""
        url = f"http://127.0.0.1:{self.port}/metrics"
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        return {
            name: float(value)
            for line in text.splitlines()
            if line.startswith(prefix)
            for name, value in [line.rsplit(" ", 1)]
        }


@pytest.fixture
def adapter_worker(
    broker: str, prefix: str, tmp_path: Path
) -> Iterator[Callable[..., AdapterWorker]]:
    """Starts the test's adapting worker (with an Elasticsearch at `es_url`,
    if given, and `env` added to its environment) and waits until it is
    ready; stopped, with its producer closed, after the test."""
    started: list[AdapterWorker] = []

    def start(es_url: str = "", env: dict[str, str] | None = None) -> AdapterWorker:
        topics = Topics(prefix)
        ensure_topics(broker, topics, ADAPTER_PARTITIONS, retention_ms=3_600_000)
        raw = KafkaProducer(bootstrap_servers=broker)
        port = free_port()
        worker = Worker(
            broker,
            prefix,
            tmp_path / "state",
            tmp_path / "worker.log",
            es_url=es_url,
            web_port=port,
            env={"SEPWATCH_MAPPING": str(MAPPING), **(env or {})},
        )
        started.append(AdapterWorker(topics, worker, port, raw))
        worker.wait_ready()
        return started[-1]

    yield start
    for w in started:
        w.raw.close()
        w.worker.stop()
