"""fal's webhooks are believed only when signed by a key in fal's JWKS and fresh."""

from __future__ import annotations

import base64
import hashlib
import json

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from service.adapters.webhooks import WebhookRejected, WebhookVerifier
from tests.fakes import FakeClock


def jwk(key: Ed25519PrivateKey) -> dict[str, str]:
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "x": base64.urlsafe_b64encode(raw).decode().rstrip("=")}


class Keys:
    """fal's JWKS endpoint, as an httpx mock transport; counts fetches."""

    def __init__(self, *keys: Ed25519PrivateKey) -> None:
        self.keys = list(keys)
        self.fetches = 0

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.fetches += 1
        return httpx.Response(200, json={"keys": [jwk(k) for k in self.keys]})


def signed(key: Ed25519PrivateKey, body: bytes, timestamp: int, rid: str = "f-1") -> dict[str, str]:
    message = f"{rid}\nuser-1\n{timestamp}\n{hashlib.sha256(body).hexdigest()}".encode()
    return {
        "X-Fal-Webhook-Request-Id": rid,
        "X-Fal-Webhook-User-Id": "user-1",
        "X-Fal-Webhook-Timestamp": str(timestamp),
        "X-Fal-Webhook-Signature": key.sign(message).hex(),
    }


BODY = json.dumps({"request_id": "f-1", "status": "OK", "payload": {"seed": 1}}).encode()


def verifier(keys: Keys, clock: FakeClock) -> WebhookVerifier:
    http = httpx.AsyncClient(transport=httpx.MockTransport(keys.handler))
    return WebhookVerifier(http, "https://jwks.test/keys.json", clock)


async def test_a_genuine_fresh_webhook_is_accepted() -> None:
    key, clock = Ed25519PrivateKey.generate(), FakeClock()
    keys = Keys(key)
    now = int(clock.now().timestamp())
    body = await verifier(keys, clock).verify(signed(key, BODY, now), BODY)
    assert body["status"] == "OK"
    assert body["request_id"] == "f-1"


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda h, b, k, now: ({}, b), "unsigned"),
        (lambda h, b, k, now: (signed(Ed25519PrivateKey.generate(), b, now), b), "bad signature"),
        (lambda h, b, k, now: (h, b.replace(b'"seed": 1', b'"seed": 2')), "bad signature"),
        (lambda h, b, k, now: (signed(k, b, now - 301), b), "stale"),
        (lambda h, b, k, now: (signed(k, b, now + 400), b), "stale"),
        (lambda h, b, k, now: ({**h, "X-Fal-Webhook-Request-Id": "f-2"}, b), "bad signature"),
    ],
    ids=["unsigned", "forged", "tampered-body", "replayed-old", "from-the-future", "other-job"],
)
async def test_forged_stale_or_unsigned_calls_are_rejected(mangle: object, reason: str) -> None:
    key, clock = Ed25519PrivateKey.generate(), FakeClock()
    now = int(clock.now().timestamp())
    headers, body = mangle(signed(key, BODY, now), BODY, key, now)  # type: ignore[operator]
    with pytest.raises(WebhookRejected, match=reason):
        await verifier(Keys(key), clock).verify(headers, body)


async def test_a_rotated_key_is_picked_up_and_forgeries_do_not_hammer_the_jwks() -> None:
    old, new, clock = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate(), FakeClock()
    keys = Keys(old)
    check = verifier(keys, clock)
    now = int(clock.now().timestamp())
    await check.verify(signed(old, BODY, now), BODY)
    keys.keys.append(new)
    for _ in range(5):  # forgeries within a minute: no refetch
        with pytest.raises(WebhookRejected):
            await check.verify(signed(Ed25519PrivateKey.generate(), BODY, now), BODY)
    assert keys.fetches == 1
    await clock.sleep(61)
    now = int(clock.now().timestamp())
    await check.verify(signed(new, BODY, now), BODY)  # unknown key: one refresh finds it
    assert keys.fetches == 2
