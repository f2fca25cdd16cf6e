"""JSON log lines on stdout via structlog: one object per line, UTC timestamps, snake_case
events, with ``request_id`` and ``fal_request_id`` bound by the relay where they are known.
Libraries that log through the standard library (aiokafka, aiohttp) come out as the same JSON.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def configure_logging(level: str) -> None:
    """Called once by the CLI, before anything logs."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(),
            ],
        )
    )
    handler.addFilter(_demote_start_up_noise)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # Library chatter below WARNING is noise for operators; our own events carry the story.
    root.setLevel(max(_LEVELS[level], logging.WARNING))


# aiokafka logs these at error level while a group or a topic is still being set up (a first
# start, a topic created a moment ago), and retries them itself: a clean start is not an error.
# Demoted to warning; they stay visible if they go on.
_NOISE = (
    "Topic %s not found in cluster metadata",
    "Group Coordinator Request failed: %s",
)


def _demote_start_up_noise(record: logging.LogRecord) -> bool:
    if (
        record.levelno == logging.ERROR
        and record.name.startswith("aiokafka")
        and record.msg in _NOISE
    ):
        record.levelno, record.levelname = logging.WARNING, "WARNING"
    return True


def get_logger(**bound: Any) -> Any:
    return structlog.get_logger("lynx_relay").bind(**bound)
