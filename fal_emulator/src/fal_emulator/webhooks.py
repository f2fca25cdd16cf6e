"""Signed webhook delivery, as fal does it: the body, the signature, the keys, and the retries.

A submit with ``?fal_webhook=<url>`` registers a ``Delivery`` (state ``waiting``). When its job
completes, however it ends, the body is fixed once: ``{"request_id", "gateway_request_id",
"status": "OK", "payload": <output>}``, or ``"status": "ERROR"`` with ``"error": "Invalid status
code: <code>"`` and the error body as ``payload`` (exactly what a result GET would have answered).
Then it is either dropped (``webhook_drop_rate``, drawn from a seeded RNG of its own: never sent,
state ``dropped``) or sent by a task of its own: ``POST`` with ``Content-Type: application/json``
and fal's four signature headers, retried after each of ``webhook_retry_delays`` on a non-2xx
answer (redirects are not followed) or a connection error, until it is ``delivered`` or the
delays run out (``gave_up``). Each attempt is signed afresh (its own timestamp, with the key
current then); ``stop`` cancels what is still pending (``stopped``).

Signature: hex Ed25519 over the UTF-8 of ``request_id + "\\n" + user_id + "\\n" + timestamp +
"\\n" + sha256_hex(body)``. ``Keyring`` holds the keys: one at start (random, or derived from
``webhook_key_seed`` so a JWKS is the same every start), more after ``rotate``; all of them are
published as a JWKS, the newest signs.

Hosts reserved for documentation and for invalid names (example.com/.net/.org and their
subdomains, ``.example``, ``.invalid``; RFC 2606) are never contacted: every attempt to one fails
as unreachable. Tests record such URLs as submit options, and they must not cause network traffic.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import random
import ssl
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp
import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from fal_emulator.config import EmulatorConfig, check_drop_rate
from fal_emulator.jobs import Job
from fal_emulator.wire import completed_result_reply

_log = structlog.get_logger(__name__)

HEADER_REQUEST_ID = "X-Fal-Webhook-Request-Id"
HEADER_USER_ID = "X-Fal-Webhook-User-Id"
HEADER_TIMESTAMP = "X-Fal-Webhook-Timestamp"
HEADER_SIGNATURE = "X-Fal-Webhook-Signature"

DeliveryState = Literal["waiting", "dropped", "pending", "delivered", "gave_up", "stopped"]

_RESERVED_DOMAINS = ("example.com", "example.net", "example.org", "example", "invalid")


# --- the message and its signature (pure) ----------------------------------------------------


def signing_message(request_id: str, user_id: str, timestamp: str, body: bytes) -> bytes:
    """What fal signs: ``request_id``, ``user_id``, ``timestamp``, ``sha256_hex(body)``."""
    return "\n".join((request_id, user_id, timestamp, hashlib.sha256(body).hexdigest())).encode()


def webhook_body(job: Job, base_url: str) -> dict[str, Any]:
    """The JSON fal posts for a completed ``job``; ``base_url`` is where its output is served."""
    reply = completed_result_reply(job, base_url)
    body: dict[str, Any] = {
        "request_id": job.request_id,
        "gateway_request_id": job.gateway_request_id,
    }
    if reply.status == 200:
        body.update(status="OK", payload=reply.body)
    else:
        error = f"Invalid status code: {reply.status}"
        body.update(status="ERROR", error=error, payload=reply.body)
    return body


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    private_key: Ed25519PrivateKey = field(repr=False)

    @classmethod
    def of(cls, private_key: Ed25519PrivateKey) -> SigningKey:
        raw = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        # The key's own fingerprint: the same seed gives the same kid every start.
        return cls(f"emulator-{hashlib.sha256(raw).hexdigest()[:16]}", private_key)

    @property
    def public_bytes(self) -> bytes:
        return self.private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def jwk(self) -> dict[str, str]:
        return {"kty": "OKP", "crv": "Ed25519", "x": _b64url(self.public_bytes), "kid": self.kid}

    def sign(self, message: bytes) -> str:
        return self.private_key.sign(message).hex()


class Keyring:
    """The signing keys: every one is published, the newest signs."""

    def __init__(self, seed: str | None) -> None:
        self._seed = seed
        self._keys: list[SigningKey] = []
        self.rotate()

    def rotate(self) -> SigningKey:
        """Add a key (the n-th derived from the seed, when there is one); it signs from now on."""
        if self._seed is None:
            private_key = Ed25519PrivateKey.generate()
        else:
            material = f"fal-emulator-webhook-key:{self._seed}:{len(self._keys)}".encode()
            private_key = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(material).digest())
        key = SigningKey.of(private_key)
        self._keys.append(key)
        return key

    @property
    def current(self) -> SigningKey:
        return self._keys[-1]

    def jwks(self) -> dict[str, Any]:
        """``{"keys": [...]}``, oldest first."""
        return {"keys": [key.jwk() for key in self._keys]}


def reserved_host(url: str) -> str | None:
    """The host of ``url`` when it is reserved (RFC 2606) and so never contacted, else None."""
    try:
        host = (urlsplit(url).hostname or "").rstrip(".").lower()
    except ValueError:
        return None
    if any(host == domain or host.endswith(f".{domain}") for domain in _RESERVED_DOMAINS):
        return host
    return None


# --- delivery --------------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class Delivery:
    """One job's webhook: where it goes, how far it got, and every attempt."""

    request_id: str
    url: str
    base_url: str  # the address the job was submitted to, for the output's URL
    state: DeliveryState = "waiting"
    body: bytes | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """``{"state", "attempts": [{"at", "kid", "status", "error"}]}`` for ``?jobs=1``."""
        return {"state": self.state, "attempts": [dict(attempt) for attempt in self.attempts]}


@dataclass(slots=True)
class WebhookCounts:
    scheduled: int = 0  # completed jobs with a webhook, sent or dropped
    delivered: int = 0
    attempts: int = 0
    failed_attempts: int = 0
    gave_up: int = 0
    dropped: int = 0
    stopped: int = 0

    def to_json(self, pending: int) -> dict[str, int]:
        return {
            "scheduled": self.scheduled,
            "delivered": self.delivered,
            "attempts": self.attempts,
            "failed_attempts": self.failed_attempts,
            "gave_up": self.gave_up,
            "dropped": self.dropped,
            "pending": pending,
            "stopped": self.stopped,
        }


class WebhookSender:
    """Sends the webhooks of one emulator over one ``aiohttp.ClientSession``.

    ``open`` before the first delivery, ``close`` to cancel what is pending and let the session
    go. A completion reported while closed (or before opening) is recorded as ``stopped``.
    """

    def __init__(self, config: EmulatorConfig, rng: random.Random) -> None:
        self.keyring = Keyring(config.webhook_key_seed)
        self.user_id = config.webhook_user_id
        self._drop_rate = config.webhook_drop_rate
        self._delays = config.webhook_retry_delays
        self._timeout = config.webhook_timeout
        self._rng = rng
        self._deliveries: dict[str, Delivery] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._failure: BaseException | None = None
        self.counts = WebhookCounts()

    @property
    def drop_rate(self) -> float:
        return self._drop_rate

    @drop_rate.setter
    def drop_rate(self, rate: float) -> None:
        self._drop_rate = check_drop_rate(rate)

    def open(self, ssl_context: ssl.SSLContext | None = None) -> None:
        """Start accepting deliveries (needs a running event loop)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=True if ssl_context is None else ssl_context),
                timeout=aiohttp.ClientTimeout(total=self._timeout),
            )

    async def close(self) -> None:
        """Cancel pending deliveries (they end ``stopped``) and close the session."""
        session, self._session = self._session, None
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        if session is not None:
            await session.close()
        # A delivery task that died is a bug here: surface it rather than lose it.
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise RuntimeError("a webhook delivery task failed") from failure

    def register(self, request_id: str, url: str, base_url: str) -> None:
        """A submit asked for a webhook; it is sent when the job completes."""
        self._deliveries[request_id] = Delivery(request_id, url, base_url)

    def lookup(self, request_id: str) -> Delivery | None:
        return self._deliveries.get(request_id)

    def stats(self) -> dict[str, int]:
        return self.counts.to_json(pending=len(self._tasks))

    async def settled(self) -> None:
        """Wait until no delivery is pending (delivered, given up or stopped)."""
        while self._tasks:
            await asyncio.wait(list(self._tasks))

    def completed(self, job: Job) -> None:
        """``job`` completed: fix its webhook's body, then drop it or start sending it."""
        delivery = self._deliveries.get(job.request_id)
        if delivery is None or delivery.state != "waiting":
            return
        body = webhook_body(job, delivery.base_url)
        delivery.body = json.dumps(body, separators=(",", ":")).encode()
        self.counts.scheduled += 1
        if self._drop_rate > 0 and self._rng.random() < self._drop_rate:
            delivery.state = "dropped"
            self.counts.dropped += 1
            _log.debug("emulator_webhook_dropped", request_id=job.request_id)
            return
        if self._session is None:
            delivery.state = "stopped"
            self.counts.stopped += 1
            return
        delivery.state = "pending"
        task = asyncio.create_task(
            self._deliver(delivery, self._session), name=f"fal-emulator-webhook-{job.request_id}"
        )
        self._tasks.add(task)
        task.add_done_callback(lambda done: self._task_done(done, delivery))

    def _task_done(self, task: asyncio.Task[None], delivery: Delivery) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            # Also when cancelled before its first step, so the state is set here, not inside.
            delivery.state = "stopped"
            self.counts.stopped += 1
        elif task.exception() is not None and self._failure is None:
            self._failure = task.exception()

    async def _deliver(self, delivery: Delivery, session: aiohttp.ClientSession) -> None:
        for retry in range(len(self._delays) + 1):
            if retry:
                await asyncio.sleep(self._delays[retry - 1])
            if await self._attempt(delivery, session):
                delivery.state = "delivered"
                self.counts.delivered += 1
                _log.debug(
                    "emulator_webhook_delivered",
                    request_id=delivery.request_id,
                    attempts=len(delivery.attempts),
                )
                return
        delivery.state = "gave_up"
        self.counts.gave_up += 1
        _log.info(
            "emulator_webhook_gave_up",
            request_id=delivery.request_id,
            attempts=len(delivery.attempts),
        )

    async def _attempt(self, delivery: Delivery, session: aiohttp.ClientSession) -> bool:
        """One signed POST; True when it was answered 2xx."""
        assert delivery.body is not None
        key = self.keyring.current
        timestamp = str(int(time.time()))
        message = signing_message(delivery.request_id, self.user_id, timestamp, delivery.body)
        headers = {
            "Content-Type": "application/json",
            HEADER_REQUEST_ID: delivery.request_id,
            HEADER_USER_ID: self.user_id,
            HEADER_TIMESTAMP: timestamp,
            HEADER_SIGNATURE: key.sign(message),
        }
        attempt: dict[str, Any] = {
            "at": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "kid": key.kid,
            "status": None,
            "error": None,
        }
        delivery.attempts.append(attempt)
        self.counts.attempts += 1
        host = reserved_host(delivery.url)
        if host is not None:
            attempt["error"] = f"{host} is a reserved name (RFC 2606): never contacted"
        else:
            try:
                async with session.post(
                    delivery.url, data=delivery.body, headers=headers, allow_redirects=False
                ) as response:
                    await response.read()
                    attempt["status"] = response.status
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
                attempt["error"] = f"{type(exc).__name__}: {exc}".rstrip(": ")
        status = attempt["status"]
        if status is not None and 200 <= status < 300:
            return True
        self.counts.failed_attempts += 1
        _log.debug(
            "emulator_webhook_attempt_failed",
            request_id=delivery.request_id,
            attempt=len(delivery.attempts),
            status=status,
            error=attempt["error"],
        )
        return False
