"""Decoding raw Kafka values into requests or precise rejections, and the result event shape."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.core import outcomes
from service.decoding import InputPolicy, Rejection, decode_request
from service.errors import RelayError
from service.messages import ERROR_CODES, ResultEvent, Timings, VideoRequest, format_timestamp
from service.metrics import RESULT_SERIES

VALID: dict[str, Any] = {
    "request_id": "order-8841",
    "input": {"image_url": "https://example.com/subject.png", "prompt": "a pumpkin"},
    "metadata": {"tenant": "acme", "anything": ["echoed", "back"]},
}


def encode(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def with_input(**fields: Any) -> dict[str, Any]:
    return {**VALID, "input": {**VALID["input"], **fields}}


def test_valid_request_keeps_only_the_fields_it_set_for_fal() -> None:
    request = decode_request(encode(with_input(num_frames=81, resolution="480p")))
    assert isinstance(request, VideoRequest)
    assert request.input.to_fal_arguments() == {
        "image_url": "https://example.com/subject.png",
        "prompt": "a pumpkin",
        "num_frames": 81,
        "resolution": "480p",
    }
    assert request.metadata == VALID["metadata"]


def test_every_lynx_field_is_accepted_at_its_bounds() -> None:
    fields = {
        "negative_prompt": "blurry",
        "num_inference_steps": 75,
        "seed": 1234,
        "resolution": "580p",
        "aspect_ratio": "9:16",
        "ip_scale": 2,
        "strength": 0.0,
        "frames_per_second": 30,
        "guidance_scale": 20,
        "guidance_scale_2": 0,
        "num_frames": 9,
    }
    request = decode_request(encode(with_input(**fields)))
    assert isinstance(request, VideoRequest)
    assert request.input.to_fal_arguments() == {**VALID["input"], **fields}


def test_data_uri_images_are_accepted() -> None:
    request = decode_request(encode(with_input(image_url="data:image/png;base64,iVBORw0KGgo=")))
    assert isinstance(request, VideoRequest)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xff\xfe not utf8", "not_utf8"),
        (b"{not json", "not_json"),
        (b"[1, 2]", "not_object"),
        (b'{"input": {}}', "missing_request_id"),
        (b'{"request_id": "bad id with spaces", "input": {}}', "invalid_request_id"),
        (b'{"request_id": 7, "input": {}}', "invalid_request_id"),
        (
            b'{"request_id": "x", "input": {"prompt": "p", "image_url": "https://a", "seed": NaN}}',
            "not_json",
        ),
        (None, "not_json"),
    ],
)
def test_unreadable_messages_are_rejected_without_a_request_id(
    raw: bytes | None, reason: str
) -> None:
    rejection = decode_request(raw)
    assert isinstance(rejection, Rejection)
    assert (rejection.reason, rejection.request_id) == (reason, None)


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ({**VALID, "input": {"prompt": "p"}}, "input.image_url"),
        (with_input(num_frames=500), "input.num_frames"),
        (with_input(num_frames=82), "input.num_frames"),  # fal's schema: 9-81
        (with_input(resolution="4k"), "input.resolution"),
        (with_input(sharpness=3), "input.sharpness"),
        ({**VALID, "colour": "red"}, "colour"),
        (with_input(image_url="ftp://example.com/x.png"), "input.image_url"),
        (with_input(num_frames="81"), "input.num_frames"),  # strict: no string-to-int guessing
        (with_input(frames_per_second=4), "input.frames_per_second"),
        ({**VALID, "metadata": {"blob": "x" * 17_000}}, "metadata"),
    ],
)
def test_schema_errors_name_each_field(message: dict[str, Any], field: str) -> None:
    rejection = decode_request(encode(message))
    assert isinstance(rejection, Rejection)
    assert rejection.reason == "schema"
    assert rejection.request_id == "order-8841"
    assert rejection.details is not None
    assert field in [d["field"] for d in rejection.details]
    assert field in rejection.message


@given(st.binary(max_size=300))
def test_any_bytes_decode_to_a_request_or_a_rejection(raw: bytes) -> None:
    """No input makes the decoder raise."""
    assert isinstance(decode_request(raw), VideoRequest | Rejection)


def test_result_event_timestamps_are_rfc3339_utc_with_millis() -> None:
    at = datetime(2026, 11, 24, 10, 0, 0, 123456, tzinfo=UTC)
    event = ResultEvent(request_id="r", status="failed", timings=Timings(received_at=at))
    body = json.loads(event.to_bytes())
    assert body["timings"]["received_at"] == "2026-11-24T10:00:00.123Z"
    assert body["video"] is None
    assert body["error"] is None
    assert format_timestamp(at) == "2026-11-24T10:00:00.123Z"


def test_a_message_over_the_size_limit_is_refused_unread() -> None:
    policy = InputPolicy(max_message_bytes=2048)
    rejection = decode_request(encode(with_input(prompt="x" * 3000)), policy)
    assert isinstance(rejection, Rejection)
    assert (rejection.reason, rejection.request_id) == ("too_large", None)
    assert "RELAY_MAX_MESSAGE_BYTES" in rejection.message


@pytest.mark.parametrize(
    ("fields", "policy", "problem"),
    [
        ({"prompt": "p" * 11}, InputPolicy(max_prompt_chars=10), "too_long"),
        ({"negative_prompt": "n" * 11}, InputPolicy(max_prompt_chars=10), "too_long"),
        ({"image_url": "http://example.com/a.png"}, InputPolicy(), "scheme"),
        (
            {"image_url": "https://evil.test/a.png"},
            InputPolicy(allowed_hosts=frozenset({"cdn.example.com"})),
            "host",
        ),
        (
            {"image_url": "https://notcdn.example.com.evil.test/a.png"},
            InputPolicy(allowed_hosts=frozenset({"cdn.example.com"})),
            "host",
        ),
        ({"image_url": "data:image/png;base64,AAAAA"}, InputPolicy(), "bad_base64"),
        (
            {"image_url": "data:image/png;base64," + "QUFB" * 10},
            InputPolicy(max_data_uri_bytes=10),
            "too_large",
        ),
    ],
)
def test_the_operators_policy_refuses_precisely(
    fields: dict[str, Any], policy: InputPolicy, problem: str
) -> None:
    rejection = decode_request(encode(with_input(**fields)), policy)
    assert isinstance(rejection, Rejection)
    assert (rejection.reason, rejection.request_id) == ("policy", "order-8841")
    assert rejection.details is not None
    assert [d["type"] for d in rejection.details] == [problem]


@pytest.mark.parametrize(
    ("url", "policy"),
    [
        ("http://example.com/a.png", InputPolicy(allow_http=True)),
        ("https://cdn.example.com/a.png", InputPolicy(allowed_hosts=frozenset({"example.com"}))),
        ("https://example.com/a.png", InputPolicy(allowed_hosts=frozenset({"example.com"}))),
        ("data:image/png;base64,iVBORw0KGgo=", InputPolicy(max_data_uri_bytes=8)),
    ],
)
def test_the_policy_lets_through_what_it_allows(url: str, policy: InputPolicy) -> None:
    assert isinstance(decode_request(encode(with_input(image_url=url)), policy), VideoRequest)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"request_id": "a", "request_id": "b", "input": {}}',
        b'{"request_id": "x", "input": {"image_url": "https://a", "prompt": "p"}, '
        b'"metadata": {"n": 1e999}}',
        b"[" * 100_000 + b"]" * 100_000,
        b'{"request_id": "x", "n": ' + b"9" * 5000 + b"}",
        b'{"request_id": "x", "input": {"prompt": Infinity}}',
    ],
    ids=["duplicate-keys", "infinite-number", "deep-nesting", "huge-integer", "infinity"],
)
def test_ambiguous_or_unrepresentable_json_is_not_json(raw: bytes) -> None:
    rejection = decode_request(raw)
    assert isinstance(rejection, Rejection)
    assert rejection.reason == "not_json"


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(
    request_id=st.one_of(st.text(max_size=140), st.integers(), st.none(), JSON),
    input_=st.one_of(
        JSON,
        st.fixed_dictionaries(
            {},
            optional={
                "image_url": st.one_of(st.text(), st.just("https://e.com/a.png"), JSON),
                "prompt": st.one_of(st.text(), JSON),
                "num_frames": st.one_of(st.integers(), st.floats(), st.text(), JSON),
                "resolution": st.one_of(st.sampled_from(["480p", "4k", ""]), JSON),
            },
        ),
    ),
    metadata=JSON,
)
def test_hostile_shapes_decode_to_a_request_or_a_precise_rejection(
    request_id: Any, input_: Any, metadata: Any
) -> None:
    """Whatever the types, no exception escapes, and a rejection says why."""
    raw = json.dumps({"request_id": request_id, "input": input_, "metadata": metadata}).encode()
    decoded = decode_request(raw)
    assert isinstance(decoded, VideoRequest | Rejection)
    if isinstance(decoded, Rejection):
        assert decoded.message
        if decoded.reason in ("schema", "policy"):
            assert decoded.request_id == request_id
            assert decoded.details
    else:
        # Accepted means it can be published back out as JSON.
        json.loads(decoded.model_dump_json())


def test_every_error_code_of_the_error_tree_is_a_contract_code_with_a_metric_series() -> None:
    """The error codes have one home (``ERROR_CODES``): each code the error tree can raise,
    and each code the relay builds itself, has a result series at zero from the start."""

    def tree(cls: type[RelayError]) -> list[type[RelayError]]:
        return [cls, *(c for sub in cls.__subclasses__() for c in tree(sub))]

    raised = {cls.code for cls in tree(RelayError)}
    built = {
        outcome.error_code
        for outcome in (
            outcomes.invalid("x"),
            outcomes.crashed("KeyError"),
            outcomes.cancelled_before_submit(),
            outcomes.timed_out(datetime(2026, 1, 1, tzinfo=UTC), None, 1.0),
        )
    }
    assert raised | built <= set(ERROR_CODES)
    series = {code for _status, code in RESULT_SERIES}
    assert set(ERROR_CODES) <= series
