"""Settings shared by every command: flags win, then SEPWATCH_* environment
variables, then the config file (`SEPWATCH_CONFIG`, default ./sepwatch.toml)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DEFAULT_POLICY = Path("deploy/policy/example.yaml")

ChannelKind = Literal["alertmanager", "webhook", "slack", "email", "pagerduty"]


class ChannelSettings(BaseModel):
    """One notification channel (`[channels.NAME]` in sepwatch.toml, or
    SEPWATCH_CHANNELS__NAME__FIELD). Here, not in the policy, because it holds
    secrets; the policy's routes name channels only."""

    model_config = ConfigDict(extra="forbid")

    kind: ChannelKind
    url: str = Field("", description="endpoint (alertmanager: its base URL)")
    secret: SecretStr | None = Field(None, description="webhook: HMAC-SHA256 signing key")
    routing_key: SecretStr | None = Field(None, description="pagerduty: integration key")
    smtp_host: str = ""
    smtp_port: int = 25
    smtp_starttls: bool = False
    smtp_username: str = ""
    smtp_password: SecretStr | None = None
    mail_from: str = ""
    mail_to: list[str] = []
    timeout_s: float = Field(10.0, gt=0, description="one attempt's time limit")
    send_resolved: bool | None = Field(
        None,
        description="also notify a group's close when it has nothing new to report "
        "(default as Alertmanager: yes for alertmanager, webhook, pagerduty; no for "
        "slack and email)",
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SEPWATCH_", extra="ignore", env_nested_delimiter="__"
    )

    policy: Path = Field(DEFAULT_POLICY, description="policy YAML file")
    mapping: Path = Field(
        Path("deploy/policy/vendor-mapping.yaml"), description="vendor mapping YAML (adapters)"
    )
    broker: str = Field("localhost:9092", description="Kafka bootstrap servers")
    topic_prefix: str = Field("sepwatch.", description="prefix of every Kafka topic")
    state_dir: Path = Field(Path(".sepwatch-state"), description="worker's local state")
    es_url: str = Field(
        "http://localhost:9200", description="Elasticsearch URL; empty: no Elasticsearch sink"
    )
    es_index: str = Field(
        "sepwatch-findings",
        description="alias of the findings indices (monthly indices ES_INDEX-YYYY.MM)",
    )
    es_retention_days: int = Field(
        400, description="monthly findings indices wholly older than this are deleted", ge=1
    )
    # Elasticsearch with security on. Secrets come from the environment (or the
    # config file), never from a flag: a flag shows in `ps` and shell history.
    es_api_key: SecretStr | None = Field(
        None,
        description="API key, encoded as Elasticsearch returns it (base64 of id:key); "
        "used instead of a user when set",
    )
    es_username: str = Field("", description="user of Elasticsearch's native or file realm")
    es_password: SecretStr | None = Field(None, description="that user's password")
    es_ca_file: Path | None = Field(
        None, description="PEM CA that signed Elasticsearch's HTTPS certificate"
    )
    es_install_template: bool = Field(
        True,
        description="the worker installs the findings index template; false when its "
        "least-privilege key may not (`sepwatch elasticsearch setup` installed it)",
    )

    @field_validator("es_url")
    @classmethod
    def _no_password_in_es_url(cls, url: str) -> str:
        # The URL is shown in error messages and logs; a password in it would be too.
        if urlsplit(url).password:
            raise ValueError("no password in es_url: set SEPWATCH_ES_PASSWORD or an API key")
        return url

    web_port: int = Field(6066, description="worker's web port (/metrics); 0 turns it off")
    web_host: str = Field(
        "127.0.0.1",
        description="address the web port listens on; 0.0.0.0 to be scraped from other hosts",
    )
    partitions: int = Field(4, description="partitions of every sepwatch topic", ge=1)
    retention_ms: int = Field(7 * 24 * 3600 * 1000, description="retention of sepwatch topics")
    # Five minutes: NTP keeps hosts within a second; a source's clock more than
    # minutes ahead is broken or forging, and one such event would move the
    # watermark on and release every decision still waiting for its events.
    max_event_ahead_s: float = Field(
        300.0,
        gt=0,
        description="input events stamped further ahead of the broker's append time "
        "go to the dead letters",
    )
    channels: dict[str, ChannelSettings] = Field(
        {}, description="notification channels by name; none: the worker runs no alert router"
    )
    alerts_link_base: str = Field(
        "",
        description="link to a finding in notifications: {finding_id} is replaced, "
        "or the id is appended (e.g. a Kibana URL)",
    )
    alerts_attempts: int = Field(5, ge=1, description="delivery attempts before a dead letter")
    alerts_backoff_s: float = Field(1.0, gt=0, description="first retry delay (doubles)")
    alerts_backoff_cap_s: float = Field(60.0, gt=0, description="longest retry delay")
    alerts_concurrency: int = Field(8, ge=1, description="deliveries under way at once")
    alerts_idle_s: float = Field(
        30.0,
        gt=0,
        description="after this long with no finding, the router's event clock runs "
        "on with the wall clock, so quiet groups still close",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        config = Path(os.environ.get("SEPWATCH_CONFIG", "sepwatch.toml"))
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=config),
        )
