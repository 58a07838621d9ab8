"""Settings shared by every command: flags win, then SEPWATCH_* environment
variables, then secret files (`SEPWATCH_SECRETS_DIR`), then the config file
(`SEPWATCH_CONFIG`, default ./sepwatch.toml).

Secrets are never flags. They come from the environment, or from files:
pydantic-settings' secrets directory (as Docker and Kubernetes mount secrets),
one file per setting named like its environment variable, e.g.
$SEPWATCH_SECRETS_DIR/sepwatch_kafka_sasl_password; a channel's secrets, which
sit inside `channels`, from its `*_file` fields instead."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SecretsSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from streams.kafka_connection import KafkaConnection

DEFAULT_POLICY = Path("deploy/policy/example.yaml")

ChannelKind = Literal["alertmanager", "webhook", "slack", "email", "pagerduty"]
KafkaSecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
KafkaSaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


def in_the_clear(url: str) -> bool:
    """A plain-http URL to another host: what it carries crosses the network
    unencrypted. Loopback stays on the machine (local test servers)."""
    parts = urlsplit(url)
    return parts.scheme == "http" and parts.hostname not in ("127.0.0.1", "localhost", "::1")


def read_secret_file(path: Path, what: str) -> SecretStr:
    """A secret kept in a file (a mounted secret): its content, without the
    trailing newline editors add."""
    try:
        return SecretStr(path.read_text(encoding="utf-8").strip())
    except OSError as exc:
        # The path may be logged; the content never is.
        raise ValueError(f"{what}: cannot read {path}: {exc.strerror}") from None


class ChannelSettings(BaseModel):
    """One notification channel (`[channels.NAME]` in sepwatch.toml, or
    SEPWATCH_CHANNELS__NAME__FIELD). Here, not in the policy, because it holds
    secrets; the policy's routes name channels only."""

    # A refused value is not echoed in the error: it may be a secret.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    kind: ChannelKind
    # Secret: a Slack incoming-webhook URL is itself the credential.
    url: SecretStr = Field(SecretStr(""), description="endpoint (alertmanager: its base URL)")
    secret: SecretStr | None = Field(None, description="webhook: HMAC-SHA256 signing key")
    routing_key: SecretStr | None = Field(None, description="pagerduty: integration key")
    smtp_host: str = ""
    smtp_port: int = 25
    smtp_starttls: bool = False
    smtp_tls: bool = Field(False, description="implicit TLS from the first byte (port 465)")
    smtp_username: str = ""
    smtp_password: SecretStr | None = None
    secret_file: Path | None = Field(None, description="file holding `secret`")
    routing_key_file: Path | None = Field(None, description="file holding `routing_key`")
    smtp_password_file: Path | None = Field(None, description="file holding `smtp_password`")
    mail_from: str = ""
    mail_to: list[str] = []
    timeout_s: float = Field(10.0, gt=0, description="one attempt's time limit")
    send_resolved: bool | None = Field(
        None,
        description="also notify a group's close when it has nothing new to report "
        "(default as Alertmanager: yes for alertmanager, webhook, pagerduty; no for "
        "slack and email)",
    )

    @model_validator(mode="after")
    def _secrets_from_files(self) -> ChannelSettings:
        for name in ("secret", "routing_key", "smtp_password"):
            path = getattr(self, f"{name}_file")
            if path is None:
                continue
            if getattr(self, name) is not None:
                raise ValueError(f"give {name} or {name}_file, not both")
            setattr(self, name, read_secret_file(path, f"{name}_file"))
        return self

    @model_validator(mode="after")
    def _no_secret_in_the_clear(self) -> ChannelSettings:
        url = self.url.get_secret_value()
        carries = {
            "webhook": "its signed payloads (set `secret`)" if self.secret else "",
            "slack": "the webhook URL, which is the credential",
            "pagerduty": "the routing key" if self.routing_key else "",
        }.get(self.kind, "")
        if carries and in_the_clear(url):
            raise ValueError(
                f"url is plain http: {carries} would cross the network in the clear; use https://"
            )
        if self.smtp_username and not (self.smtp_starttls or self.smtp_tls):
            raise ValueError(
                "an SMTP login needs an encrypted connection: set smtp_starttls = true "
                "(port 587) or smtp_tls = true (port 465)"
            )
        return self


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SEPWATCH_",
        # A misspelt key in sepwatch.toml is refused, not silently a default (as
        # in the policy). Environment variables are read by name only: an unknown
        # SEPWATCH_* variable is not a setting and is left alone.
        extra="forbid",
        env_nested_delimiter="__",
        # A refused value is not echoed in the error: it may be a secret.
        hide_input_in_errors=True,
    )

    policy: Path = Field(DEFAULT_POLICY, description="policy YAML file")
    # Only a configured mapping is loaded: a bank's own policy need not name
    # every app the shipped example mapping does (the demo configures it).
    mapping: Path | None = Field(
        None,
        description="vendor mapping YAML (adapters); the worker reads the raw vendor "
        "topics only with one, e.g. deploy/policy/vendor-mapping.yaml",
    )
    broker: str = Field("localhost:9092", description="Kafka bootstrap servers")
    kafka_security_protocol: KafkaSecurityProtocol = Field(
        "PLAINTEXT", description="how every Kafka client connects: TLS (SSL), SASL, or both"
    )
    kafka_sasl_mechanism: KafkaSaslMechanism = Field("SCRAM-SHA-512", description="SASL mechanism")
    kafka_sasl_username: str = Field("", description="SASL user")
    kafka_sasl_password: SecretStr | None = Field(
        None, description="SASL password (environment or secrets directory only)"
    )
    kafka_ssl_cafile: Path | None = Field(
        None, description="CA certificates (PEM) to verify the broker; none: the system's"
    )
    kafka_ssl_certfile: Path | None = Field(None, description="client certificate (PEM), mTLS")
    kafka_ssl_keyfile: Path | None = Field(None, description="client private key (PEM), mTLS")
    kafka_ssl_key_password: SecretStr | None = Field(
        None, description="password of the client private key, if encrypted"
    )
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
        400,
        description="`sepwatch elasticsearch retention` deletes monthly findings indices "
        "wholly older than this (an administrator's command; the worker deletes nothing)",
        ge=1,
    )
    evidence_retention_days: int = Field(
        400,
        ge=1,
        description="retention of the findings and lifecycle topics, the evidence "
        "`sepwatch evidence verify` checks Elasticsearch against (two review periods)",
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

    @model_validator(mode="after")
    def _no_es_credentials_in_the_clear(self) -> Settings:
        if (self.es_api_key or self.es_username) and in_the_clear(self.es_url):
            raise ValueError(
                f"es_url {self.es_url} is plain http: the Elasticsearch credentials would "
                "cross the network in the clear; use https:// in SEPWATCH_ES_URL (with "
                "SEPWATCH_ES_CA_FILE), or no credentials"
            )
        return self

    @field_validator("es_url")
    @classmethod
    def _no_password_in_es_url(cls, url: str) -> str:
        # The URL is shown in error messages and logs; a password in it would be too.
        if urlsplit(url).password:
            raise ValueError("no password in es_url: set SEPWATCH_ES_PASSWORD or an API key")
        return url

    # The SOC console (`sepwatch console`, console/).
    console_host: str = Field("127.0.0.1", description="address the console listens on")
    console_port: int = Field(8080, ge=1, le=65535, description="the console's port")
    console_trusted_header: str = Field(
        "",
        description="header naming the signed-in user, set by an authenticating reverse "
        "proxy (e.g. X-Forwarded-User); empty: people sign in with their Elasticsearch "
        "credentials. Only when nothing but the proxy can reach the console",
    )
    console_session_secret: SecretStr | None = Field(
        None,
        description="key of the console's CSRF tokens; none: a random key per start "
        "(forms open before a restart are refused after it)",
    )
    console_https: bool = Field(
        False,
        description="mark cookies Secure: the console is served over https (by itself "
        "or a TLS-terminating proxy)",
    )

    web_port: int = Field(6066, description="worker's web port (/metrics); 0 turns it off")
    web_host: str = Field(
        "127.0.0.1",
        description="address the web port listens on; 0.0.0.0 to be scraped from other hosts",
    )
    # Kafka's own default for the Java consumer is 45 s and Faust's 60 s; a
    # worker killed outright holds its partitions that long before a successor
    # or a peer gets them. 10 s is aiokafka's default (the sink's and alert
    # router's consumers use it too); the broker allows 6 s at least.
    kafka_session_timeout_s: float = Field(
        10.0,
        ge=6.0,
        le=90.0,
        description="consumer group session: how long a worker that stopped "
        "heartbeating (killed, frozen) keeps its partitions",
    )
    # Kafka Streams' default, not Faust's (1): a standby copy is every table
    # change read again by each other worker, record by record; with two
    # workers on two cores that halved what they took (docs/BENCHMARKS.md).
    # Without one, a worker taking over partitions restores them from the
    # changelog, as a restarted worker does.
    standby_replicas: int = Field(
        0,
        ge=0,
        description="at_least_once only: standby copies of each stage partition's tables "
        "kept by other workers (faster takeover, each costs every table change read again)",
    )
    partitions: int = Field(4, description="partitions of every sepwatch topic", ge=1)
    # README, "Streaming on Kafka": the device identity graph is per device
    # stage partition; one partition sees every posture, as replay does.
    learned_identity: bool = Field(
        False,
        description="judge the whole device stage on one partition, so device ids learned "
        "from every posture feed resolve as in replay, and send postures with aliases to every "
        "user stage partition, so DLP alerts name devices alike (costs the device stage's "
        "parallelism, and a copy of the graph in each user partition)",
    )
    # None: the production defaults, from the cluster's size at start (one
    # broker lost loses no state and no finding, and writes go on).
    replication_factor: int | None = Field(
        None,
        ge=1,
        description="replicas of every sepwatch topic; default 3, or the number of "
        "brokers if fewer",
    )
    min_insync_replicas: int | None = Field(
        None,
        ge=1,
        description="replicas that must have a write before it counts (producers use "
        "acks=all); default the replication factor - 1, at least 1",
    )
    es_replicas: int | None = Field(
        None,
        ge=0,
        description="replicas of each findings index shard; default 1 where the "
        "Elasticsearch cluster has two or more data nodes, else 0",
    )
    end_of_input_key: SecretStr | None = Field(
        None,
        description="HMAC-SHA256 key that signs end-of-input markers (`produce "
        "--end-of-input`); without it no marker is sent or honoured",
    )
    # Exactly once (streams/exactly_once.py): a stage record's findings, dead
    # letters, table changes and input offset are one Kafka transaction, and a
    # worker that lost its partitions is fenced. At least once is the path
    # before it, kept for the benchmark of the guarantee's cost.
    processing_guarantee: Literal["exactly_once", "at_least_once"] = Field(
        "exactly_once",
        description="exactly_once: each stage partition's findings, table changes and "
        "offset commit in one Kafka transaction (0.1 to 1 s long), a fenced worker "
        "writes nothing; at_least_once: what is judged again after a crash is written "
        "again (same finding id), nothing fences a frozen worker",
    )
    # Not for production: the stage path's handling of an exception (retried,
    # then dead-lettered, the rest of the batch judged) is tested through it.
    test_fault_event_id: str = Field(
        "",
        description="tests and the fault benchmark only: the stages raise when judging "
        "the event with this event_id",
    )
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
    # Six hours: an Exchange match's finding waits for its correlation window
    # and the watermark, and the Management Activity API delivers hours late.
    dlp_retraction_hold_s: float = Field(
        6 * 3600.0,
        gt=0,
        description="how long a vendor's DLP retraction (M365 DlpRuleUndo) that matches "
        "no finding yet is held and tried again before it is counted as matching nothing",
    )
    pseudonym_key: SecretStr | None = Field(
        None,
        description="HMAC-SHA256 key of the pseudonyms that replace identifiers found in "
        "event fields (at least 32 characters; environment or secrets directory only). "
        "None: the first worker creates one on the PREFIXpseudonym-key topic and every "
        "worker and replay of the deployment reads it there",
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

    @field_validator("pseudonym_key")
    @classmethod
    def _long_enough(cls, key: SecretStr | None) -> SecretStr | None:
        # A short key can be guessed, and with it every pseudonym reversed by
        # trying each possible RRN.
        if key is not None and len(key.get_secret_value()) < 32:
            raise ValueError("pseudonym_key must be at least 32 characters")
        return key

    @property
    def kafka(self) -> KafkaConnection:
        """The broker and how to reach it, for every Kafka client."""
        return KafkaConnection(
            bootstrap=self.broker,
            security_protocol=self.kafka_security_protocol,
            sasl_mechanism=self.kafka_sasl_mechanism,
            username=self.kafka_sasl_username,
            password=self.kafka_sasl_password,
            cafile=self.kafka_ssl_cafile,
            certfile=self.kafka_ssl_certfile,
            keyfile=self.kafka_ssl_keyfile,
            key_password=self.kafka_ssl_key_password,
        )

    @property
    def group_membership(self) -> dict[str, int]:
        """Session and heartbeat of the sink's and the alert router's consumer
        groups (aiokafka's names), the rules' group's own."""
        return {
            "session_timeout_ms": int(self.kafka_session_timeout_s * 1000),
            "heartbeat_interval_ms": int(self.heartbeat_s * 1000),
        }

    @property
    def heartbeat_s(self) -> float:
        # A third of the session, as Kafka advises; 3 s at most (its default).
        return min(3.0, self.kafka_session_timeout_s / 3)

    @model_validator(mode="after")
    def _kafka_security_complete(self) -> Settings:
        if self.kafka_security_protocol.startswith("SASL_") and not (
            self.kafka_sasl_username and self.kafka_sasl_password
        ):
            raise ValueError(
                f"kafka_security_protocol {self.kafka_security_protocol} needs "
                "kafka_sasl_username and kafka_sasl_password (SEPWATCH_KAFKA_SASL_PASSWORD, "
                "or the file sepwatch_kafka_sasl_password in SEPWATCH_SECRETS_DIR)"
            )
        if bool(self.kafka_ssl_certfile) != bool(self.kafka_ssl_keyfile):
            raise ValueError("kafka_ssl_certfile and kafka_ssl_keyfile go together")
        return self

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
        secrets = os.environ.get("SEPWATCH_SECRETS_DIR")
        return (
            init_settings,
            env_settings,
            *([SecretsSettingsSource(settings_cls, secrets_dir=secrets)] if secrets else []),
            TomlConfigSettingsSource(settings_cls, toml_file=config),
        )
