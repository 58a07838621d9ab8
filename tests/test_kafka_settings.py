"""Kafka security settings, secrets from files, and the client options made from them."""

from __future__ import annotations

import os
import ssl
import subprocess
from pathlib import Path

import pytest
from pydantic import ValidationError

from detectors.pseudonyms import Pseudonymiser
from streams.kafka_connection import KafkaConnection, connection
from streams.settings import ChannelSettings, Settings

KEYED = Pseudonymiser(b"test pseudonym key")

PASSWORD = "s3cret-Pa55word"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Only what a test sets: no stray SEPWATCH_* or sepwatch.toml."""
    for name in list(os.environ):
        if name.startswith("SEPWATCH_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SEPWATCH_CONFIG", str(tmp_path / "absent.toml"))


@pytest.fixture
def ca(tmp_path: Path) -> Path:
    key, crt = tmp_path / "ca.key", tmp_path / "ca.crt"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(crt), "-subj", "/CN=test CA"),
        ],
        check=True,
        capture_output=True,
    )
    return crt


def test_plaintext_stays_the_default() -> None:
    kafka = Settings(broker="127.0.0.1:9092").kafka
    assert kafka.client_options() == {
        "bootstrap_servers": "127.0.0.1:9092",
        "security_protocol": "PLAINTEXT",
    }
    assert kafka.faust_credentials() is None
    assert connection("h:1") == KafkaConnection("h:1")


def test_password_from_the_secrets_directory(
    tmp_path: Path, ca: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "sepwatch_kafka_sasl_password").write_text(PASSWORD + "\n")
    monkeypatch.setenv("SEPWATCH_SECRETS_DIR", str(secrets))
    monkeypatch.setenv("SEPWATCH_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("SEPWATCH_KAFKA_SASL_USERNAME", "sepwatch")
    monkeypatch.setenv("SEPWATCH_KAFKA_SSL_CAFILE", str(ca))
    settings = Settings()
    assert settings.kafka_sasl_password is not None
    assert settings.kafka_sasl_password.get_secret_value() == PASSWORD
    options = settings.kafka.client_options()
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "sepwatch"
    assert options["sasl_plain_password"] == PASSWORD
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    # What may be printed or logged names no secret.
    for shown in (str(settings.kafka), settings.kafka.describe(), repr(settings)):
        assert PASSWORD not in shown
    credentials = settings.kafka.faust_credentials()
    assert credentials is not None and PASSWORD not in repr(credentials)


def test_the_environment_wins_over_the_secrets_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "sepwatch_kafka_sasl_password").write_text("from-file")
    monkeypatch.setenv("SEPWATCH_SECRETS_DIR", str(tmp_path))
    monkeypatch.setenv("SEPWATCH_KAFKA_SASL_PASSWORD", "from-env")
    password = Settings().kafka_sasl_password
    assert password is not None and password.get_secret_value() == "from-env"


def test_sasl_without_a_password_is_refused_without_echoing_values() -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_username=PASSWORD)
    assert "kafka_sasl_password" in str(refused.value)
    assert PASSWORD not in str(refused.value)


def test_a_client_certificate_needs_its_key(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="go together"):
        Settings(kafka_security_protocol="SSL", kafka_ssl_certfile=tmp_path / "c.pem")


def test_channel_secrets_from_files(tmp_path: Path) -> None:
    (tmp_path / "hook").write_text("signing-key\n")
    (tmp_path / "pd").write_text("routing-key")
    (tmp_path / "smtp").write_text("mail-password")
    hook = ChannelSettings(kind="webhook", url="https://x", secret_file=tmp_path / "hook")
    pager = ChannelSettings(kind="pagerduty", routing_key_file=tmp_path / "pd")
    mail = ChannelSettings(kind="email", smtp_password_file=tmp_path / "smtp")
    assert hook.secret is not None and hook.secret.get_secret_value() == "signing-key"
    assert pager.routing_key is not None and pager.routing_key.get_secret_value() == "routing-key"
    assert mail.smtp_password is not None
    assert mail.smtp_password.get_secret_value() == "mail-password"


def test_a_channel_secret_given_twice_or_unreadable_is_refused(tmp_path: Path) -> None:
    (tmp_path / "hook").write_text("k")
    with pytest.raises(ValidationError, match="not both"):
        ChannelSettings(kind="webhook", secret="k", secret_file=tmp_path / "hook")
    with pytest.raises(ValidationError, match="cannot read"):
        ChannelSettings(kind="webhook", secret_file=tmp_path / "missing")


def test_channel_secret_file_through_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "hook").write_text("signing-key")
    monkeypatch.setenv("SEPWATCH_CHANNELS__OPS__KIND", "webhook")
    monkeypatch.setenv("SEPWATCH_CHANNELS__OPS__SECRET_FILE", str(tmp_path / "hook"))
    secret = Settings().channels["ops"].secret
    assert secret is not None and secret.get_secret_value() == "signing-key"


def test_a_killed_worker_holds_its_partitions_ten_seconds_not_faust_s_minute(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from schemas.policy_file import load_policy
    from streams.topology import build_app

    policy = load_policy(Path(__file__).parents[1] / "deploy" / "policy" / "example.yaml")
    app = build_app(Settings(state_dir=tmp_path, web_port=0), policy, pseudonyms=KEYED)
    assert app.conf.broker_session_timeout == 10.0
    assert app.conf.broker_heartbeat_interval == 3.0
    assert Settings().group_membership == {
        "session_timeout_ms": 10_000,
        "heartbeat_interval_ms": 3_000,
    }

    monkeypatch.setenv("SEPWATCH_KAFKA_SESSION_TIMEOUT_S", "6")
    six = Settings()
    assert six.group_membership == {"session_timeout_ms": 6_000, "heartbeat_interval_ms": 2_000}
    app = build_app(Settings(state_dir=tmp_path, web_port=0), policy, pseudonyms=KEYED)
    assert app.conf.broker_session_timeout == 6.0

    # Below what a broker accepts (group.min.session.timeout.ms, 6 s): refused here.
    monkeypatch.setenv("SEPWATCH_KAFKA_SESSION_TIMEOUT_S", "2")
    with pytest.raises(ValidationError, match="kafka_session_timeout_s"):
        Settings()


def test_the_table_changelogs_are_not_watched_as_streams(tmp_path: Path) -> None:
    """Faust's stall monitor watches acknowledged topics: changelogs, read
    only to restore, would be reported stalled (ERROR) after 5 minutes. (At
    least once: exactly once, the stages' tables are not Faust's.)"""
    from schemas.policy_file import load_policy
    from streams.topology import build_app

    policy = load_policy(Path(__file__).parents[1] / "deploy" / "policy" / "example.yaml")
    settings = Settings(state_dir=tmp_path, web_port=0, processing_guarantee="at_least_once")
    app = build_app(settings, policy, pseudonyms=KEYED)
    tables = list(app.tables.values())
    assert len(tables) == 21  # 3 stages x 7 stores
    assert all(table.changelog_topic.acks is False for table in tables)


def test_no_standby_copies_unless_asked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from schemas.policy_file import load_policy
    from streams.topology import build_app

    policy = load_policy(Path(__file__).parents[1] / "deploy" / "policy" / "example.yaml")
    app = build_app(Settings(state_dir=tmp_path, web_port=0), policy, pseudonyms=KEYED)
    assert app.conf.table_standby_replicas == 0  # Faust's own default would be 1
    monkeypatch.setenv("SEPWATCH_STANDBY_REPLICAS", "1")
    app = build_app(Settings(state_dir=tmp_path, web_port=0), policy, pseudonyms=KEYED)
    assert app.conf.table_standby_replicas == 1
    monkeypatch.setenv("SEPWATCH_STANDBY_REPLICAS", "-1")
    with pytest.raises(ValidationError, match="standby_replicas"):
        Settings()
