"""Settings shared by every command: flags win, then SEPWATCH_* environment
variables, then the config file (`SEPWATCH_CONFIG`, default ./sepwatch.toml)."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DEFAULT_POLICY = Path("deploy/policy/example.yaml")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SEPWATCH_", extra="ignore")

    policy: Path = Field(DEFAULT_POLICY, description="policy YAML file")
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
    web_port: int = Field(6066, description="worker's web port (/metrics); 0 turns it off")
    partitions: int = Field(4, description="partitions of every sepwatch topic", ge=1)
    retention_ms: int = Field(7 * 24 * 3600 * 1000, description="retention of sepwatch topics")

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
