"""The command line: ``lynx-relay run | emulator | schemas | demo``. The only place argv is read.

Exit codes: 0 after a clean shutdown; 2 for a bad setting or a failed start (one clear line on
stderr, no traceback); 1 when the service stopped on an unexpected error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from service.app import RelayService, StartupError
from service.config import load_settings
from service.demo import run_demo
from service.emulator.server import add_arguments as add_emulator_arguments
from service.emulator.server import config_from_arguments, serve
from service.errors import SettingsError
from service.logs import configure_logging, get_logger
from service.schemas import check_schemas, write_schemas


def _on_signals(stop: Callable[[], object]) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)


def _fail(message: str) -> int:
    print(f"lynx-relay: {message}", file=sys.stderr)
    return 2


def cmd_run(_args: argparse.Namespace) -> int:
    try:
        settings = load_settings(os.environ)
    except SettingsError as exc:
        return _fail(f"invalid settings: {exc}")
    configure_logging(settings.relay_log_level)
    service = RelayService(settings)

    async def main() -> None:
        _on_signals(service.stop)
        await service.run()

    try:
        asyncio.run(main())
    except StartupError as exc:
        return _fail(str(exc))
    except Exception:
        get_logger().exception("relay_crashed")
        return 1
    get_logger().info("relay_exited", exit_code=0)
    return 0


def cmd_emulator(args: argparse.Namespace) -> int:
    configure_logging(args.log_level)
    config = config_from_arguments(args)

    async def main() -> None:
        task = asyncio.current_task()
        assert task is not None
        _on_signals(task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await serve(config, args.host, args.port)

    asyncio.run(main())
    return 0


def cmd_schemas(args: argparse.Namespace) -> int:
    folder = Path(args.dir)
    if args.check:
        stale = check_schemas(folder)
        if stale:
            return _fail(f"schemas out of date: {', '.join(stale)} (run: lynx-relay schemas)")
        print(f"schemas in {folder} are up to date")
        return 0
    for path in write_schemas(folder):
        print(f"wrote {path}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    return run_demo(args.bootstrap, timeout=args.timeout)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lynx-relay",
        description="Kafka requests in, Lynx videos (fal.ai) out. Settings come from the "
        "environment; see the README.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="run the relay in the foreground (JSON logs on stdout)")
    run.set_defaults(func=cmd_run)
    emu = sub.add_parser("emulator", help="run the fal queue emulator (a local stand-in for fal)")
    add_emulator_arguments(emu)
    emu.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    emu.set_defaults(func=cmd_emulator)
    schemas = sub.add_parser("schemas", help="write (or --check) the JSON Schemas in schemas/")
    schemas.add_argument("--dir", default="schemas")
    schemas.add_argument("--check", action="store_true", help="fail if the files are stale")
    schemas.set_defaults(func=cmd_schemas)
    demo = sub.add_parser(
        "demo",
        help="against a running Kafka: start the emulator and the relay, publish the sample "
        "request, print its result event",
    )
    demo.add_argument("--bootstrap", default="127.0.0.1:9092")
    demo.add_argument("--timeout", type=float, default=60.0)
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code
