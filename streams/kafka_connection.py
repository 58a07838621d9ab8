"""Where a Kafka client connects and how it authenticates (`Settings.kafka`):
the one place that turns them into options for every Kafka client the project
uses (kafka-python, aiokafka, and Faust's broker credentials)."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

if TYPE_CHECKING:
    from faust.types.auth import CredentialsT


@dataclass(frozen=True)
class KafkaConnection:
    """Bootstrap servers and security. Prints as the bootstrap servers only, so
    messages that name the broker never carry a secret."""

    bootstrap: str
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "SCRAM-SHA-512"
    username: str = ""
    password: SecretStr | None = None
    cafile: Path | None = None
    certfile: Path | None = None
    keyfile: Path | None = None
    key_password: SecretStr | None = None

    def __str__(self) -> str:
        return self.bootstrap

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    def describe(self) -> str:
        """For error messages: where, and how (never the password)."""
        how = self.security_protocol
        if self.uses_sasl:
            how += f", {self.sasl_mechanism} as {self.username}"
        return f"{self.bootstrap} ({how})"

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.uses_tls:
            return None
        # Verifies the broker's certificate and host name (the default context's rules).
        context = ssl.create_default_context(
            cafile=str(self.cafile) if self.cafile else None,
        )
        if self.certfile and self.keyfile:
            context.load_cert_chain(
                str(self.certfile),
                str(self.keyfile),
                password=self.key_password.get_secret_value() if self.key_password else None,
            )
        return context

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for kafka-python's and aiokafka's clients (they share
        the names), bootstrap servers included."""
        options: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap,
            "security_protocol": self.security_protocol,
        }
        if self.uses_tls:
            options["ssl_context"] = self.ssl_context()
        if self.uses_sasl:
            options["sasl_mechanism"] = self.sasl_mechanism
            options["sasl_plain_username"] = self.username
            options["sasl_plain_password"] = (
                self.password.get_secret_value() if self.password else ""
            )
        return options

    def faust_credentials(self) -> CredentialsT | None:
        """Faust's `broker_credentials` (faust-streaming hands them to aiokafka)."""
        from faust.auth import SASLCredentials, SSLCredentials

        if self.uses_sasl:
            return SASLCredentials(
                username=self.username,
                password=self.password.get_secret_value() if self.password else "",
                ssl_context=self.ssl_context(),  # None for SASL_PLAINTEXT
                mechanism=self.sasl_mechanism,
            )
        if self.uses_tls:
            return SSLCredentials(self.ssl_context())
        return None


Broker = str | KafkaConnection


def connection(broker: Broker) -> KafkaConnection:
    """A bare `host:port` is a plaintext broker (tests, the local demo)."""
    return broker if isinstance(broker, KafkaConnection) else KafkaConnection(broker)
