"""fal's webhooks, verified: the ED25519 signature against fal's published keys (JWKS) and
the timestamp window, before anything of the body is believed.

Signed message (UTF-8): request_id + "\\n" + user_id + "\\n" + timestamp + "\\n" +
sha256_hex(raw_body), hex signature in ``X-Fal-Webhook-Signature``. Keys are fetched from
FAL_JWKS_URL and cached for a day; a signature no cached key accepts makes one early refresh
(fal may have rotated its key), at most once a minute, so forged calls cannot make us hammer
the key endpoint.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from service.ports import Clock

HEADERS = (
    "x-fal-webhook-request-id",
    "x-fal-webhook-user-id",
    "x-fal-webhook-timestamp",
    "x-fal-webhook-signature",
)


class WebhookRejected(Exception):
    """Not a webhook we believe: the message says why (never echoes a key)."""


class WebhookVerifier:
    def __init__(
        self,
        http: httpx.AsyncClient,
        jwks_url: str,
        clock: Clock,
        *,
        max_skew_s: float = 300.0,
        cache_s: float = 24 * 3600.0,
        min_refresh_s: float = 60.0,
    ) -> None:
        self._http = http
        self._jwks_url = jwks_url
        self._clock = clock
        self._max_skew = max_skew_s
        self._cache_s = cache_s
        self._min_refresh = min_refresh_s
        self._keys: list[Ed25519PublicKey] = []
        self._fetched_at: float | None = None

    async def verify(self, headers: dict[str, str], body: bytes) -> dict[str, Any]:
        """The parsed body of a genuine, fresh webhook; raises ``WebhookRejected``."""
        lower = {k.lower(): v for k, v in headers.items()}
        missing = [h for h in HEADERS if not lower.get(h)]
        if missing:
            raise WebhookRejected(f"unsigned: missing {', '.join(missing)}")
        request_id, user_id, timestamp, signature = (lower[h] for h in HEADERS)
        try:
            sent_at = int(timestamp)
            signature_bytes = bytes.fromhex(signature)
        except ValueError:
            raise WebhookRejected("malformed timestamp or signature") from None
        now = self._clock.now().timestamp()
        if abs(now - sent_at) > self._max_skew:
            raise WebhookRejected(f"stale: timestamp {sent_at} is {now - sent_at:+.0f} s away")
        message = "\n".join(
            (request_id, user_id, timestamp, hashlib.sha256(body).hexdigest())
        ).encode()
        if not await self._signed(message, signature_bytes):
            raise WebhookRejected("bad signature")
        try:
            parsed = json.loads(body)
        except ValueError:
            raise WebhookRejected("body is not JSON") from None
        if not isinstance(parsed, dict) or parsed.get("request_id", request_id) != request_id:
            raise WebhookRejected("body does not match the signed request id")
        parsed["request_id"] = request_id
        return parsed

    async def _signed(self, message: bytes, signature: bytes) -> bool:
        now = self._clock.monotonic()
        if self._fetched_at is None or now - self._fetched_at > self._cache_s:
            await self._refresh(now)
        if self._any_key_accepts(message, signature):
            return True
        if self._fetched_at is not None and now - self._fetched_at >= self._min_refresh:
            await self._refresh(now)
            return self._any_key_accepts(message, signature)
        return False

    def _any_key_accepts(self, message: bytes, signature: bytes) -> bool:
        for key in self._keys:
            try:
                key.verify(signature, message)
            except InvalidSignature:
                continue
            return True
        return False

    async def _refresh(self, now: float) -> None:
        try:
            response = await self._http.get(self._jwks_url, timeout=10.0)
            response.raise_for_status()
            keys = response.json().get("keys", [])
        except (httpx.HTTPError, ValueError, AttributeError) as exc:
            if not self._keys:
                raise WebhookRejected(f"cannot fetch fal's webhook keys: {exc!r}") from None
            return  # keep the keys we have
        loaded = []
        for jwk in keys if isinstance(keys, list) else []:
            if isinstance(jwk, dict) and jwk.get("kty") == "OKP" and jwk.get("crv") == "Ed25519":
                raw = base64.urlsafe_b64decode(str(jwk.get("x", "")) + "==")
                try:
                    loaded.append(Ed25519PublicKey.from_public_bytes(raw))
                except ValueError:
                    continue
        self._keys = loaded
        self._fetched_at = now
