"""``lynx-relay run``: the relay in the foreground, and the settings its ``--help`` lists."""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Callable
from typing import Any

from service.app import RelayService, StartupError
from service.cli.common import fail, settings
from service.config import Settings
from service.logs import configure_logging, get_logger


def _on_signals(stop: Callable[[], object]) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)


def cmd_run(_args: argparse.Namespace) -> int:
    config = settings()
    configure_logging(config.relay_log_level)
    service = RelayService(config)

    async def main() -> None:
        _on_signals(service.stop)
        await service.run()

    try:
        asyncio.run(main())
    except StartupError as exc:
        return fail(str(exc))
    except Exception:
        get_logger().exception("relay_crashed")
        return 1
    get_logger().info("relay_exited", exit_code=0)
    return 0


def is_secret(name: str) -> bool:
    return any(word in name for word in ("key", "password", "secret", "token"))


def shown(default: Any) -> str:
    if default is None:
        return "unset"
    if isinstance(default, bool):
        return str(default).lower()
    return str(default)


def settings_help() -> str:
    """Every setting with its default, for ``run --help`` (the README says what each does)."""
    lines = ["settings (environment variables; the README's Settings table says what each does):"]
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        value = "unset (secret)" if is_secret(name) else shown(default)
        lines.append(f"  {name.upper():<34} {value}")
    return "\n".join(lines)


def register(sub: Any) -> None:
    run = sub.add_parser(
        "run",
        help="run the relay in the foreground (JSON logs on stdout)",
        epilog=settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.set_defaults(func=cmd_run)
