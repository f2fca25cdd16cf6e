"""What every sub-command shares: its settings, its one-line failures, its times."""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime

from service.config import Settings, load_settings
from service.errors import SettingsError

# Exit codes: 0 done (for `submit`, the request succeeded); 1 the request failed or the
# service stopped on an unexpected error; 2 bad usage, a bad setting, or a failed start.
EXIT_USAGE = 2


def fail(message: str) -> int:
    print(f"lynx-relay: {message}", file=sys.stderr)
    return EXIT_USAGE


class Refused(Exception):
    """A sub-command cannot go on: one line, exit code 2."""


def settings() -> Settings:
    try:
        return load_settings(os.environ)
    except SettingsError as exc:
        raise Refused(f"invalid settings: {exc}") from None


def moment(text: str) -> datetime:
    """A date (``2026-11-01``, midnight UTC) or an RFC 3339 time."""
    try:
        at = datetime.fromisoformat(text)
    except ValueError as exc:
        raise Refused(f"not a date or time: {text!r} ({exc})") from None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)
