"""The command line: ``fal-emulator serve | demo``. The only place this package reads argv.

- ``serve``: the fal queue emulator in the foreground until SIGTERM or SIGINT (exit code 0);
  every option of ``config.add_arguments``, plus ``--log-level``.
- ``demo``: against a running Kafka, the emulator and the relay as two processes, the sample
  request published and its result event printed (see ``demo``); exit code 0 when it succeeded.

A development tool: the relay's image and wheel carry none of it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from collections.abc import Sequence

from fal_emulator.config import add_arguments, config_from_arguments
from fal_emulator.demo import run_demo
from fal_emulator.logs import LEVELS, configure_logging
from fal_emulator.server import serve


def cmd_serve(args: argparse.Namespace) -> int:
    configure_logging(args.log_level)
    config = config_from_arguments(args)

    async def main() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await serve(config, args.host, args.port)

    asyncio.run(main())
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    return run_demo(args.bootstrap, timeout=args.timeout, output_endpoint=args.output_endpoint)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fal-emulator",
        description="A local stand-in for fal's queue API (Lynx), for tests, benchmarks and "
        "the demo. Never part of the relay's image.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve_parser = sub.add_parser("serve", help="run the fal queue emulator in the foreground")
    add_arguments(serve_parser)
    serve_parser.add_argument("--log-level", default="info", choices=list(LEVELS))
    serve_parser.set_defaults(func=cmd_serve)
    demo = sub.add_parser(
        "demo",
        help="against a running Kafka: start the emulator and the relay, publish the sample "
        "request, print its result event",
    )
    demo.add_argument("--bootstrap", default="127.0.0.1:9092")
    demo.add_argument("--timeout", type=float, default=60.0)
    demo.add_argument(
        "--output-endpoint",
        help="an S3-compatible endpoint (scripts/s3proxy's) with a bucket demo-videos: the "
        "relay copies the video there (RELAY_OUTPUT_URL)",
    )
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code
