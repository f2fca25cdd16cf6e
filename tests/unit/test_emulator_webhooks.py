"""The emulator's signed webhooks, checked the way a receiver must check fal's.

Each test runs a tiny aiohttp receiver on a free port and submits with ``fal_webhook`` pointing at
it. Signatures are verified with nothing but the JWKS fetched over HTTP, ``cryptography`` and the
message the protocol notes document. Jobs run 0.01-0.03 s and retries wait milliseconds; tests wait
on an ``asyncio.Event`` the receiver sets, and on ``FalEmulator.webhooks_settled``, never on sleeps.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import socket
import time
from typing import Any

import httpx
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fal_emulator import EmulatorConfig, config_from_arguments
from fal_emulator.webhooks import Keyring, reserved_host, signing_message
from tests.unit.emulator_support import (
    BODY,
    DEADLINE,
    HOLD,
    Harness,
    Receiver,
    StartEmulator,
    StartReceiver,
    emulator_fixtures,
    emulator_parser,
    receiver_fixtures,
)

FAST_RETRIES = (0.001, 0.002, 0.005)
USER_ID = "user-123"

start_receiver, receiver = receiver_fixtures()
start_emulator, fal = emulator_fixtures(
    seed=3, webhook_user_id=USER_ID, webhook_retry_delays=FAST_RETRIES
)


def public_key(jwk: dict[str, Any]) -> Ed25519PublicKey:
    assert (jwk["kty"], jwk["crv"]) == ("OKP", "Ed25519")
    assert "=" not in jwk["x"]
    raw = base64.urlsafe_b64decode(jwk["x"] + "=" * (-len(jwk["x"]) % 4))
    return Ed25519PublicKey.from_public_bytes(raw)


def verify(jwks: dict[str, Any], headers: dict[str, str], raw: bytes) -> str:
    """The kid of the key that signed, trying each as fal's docs say; fails when none did."""
    message = "\n".join(
        (
            headers["X-Fal-Webhook-Request-Id"],
            headers["X-Fal-Webhook-User-Id"],
            headers["X-Fal-Webhook-Timestamp"],
            hashlib.sha256(raw).hexdigest(),
        )
    ).encode()
    signature = bytes.fromhex(headers["X-Fal-Webhook-Signature"])
    for jwk in jwks["keys"]:
        try:
            public_key(jwk).verify(signature, message)
        except InvalidSignature:
            continue
        kid: str = jwk["kid"]
        return kid
    raise AssertionError("no key in the JWKS verifies the signature")


# --- tests -----------------------------------------------------------------------------------


async def test_a_completed_job_posts_a_signed_ok_webhook(fal: Harness, receiver: Receiver) -> None:
    submitted = await fal.submit(webhook=receiver.url)
    (delivery,) = await receiver.wait_for(1)

    result = await fal.client.get(submitted["response_url"])
    assert result.status_code == 200
    assert delivery.json == {
        "request_id": submitted["request_id"],
        "gateway_request_id": submitted["gateway_request_id"],
        "status": "OK",
        "payload": result.json(),
    }
    headers = delivery.headers
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Fal-Webhook-Request-Id"] == submitted["request_id"]
    assert headers["X-Fal-Webhook-User-Id"] == USER_ID
    assert abs(int(headers["X-Fal-Webhook-Timestamp"]) - time.time()) < 300
    assert len(bytes.fromhex(headers["X-Fal-Webhook-Signature"])) == 64

    jwks = await fal.jwks()
    (jwk,) = jwks["keys"]
    assert set(jwk) == {"kty", "crv", "x", "kid"}
    assert verify(jwks, headers, delivery.raw) == jwk["kid"]
    # The signature covers the body: one changed byte and it no longer verifies.
    with pytest.raises(AssertionError, match="no key"):
        verify(jwks, headers, delivery.raw.replace(b'"OK"', b'"ok"'))
    with pytest.raises(AssertionError, match="no key"):
        verify(jwks, {**headers, "X-Fal-Webhook-User-Id": "someone-else"}, delivery.raw)

    await fal.emulator.webhooks_settled()
    stats = fal.emulator.stats(include_jobs=True)
    assert stats["webhooks"] == {
        "scheduled": 1,
        "delivered": 1,
        "attempts": 1,
        "failed_attempts": 0,
        "gave_up": 0,
        "dropped": 0,
        "pending": 0,
        "stopped": 0,
    }
    (job,) = stats["jobs"]
    assert job["webhook"] == receiver.url
    record = job["webhook_delivery"]
    assert record["state"] == "delivered"
    ((attempt),) = record["attempts"]
    assert (attempt["status"], attempt["error"], attempt["kid"]) == (200, None, jwk["kid"])


async def test_the_jwks_is_also_at_fals_well_known_path(fal: Harness) -> None:
    async with httpx.AsyncClient() as bare:
        well_known = await bare.get(fal.emulator.jwks_url.replace("/_emulator/", "/.well-known/"))
    assert well_known.json() == await fal.jwks() == fal.emulator.webhook_jwks()


async def test_a_failing_receiver_is_retried_until_it_accepts(
    fal: Harness, start_receiver: StartReceiver
) -> None:
    receiver = await start_receiver(answers=[500, 500])
    submitted = await fal.submit(webhook=receiver.url)
    deliveries = await receiver.wait_for(3)
    await fal.emulator.webhooks_settled()

    # The same body each time, each attempt signed afresh.
    assert len({delivery.raw for delivery in deliveries}) == 1
    jwks = await fal.jwks()
    for delivery in deliveries:
        verify(jwks, delivery.headers, delivery.raw)
    record = fal.job(submitted["request_id"])["webhook_delivery"]
    assert record["state"] == "delivered"
    assert [attempt["status"] for attempt in record["attempts"]] == [500, 500, 200]
    webhooks = fal.emulator.stats()["webhooks"]
    assert (webhooks["delivered"], webhooks["failed_attempts"], webhooks["gave_up"]) == (1, 2, 0)
    assert webhooks["attempts"] == 3


async def test_delivery_gives_up_after_the_last_retry(
    fal: Harness, start_receiver: StartReceiver
) -> None:
    receiver = await start_receiver(answers=[503] * 10)
    submitted = await fal.submit(webhook=receiver.url)
    await receiver.wait_for(1 + len(FAST_RETRIES))
    await fal.emulator.webhooks_settled()
    assert len(receiver.received) == 1 + len(FAST_RETRIES)
    record = fal.job(submitted["request_id"])["webhook_delivery"]
    assert record["state"] == "gave_up"
    assert [attempt["status"] for attempt in record["attempts"]] == [503] * 4
    webhooks = fal.emulator.stats()["webhooks"]
    assert (webhooks["delivered"], webhooks["failed_attempts"], webhooks["gave_up"]) == (0, 4, 1)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_connection_errors_are_retried_and_recorded(start_emulator: StartEmulator) -> None:
    fal = await start_emulator(webhook_retry_delays=(0.001,))
    submitted = await fal.submit(webhook=f"http://127.0.0.1:{_closed_port()}/hook")
    await fal.completed(submitted)
    async with asyncio.timeout(DEADLINE):
        await fal.emulator.webhooks_settled()
    record = fal.job(submitted["request_id"])["webhook_delivery"]
    assert record["state"] == "gave_up"
    assert [attempt["status"] for attempt in record["attempts"]] == [None, None]
    assert all("Connect" in attempt["error"] for attempt in record["attempts"])


@pytest.mark.parametrize(
    ("payload", "code", "error_body"),
    [
        (
            {**BODY, "prompt": "wave [emulator:job-error]"},
            503,
            {"detail": "Runner disconnected unexpectedly", "error_type": "runner_disconnected"},
        ),
        (
            {**BODY, "prompt": "wave [emulator:result-500]"},
            500,
            {"detail": "Internal Server Error"},
        ),
        ({"prompt": "no image"}, 422, None),
    ],
    ids=["job-error", "model-error", "invalid-input"],
)
async def test_a_failed_job_posts_an_error_webhook(
    fal: Harness,
    receiver: Receiver,
    payload: dict[str, Any],
    code: int,
    error_body: dict[str, Any] | None,
) -> None:
    submitted = await fal.submit(payload, webhook=receiver.url)
    (delivery,) = await receiver.wait_for(1)
    result = await fal.client.get(submitted["response_url"])
    assert result.status_code == code
    assert delivery.json == {
        "request_id": submitted["request_id"],
        "gateway_request_id": submitted["gateway_request_id"],
        "status": "ERROR",
        "error": f"Invalid status code: {code}",
        "payload": result.json(),
    }
    if error_body is not None:
        assert delivery.json["payload"] == error_body
    else:
        assert delivery.json["payload"]["detail"][0]["loc"] == ["body", "image_url"]
    verify(await fal.jwks(), delivery.headers, delivery.raw)


async def test_a_cancelled_job_posts_an_error_webhook(fal: Harness, receiver: Receiver) -> None:
    submitted = await fal.submit({**BODY, "prompt": f"wave {HOLD}"}, webhook=receiver.url)
    assert (await fal.client.put(submitted["cancel_url"])).status_code == 202
    (delivery,) = await receiver.wait_for(1)
    assert delivery.json["status"] == "ERROR"
    assert delivery.json["error"] == "Invalid status code: 400"
    assert delivery.json["payload"] == {
        "detail": "Request was cancelled",
        "error_type": "client_cancelled",
    }


async def test_drop_rate_one_delivers_nothing_and_counts_drops(
    start_emulator: StartEmulator, receiver: Receiver
) -> None:
    fal = await start_emulator(webhook_drop_rate=1.0)
    submitted = [await fal.submit(webhook=receiver.url) for _ in range(3)]
    for job in submitted:
        await fal.completed(job)
    await fal.emulator.webhooks_settled()
    assert receiver.received == []
    webhooks = fal.emulator.stats()["webhooks"]
    assert (webhooks["scheduled"], webhooks["dropped"], webhooks["attempts"]) == (3, 3, 0)
    for job in submitted:
        assert fal.job(job["request_id"])["webhook_delivery"] == {
            "state": "dropped",
            "attempts": [],
        }

    # At runtime, over HTTP: back to delivering everything.
    async with httpx.AsyncClient(base_url=fal.emulator.base_url) as bare:
        changed = await bare.post("/_emulator/config", json={"webhook_drop_rate": 0})
        assert changed.json()["webhook_drop_rate"] == 0.0
        for bad in (1.5, -0.1, "half", True, None):
            refused = await bare.post("/_emulator/config", json={"webhook_drop_rate": bad})
            assert refused.status_code == 400, bad
    await fal.submit(webhook=receiver.url)
    await receiver.wait_for(1)
    with pytest.raises(ValueError, match="webhook_drop_rate"):
        fal.emulator.reconfigure(webhook_drop_rate=2.0, fal_key=None)
    assert (await fal.client.post("/fal-ai/lynx", json=BODY)).status_code == 200  # key unchanged


async def test_key_rotation_lists_both_keys_and_signs_with_the_new_one(
    fal: Harness, receiver: Receiver
) -> None:
    await fal.submit(webhook=receiver.url)
    (first,) = await receiver.wait_for(1)
    (old_jwk,) = (await fal.jwks())["keys"]

    new_jwk = fal.emulator.rotate_webhook_key()
    jwks = await fal.jwks()
    assert jwks["keys"] == [old_jwk, new_jwk]
    assert old_jwk["kid"] != new_jwk["kid"]

    await fal.submit(webhook=receiver.url)
    second = (await receiver.wait_for(2))[1]
    assert verify(jwks, first.headers, first.raw) == old_jwk["kid"]
    assert verify(jwks, second.headers, second.raw) == new_jwk["kid"]
    with pytest.raises(AssertionError, match="no key"):
        verify({"keys": [old_jwk]}, second.headers, second.raw)

    async with httpx.AsyncClient() as bare:
        rotated = await bare.post(f"{fal.emulator.base_url}/_emulator/jwks/rotate")
    assert rotated.status_code == 200
    assert rotated.json()["keys"][:2] == [old_jwk, new_jwk]
    assert len(rotated.json()["keys"]) == 3


def test_a_key_seed_gives_the_same_keys_every_start() -> None:
    one, two, other = Keyring("s3cret"), Keyring("s3cret"), Keyring("other")
    assert one.jwks() == two.jwks() != other.jwks()
    one.rotate()
    two.rotate()
    assert one.jwks() == two.jwks()
    assert Keyring(None).jwks() != Keyring(None).jwks()
    assert "s3cret" not in repr(EmulatorConfig(webhook_key_seed="s3cret"))


def test_the_signed_message_is_the_documented_one() -> None:
    body = b'{"status":"OK"}'
    expected = f"req-1\nuser-1\n1700000000\n{hashlib.sha256(body).hexdigest()}".encode()
    assert signing_message("req-1", "user-1", "1700000000", body) == expected


async def test_reserved_hosts_are_never_contacted(start_emulator: StartEmulator) -> None:
    assert reserved_host("https://hooks.example.com/fal?x=1") == "hooks.example.com"
    assert reserved_host("http://relay.invalid:8080/") == "relay.invalid"
    assert reserved_host("http://127.0.0.1:9/hook") is None
    assert reserved_host("https://example.community/") is None
    fal = await start_emulator(webhook_retry_delays=(0.001,))
    submitted = await fal.submit(webhook="https://hooks.example.com/fal")
    await fal.completed(submitted)
    async with asyncio.timeout(DEADLINE):
        await fal.emulator.webhooks_settled()
    record = fal.job(submitted["request_id"])["webhook_delivery"]
    assert record["state"] == "gave_up"
    assert all("never contacted" in attempt["error"] for attempt in record["attempts"])


async def test_stop_cancels_pending_deliveries(
    start_emulator: StartEmulator, start_receiver: StartReceiver
) -> None:
    fal = await start_emulator(webhook_retry_delays=(30.0,))
    receiver = await start_receiver(answers=[500])
    submitted = await fal.submit(webhook=receiver.url)
    await receiver.wait_for(1)
    # Stopped while the first attempt is being answered or while waiting to retry: either way
    # the delivery ends stopped, with no warning and no task left behind.
    await fal.emulator.stop()
    record = fal.job(submitted["request_id"])["webhook_delivery"]
    assert record["state"] == "stopped"
    assert len(record["attempts"]) == 1
    assert fal.emulator.stats()["webhooks"]["stopped"] == 1
    assert fal.emulator.stats()["webhooks"]["pending"] == 0


async def test_a_job_without_a_webhook_has_no_delivery(fal: Harness) -> None:
    response = await fal.client.post("/fal-ai/lynx", json=BODY)
    job = fal.job(response.json()["request_id"])
    assert (job["webhook"], job["webhook_delivery"]) == (None, None)
    assert fal.emulator.stats()["webhooks"]["scheduled"] == 0


def test_webhook_command_line_options() -> None:
    parser = emulator_parser()
    defaults = config_from_arguments(parser.parse_args([]))
    assert defaults.webhook_retry_delays == EmulatorConfig().webhook_retry_delays
    assert len(defaults.webhook_retry_delays) == 10
    config = config_from_arguments(
        parser.parse_args(
            [
                "--webhook-user-id",
                "u-1",
                "--webhook-key-seed",
                "seed",
                "--webhook-retry-delays",
                "0.5,1,2",
                "--webhook-timeout",
                "3",
                "--webhook-drop-rate",
                "0.25",
            ]
        )
    )
    assert config.webhook_user_id == "u-1"
    assert config.webhook_key_seed == "seed"
    assert config.webhook_retry_delays == (0.5, 1.0, 2.0)
    assert (config.webhook_timeout, config.webhook_drop_rate) == (3.0, 0.25)
    no_retries = parser.parse_args(["--webhook-retry-delays", "none"])
    assert config_from_arguments(no_retries).webhook_retry_delays == ()


@pytest.mark.parametrize(
    "argv",
    [
        ["--webhook-retry-delays", "1,-2"],
        ["--webhook-retry-delays", "1,x"],
        ["--webhook-drop-rate", "2"],
        ["--webhook-timeout", "0"],
        ["--webhook-user-id", ""],
    ],
)
def test_bad_webhook_options_are_usage_errors(argv: list[str]) -> None:
    parser = emulator_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(argv)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"webhook_user_id": ""}, "webhook_user_id"),
        ({"webhook_user_id": "a\nb"}, "webhook_user_id"),
        ({"webhook_key_seed": ""}, "webhook_key_seed"),
        ({"webhook_retry_delays": (1.0, float("nan"))}, "webhook_retry_delays"),
        ({"webhook_timeout": 0.0}, "webhook_timeout"),
        ({"webhook_drop_rate": 1.5}, "webhook_drop_rate"),
    ],
)
def test_bad_webhook_settings_are_refused(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EmulatorConfig(**overrides)
