"""The relay's log lines: one JSON object each, libraries included, and aiokafka's start-up
noise (retried by aiokafka itself) below error level."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from service.logs import configure_logging


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """The relay's logging; what the standard library's loggers write, as its handler does."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    configure_logging("info")
    out = io.StringIO()
    (handler,) = root.handlers
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(out)
    try:
        yield out
    finally:
        root.handlers[:], root.level = saved
        structlog.reset_defaults()


def lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_aiokafkas_start_up_noise_is_a_warning_and_real_errors_stay_errors(
    json_logs: io.StringIO,
) -> None:
    logging.getLogger("aiokafka.cluster").error("Topic %s not found in cluster metadata", "req")
    logging.getLogger("aiokafka.consumer.group_coordinator").error(
        "Group Coordinator Request failed: %s", "[Error 15] GroupCoordinatorNotAvailableError"
    )
    logging.getLogger("aiokafka.consumer.fetcher").error(
        "Failed fetch messages from %s: %s", 1, "x"
    )
    logging.getLogger("elsewhere").error("Topic %s not found in cluster metadata", "req")
    got = [(line["logger"], line["level"]) for line in lines(json_logs.getvalue())]
    assert got == [
        ("aiokafka.cluster", "warning"),
        ("aiokafka.consumer.group_coordinator", "warning"),
        ("aiokafka.consumer.fetcher", "error"),
        ("elsewhere", "error"),
    ]
