"""The worker on a real broker that takes only TLS with SASL/SCRAM-SHA-512
(deploy/local/kafka.sh with SEPWATCH_KAFKA_SECURITY=sasl_ssl), configured
through settings alone: secrets from files, never from argv or the log."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.harness import wait_for
from streams.kafka_io import KafkaUnavailable, ensure_topics, produce, read_topics
from streams.settings import Settings
from streams.topics import Topics
from tests.integration.conftest import KAFKA, MARKER_KEY, ROOT, Worker
from tests.integration.settle import settled
from tests.integration.test_stream import _compare, _day, _exported, _replayed

pytestmark = pytest.mark.integration
PORT = os.environ.get("SEPWATCH_TEST_SECURE_KAFKA_PORT", "19093")
BOOTSTRAP = f"127.0.0.1:{PORT}"
PARTITIONS = 2


@dataclass(frozen=True)
class SecureBroker:
    bootstrap: str
    cafile: Path
    password_file: Path

    def settings_env(self, secrets_dir: Path) -> dict[str, str]:
        """What an operator sets: no secret in it, only where the secrets are."""
        return {
            "SEPWATCH_BROKER": self.bootstrap,
            "SEPWATCH_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "SEPWATCH_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "SEPWATCH_KAFKA_SASL_USERNAME": "sepwatch",
            "SEPWATCH_KAFKA_SSL_CAFILE": str(self.cafile),
            "SEPWATCH_SECRETS_DIR": str(secrets_dir),
        }


@pytest.fixture(scope="module")
def secure_broker() -> Iterator[SecureBroker]:
    env = {**os.environ, "SEPWATCH_KAFKA_PORT": PORT, "SEPWATCH_KAFKA_SECURITY": "sasl_ssl"}
    ours = subprocess.run([str(KAFKA), "status"], env=env, capture_output=True).returncode != 0
    up = subprocess.run(
        [str(KAFKA), "up"], check=True, env=env, timeout=600, capture_output=True, text=True
    )
    where = {
        k.strip(): Path(v.strip())
        for k, _, v in (line.partition(":") for line in up.stdout.splitlines())
        if k.strip() in ("CA file", "password file")
    }
    try:
        assert set(where) == {"CA file", "password file"}, up.stdout
        password = where["password file"].read_text().strip()
        assert password and password not in up.stdout + up.stderr
        assert where["password file"].stat().st_mode & 0o077 == 0  # 0600
        yield SecureBroker(BOOTSTRAP, where["CA file"], where["password file"])
    finally:
        if ours:
            subprocess.run([str(KAFKA), "down"], check=False, env=env, timeout=120)


@pytest.fixture
def secrets_dir(secure_broker: SecureBroker, tmp_path: Path) -> Path:
    """A mounted-secrets directory: one file per setting, as Docker/Kubernetes make."""
    folder = tmp_path / "secrets"
    folder.mkdir(mode=0o700)
    shutil.copy(secure_broker.password_file, folder / "sepwatch_kafka_sasl_password")
    return folder


@pytest.fixture
def settings(
    secure_broker: SecureBroker, secrets_dir: Path, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    for name, value in secure_broker.settings_env(secrets_dir).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SEPWATCH_TOPIC_PREFIX", prefix)
    monkeypatch.delenv("SEPWATCH_KAFKA_SASL_PASSWORD", raising=False)
    return Settings()


def test_worker_configured_by_settings_finds_over_sasl_ssl(
    secure_broker: SecureBroker, secrets_dir: Path, settings: Settings, prefix: str, tmp_path: Path
) -> None:
    password = secure_broker.password_file.read_text().strip()
    assert settings.kafka_sasl_password is not None
    assert settings.kafka_sasl_password.get_secret_value() == password
    topics = Topics(prefix)
    ensure_topics(settings.kafka, topics, PARTITIONS, retention_ms=3_600_000)
    lines = _day(users=20, hours=1, seed=3)
    want = _replayed(lines)
    assert want, "the sample must give findings"
    worker = Worker(
        BOOTSTRAP,
        prefix,
        tmp_path / "state",
        tmp_path / "worker.log",
        env={**secure_broker.settings_env(secrets_dir), "SEPWATCH_PARTITIONS": str(PARTITIONS)},
    )
    try:
        worker.wait_ready(timeout=180)
        produce(lines, settings.kafka, topics, end_of_input=True, marker_key=MARKER_KEY)
        wait_for(lambda: len(_exported(settings.kafka, topics)) >= len(want), timeout=180)
        settled(settings.kafka, topics)  # a duplicate or an extra is on the topic by now
        _compare(want, _exported(settings.kafka, topics))
        argv = Path(f"/proc/{worker.proc.pid}/cmdline").read_bytes()
        environ = Path(f"/proc/{worker.proc.pid}/environ").read_bytes()
    finally:
        worker.stop()
    assert b"SASL_SSL" in environ  # the right process was read
    assert password.encode() not in argv
    assert password.encode() not in environ  # it came from the secrets directory
    log = worker.log.read_text(errors="replace")
    assert "sepwatch" in log or "Ready" in log
    assert password not in log


def test_wrong_password_stops_the_worker_with_a_clear_error(
    secure_broker: SecureBroker, tmp_path: Path, prefix: str
) -> None:
    wrong = secrets.token_urlsafe(16)
    folder = tmp_path / "wrong-secrets"
    folder.mkdir()
    (folder / "sepwatch_kafka_sasl_password").write_text(wrong + "\n")
    env = {
        **os.environ,
        **secure_broker.settings_env(folder),
        "SEPWATCH_TOPIC_PREFIX": prefix,
        "SEPWATCH_ES_URL": "",
    }
    env.pop("SEPWATCH_KAFKA_SASL_PASSWORD", None)
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "worker", "--state-dir", str(tmp_path / "s")],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,  # a hang fails here
    )
    out = done.stdout + done.stderr
    assert done.returncode == 2, out[-3000:]
    assert "cannot connect to Kafka at" in out and "SASL_SSL" in out, out[-3000:]
    # The broker's reason when the client got it. Under load the client has
    # reported only the connection the broker closes after a refused login
    # (twice in about ten runs); why the reason did not reach it is not known.
    assert "Authentication failed" in out or "socket disconnected" in out, out[-3000:]
    assert "SEPWATCH_KAFKA_SASL_PASSWORD" in out  # says what to check
    assert wrong not in out
    assert time.monotonic() - began < 150


def test_a_plaintext_client_cannot_read_the_topics(
    secure_broker: SecureBroker, settings: Settings, prefix: str
) -> None:
    topics = Topics(prefix)
    ensure_topics(settings.kafka, topics, PARTITIONS, retention_ms=3_600_000)
    produce(_day(users=5, hours=0.5, seed=4), settings.kafka, topics, end_of_input=False)
    assert read_topics(settings.kafka, topics.inputs)  # there is something to read
    got: list[object] = []
    with pytest.raises(KafkaUnavailable):  # the TLS listener never answers plaintext
        got = read_topics(BOOTSTRAP, topics.inputs, timeout_s=20)
    assert got == []
