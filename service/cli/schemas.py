"""``lynx-relay schemas``: write, or check, the documents in ``schemas/``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from service.cli.common import Refused
from service.schemas import check_schemas, write_schemas


def cmd_schemas(args: argparse.Namespace) -> int:
    folder = Path(args.dir)
    if args.check:
        stale = check_schemas(folder)
        if stale:
            raise Refused(f"schemas out of date: {', '.join(stale)} (run: lynx-relay schemas)")
        print(f"schemas in {folder} are up to date")
        return 0
    for path in write_schemas(folder):
        print(f"wrote {path}")
    return 0


def register(sub: Any) -> None:
    schemas = sub.add_parser("schemas", help="write (or --check) the JSON Schemas in schemas/")
    schemas.add_argument("--dir", default="schemas")
    schemas.add_argument("--check", action="store_true", help="fail if the files are stale")
    schemas.set_defaults(func=cmd_schemas)
