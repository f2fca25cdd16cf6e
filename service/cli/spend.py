"""``lynx-relay spend``: spend per tenant over a period, from the job ledger."""

from __future__ import annotations

import argparse
import asyncio
import json
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from service.app import StartupError, read_spend
from service.cli.common import Refused, moment, settings
from service.logs import configure_logging


def cmd_spend(args: argparse.Namespace) -> int:
    config = settings()
    configure_logging("warning")
    now = datetime.now(UTC)
    since = (
        moment(args.since)
        if args.since
        else now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    )
    until = moment(args.until) if args.until else now
    try:
        spent = asyncio.run(read_spend(config, since, until))
    except StartupError as exc:
        raise Refused(str(exc)) from None
    rows = sorted(spent.items())
    total = sum(s.amount for _t, s in rows)
    if args.json:
        print(
            json.dumps(
                {
                    "since": since.isoformat(),
                    "until": until.isoformat(),
                    "tenants": {t: asdict(s) for t, s in rows},
                    "total": total,
                }
            )
        )
        return 0
    print(f"spend from {since.isoformat()} to {until.isoformat()} (from {config.relay_jobs_topic})")
    print(f"{'tenant':<24} {'jobs':>8} {'units':>12} {'amount':>12}")
    for tenant, s in rows:
        print(f"{tenant:<24} {s.jobs:>8} {s.units:>12.4f} {s.amount:>12.4f}")
    print(f"{'total':<24} {sum(s.jobs for _t, s in rows):>8} {'':>12} {total:>12.4f}")
    return 0


def register(sub: Any) -> None:
    spend = sub.add_parser(
        "spend",
        help="spend per tenant over a period, read from the job ledger (this month by default)",
    )
    spend.add_argument("--since", help="a date or RFC 3339 time (default: the month's start, UTC)")
    spend.add_argument("--until", help="a date or RFC 3339 time (default: now)")
    spend.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    spend.set_defaults(func=cmd_spend)
