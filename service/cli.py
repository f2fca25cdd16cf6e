"""The command line: ``lynx-relay run | spend | schemas``. The only place argv is read.

Exit codes: 0 after a clean shutdown; 2 for a bad setting or a failed start (one clear line on
stderr, no traceback); 1 when the service stopped on an unexpected error.

The fal queue emulator and the demo are not here: they are the development package
``fal_emulator`` (``fal-emulator serve | demo``), which the relay never imports.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from service.app import RelayService, StartupError, read_spend
from service.config import Settings, load_settings
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


def _moment(text: str) -> datetime:
    """A date (``2026-11-01``, midnight UTC) or an RFC 3339 time."""
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def cmd_spend(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(os.environ)
    except SettingsError as exc:
        return _fail(f"invalid settings: {exc}")
    configure_logging("warning")
    now = datetime.now(UTC)
    try:
        since = (
            _moment(args.since)
            if args.since
            else now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        )
        until = _moment(args.until) if args.until else now
    except ValueError as exc:
        return _fail(f"--since/--until: {exc}")
    try:
        spent = asyncio.run(read_spend(settings, since, until))
    except StartupError as exc:
        return _fail(str(exc))
    rows = sorted(spent.items())
    if args.json:
        print(
            json.dumps(
                {
                    "since": since.isoformat(),
                    "until": until.isoformat(),
                    "tenants": {t: asdict(s) for t, s in rows},
                    "total": sum(s.amount for _t, s in rows),
                }
            )
        )
        return 0
    print(
        f"spend from {since.isoformat()} to {until.isoformat()} (from {settings.relay_jobs_topic})"
    )
    print(f"{'tenant':<24} {'jobs':>8} {'units':>12} {'amount':>12}")
    for tenant, s in rows:
        print(f"{tenant:<24} {s.jobs:>8} {s.units:>12.4f} {s.amount:>12.4f}")
    total = sum(s.amount for _t, s in rows)
    print(f"{'total':<24} {sum(s.jobs for _t, s in rows):>8} {'':>12} {total:>12.4f}")
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


def settings_help() -> str:
    """Every setting with its default, for ``run --help`` (the README says what each does)."""
    lines = ["settings (environment variables; the README's Settings table says what each does):"]
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        shown = (
            "unset"
            if default is None
            else str(default).lower()
            if isinstance(default, bool)
            else str(default)
        )
        if "key" in name or "password" in name:
            shown = "unset (secret)"
        lines.append(f"  {name.upper():<34} {shown}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lynx-relay",
        description="Kafka requests in, Lynx videos (fal.ai) out. Settings come from the "
        "environment; see the README.",
    )
    parser.add_argument("--version", action="version", version=f"lynx-relay {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser(
        "run",
        help="run the relay in the foreground (JSON logs on stdout)",
        epilog=settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.set_defaults(func=cmd_run)
    spend = sub.add_parser(
        "spend",
        help="spend per tenant over a period, read from the job ledger (this month by default)",
    )
    spend.add_argument("--since", help="a date or RFC 3339 time (default: the month's start, UTC)")
    spend.add_argument("--until", help="a date or RFC 3339 time (default: now)")
    spend.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    spend.set_defaults(func=cmd_spend)
    schemas = sub.add_parser("schemas", help="write (or --check) the JSON Schemas in schemas/")
    schemas.add_argument("--dir", default="schemas")
    schemas.add_argument("--check", action="store_true", help="fail if the files are stale")
    schemas.set_defaults(func=cmd_schemas)
    return parser


def _version() -> str:
    try:
        return metadata.version("lynx-relay")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code
