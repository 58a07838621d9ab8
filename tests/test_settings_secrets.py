"""No secret in the clear: settings that would send one unencrypted are
refused at start, naming the setting to change; secrets are SecretStr; a
misspelt key in sepwatch.toml is an error."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError
from typer.testing import CliRunner

from cli.main import app
from streams.settings import ChannelSettings, Settings


@pytest.fixture(autouse=True)
def _no_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SEPWATCH_CONFIG", str(tmp_path / "none.toml"))
    for name in ("API_KEY", "USERNAME", "PASSWORD", "URL"):
        monkeypatch.delenv(f"SEPWATCH_ES_{name}", raising=False)


def test_elasticsearch_credentials_over_plain_http_are_refused() -> None:
    with pytest.raises(ValidationError, match="use https:// in SEPWATCH_ES_URL"):
        Settings(es_url="http://es.bank.internal:9200", es_username="w", es_password="pw")
    with pytest.raises(ValidationError, match="plain http"):
        Settings(es_url="http://es.bank.internal:9200", es_api_key="a2V5OnNlY3JldA==")
    # Without credentials, or over TLS, or on this machine only: accepted.
    Settings(es_url="http://es.bank.internal:9200")
    Settings(es_url="https://es.bank.internal:9200", es_username="w", es_password="pw")
    Settings(es_url="http://127.0.0.1:9200", es_username="w", es_password="pw")


@pytest.mark.parametrize(
    ("channel", "says"),
    [
        ({"kind": "slack", "url": "http://hooks.example/services/T/B/X"}, "webhook URL"),
        ({"kind": "webhook", "url": "http://siem.example/in", "secret": "k"}, "signed"),
        (
            {"kind": "pagerduty", "url": "http://pd.example/v2", "routing_key": "r"},
            "routing key",
        ),
        (
            {"kind": "email", "smtp_host": "mail", "smtp_username": "u", "smtp_password": "p"},
            "smtp_starttls = true",
        ),
    ],
)
def test_a_channel_that_would_send_a_secret_in_the_clear_is_refused(
    channel: dict[str, str], says: str
) -> None:
    with pytest.raises(ValidationError, match=says) as refused:
        ChannelSettings.model_validate(channel)
    for secret in ("services/T/B/X", "'k'", "'r'", "'p'"):
        assert secret not in str(refused.value)


def test_channels_over_tls_or_without_secrets_are_accepted() -> None:
    ChannelSettings(kind="slack", url=SecretStr("https://hooks.example/services/T/B/X"))
    ChannelSettings(kind="alertmanager", url=SecretStr("http://alertmanager:9093"))
    ChannelSettings.model_validate(
        {"kind": "email", "smtp_host": "m", "smtp_username": "u", "smtp_tls": True}
    )


def test_the_slack_url_is_a_secret() -> None:
    c = ChannelSettings(kind="slack", url=SecretStr("https://hooks.example/services/T/B/X"))
    assert isinstance(c.url, SecretStr)
    assert "services/T/B/X" not in repr(c) and "services/T/B/X" not in str(c)


def test_an_unknown_key_in_the_config_file_is_an_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "sepwatch.toml"
    config.write_text('brokr = "kafka:9092"\n', encoding="utf-8")
    monkeypatch.setenv("SEPWATCH_CONFIG", str(config))
    with pytest.raises(ValidationError, match="brokr"):
        Settings()
    result = CliRunner().invoke(app, ["findings", "list"])
    assert result.exit_code == 2
    said = "".join(result.output.split())  # the console wraps at its width
    assert f"brokr:notasetting(in{config}" in said
    # An unknown SEPWATCH_* variable in the environment is not a setting: left alone.
    config.write_text('broker = "kafka:9092"\n', encoding="utf-8")
    monkeypatch.setenv("SEPWATCH_TEST_KAFKA_PORT", "19092")
    assert Settings().broker == "kafka:9092"
