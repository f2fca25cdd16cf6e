"""The command line: ``lynx-relay run | submit | requests | dlq | spend | config | schemas |
fal-schema``.
The only place argv is read; each sub-command is a module of this package with a
``register`` that adds its parser.

Exit codes: 0 after a clean shutdown (``submit``: the request succeeded); 2 for a bad setting,
bad usage or a failed start (one clear line on stderr, no traceback); 1 when the service
stopped on an unexpected error (``submit``: the request failed).

The fal queue emulator and the demo are not here: they are the development package
``fal_emulator`` (``fal-emulator serve | demo``), which the relay never imports.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from importlib import metadata

from service.cli import config, dlq, fal_schema, requests, run, schemas, spend, submit
from service.cli.common import Refused, fail


def _version() -> str:
    try:
        return metadata.version("lynx-relay")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lynx-relay",
        description="Kafka requests in, Lynx videos (fal.ai) out. Settings come from the "
        "environment; see the README.",
    )
    parser.add_argument("--version", action="version", version=f"lynx-relay {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in (run, submit, requests, dlq, spend, config, schemas, fal_schema):
        command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except Refused as exc:
        return fail(str(exc))
    except KeyboardInterrupt:
        return 130
    return code
