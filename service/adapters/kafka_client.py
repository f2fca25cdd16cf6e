"""Connection and security options shared by every Kafka client of the relay."""

from __future__ import annotations

import ssl
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.conn import create_conn
from aiokafka.errors import (
    AuthenticationFailedError,
    KafkaError,
    SaslAuthenticationFailed,
    TopicAlreadyExistsError,
    UnsupportedSaslMechanismError,
)
from aiokafka.helpers import create_ssl_context

from service.config import Settings
from service.logs import get_logger

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


async def ensure_topics(settings: Settings) -> list[str]:
    """Create the relay's missing topics (requests, results, dead letters, progress) with
    ``RELAY_TOPICS_PARTITIONS`` and ``RELAY_TOPICS_REPLICATION``; the names created. A first
    run then needs no one to create them, and the consumer finds its topic at once instead of
    after a metadata refresh. Refused (no ACL to create): a warning, and the relay goes on."""
    wanted = [
        settings.relay_requests_topic,
        settings.relay_results_topic,
        settings.relay_dead_letter_topic,
        *([settings.relay_progress_topic] if settings.relay_progress_topic else []),
    ]
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        missing = [t for t in dict.fromkeys(wanted) if t not in set(await admin.list_topics())]
        if not missing:
            return []
        replication = settings.relay_topics_replication
        if replication is None:
            cluster = await admin.describe_cluster()
            replication = max(1, min(3, len(cluster.get("brokers", []))))
        topics = [
            NewTopic(
                t, num_partitions=settings.relay_topics_partitions, replication_factor=replication
            )
            for t in missing
        ]
        try:
            await admin.create_topics(topics)
        except TopicAlreadyExistsError:
            pass  # another replica created them first
        except KafkaError as exc:
            get_logger().warning("topics_not_created", topics=missing, error=repr(exc))
            return []
        get_logger().info(
            "topics_created", topics=missing, partitions=settings.relay_topics_partitions
        )
        return missing
    finally:
        await admin.close()
