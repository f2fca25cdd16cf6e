"""Connection and security options shared by every Kafka client of the relay."""

from __future__ import annotations

import ssl
from typing import Any

from aiokafka.conn import create_conn
from aiokafka.errors import (
    AuthenticationFailedError,
    KafkaError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)
from aiokafka.helpers import create_ssl_context

from service.config import Settings

CLIENT_ID = "lynx-relay"


def client_options(settings: Settings) -> dict[str, Any]:
    """Connection and security options shared by our consumer, producer and admin client."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers.split(","),
        "security_protocol": settings.kafka_security_protocol,
        "client_id": CLIENT_ID,
    }
    if settings.kafka_security_protocol in ("SSL", "SASL_SSL"):
        context: ssl.SSLContext = create_ssl_context(
            cafile=settings.kafka_ssl_cafile,
            certfile=settings.kafka_ssl_certfile,
            keyfile=settings.kafka_ssl_keyfile,
        )
        options["ssl_context"] = context
    if settings.kafka_security_protocol.startswith("SASL"):
        assert settings.kafka_sasl_password is not None  # checked by Settings
        options.update(
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_plain_username=settings.kafka_sasl_username,
            sasl_plain_password=settings.kafka_sasl_password.get_secret_value(),
        )
    return options


class KafkaRefused(Exception):
    """Kafka answered but refused us (credentials, TLS): one line that names the settings."""


async def probe(settings: Settings) -> None:
    """Open one connection the way every client will, to turn a refusal into a clear error.

    aiokafka's own start only says "Unable to bootstrap" when the broker refuses our
    credentials or certificate; the reason would reach the log alone. Unreachable brokers are
    left to the clients' start, which reports them.
    """
    options = client_options(settings)
    servers = options.pop("bootstrap_servers")
    options.pop("client_id", None)
    for server in servers:
        host, _, port = server.strip().rpartition(":")
        try:
            conn = await create_conn(
                host or server,
                int(port or 9092),
                client_id=CLIENT_ID,
                request_timeout_ms=10_000,
                **options,
            )
        except (
            SaslAuthenticationFailed,
            AuthenticationFailedError,
            UnsupportedSaslMechanismError,
        ) as exc:
            raise KafkaRefused(
                f"Kafka refused KAFKA_SASL_USERNAME/KAFKA_SASL_PASSWORD "
                f"(authentication failed, {settings.kafka_sasl_mechanism}): {exc}"
            ) from None
        except ssl.SSLError as exc:
            raise KafkaRefused(
                f"TLS with Kafka failed (check KAFKA_SSL_CAFILE, KAFKA_SSL_CERTFILE, "
                f"KAFKA_SSL_KEYFILE): {exc}"
            ) from None
        except (OSError, KafkaError, ValueError):
            continue  # this server is not reachable; the clients will say so
        conn.close()
        return
