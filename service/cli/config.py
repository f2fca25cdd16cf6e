"""``lynx-relay config``: the settings the relay would run with, secrets masked."""

from __future__ import annotations

import argparse
import json
import os
import re
from typing import Any

from pydantic import SecretStr

from service.cli.common import settings
from service.cli.run import is_secret, shown

MASK = "****"
# user:password@ in a URL (a broker or an endpoint with credentials in it).
_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")


def masked(name: str, value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, SecretStr) or is_secret(name):
        return f"{MASK} (set)"
    text = shown(value)
    return _USERINFO.sub(f"{MASK}@", text)


def cmd_config(args: argparse.Namespace) -> int:
    config = settings()  # a bad setting is refused here, as `run` would
    from_env = {k.lower() for k in os.environ}
    rows = [
        (name.upper(), masked(name, getattr(config, name)), name in from_env)
        for name in type(config).model_fields
    ]
    if args.json:
        print(
            json.dumps(
                {name: {"value": value, "from_env": env} for name, value, env in rows},
                indent=2,
            )
        )
        return 0
    for name, value, env in rows:
        print(f"{name:<34} {value}{'' if env else '  (default)'}")
    return 0


def register(sub: Any) -> None:
    config = sub.add_parser(
        "config",
        help="the effective settings (environment and defaults), secrets masked; "
        "exit 2 if a setting is invalid",
    )
    config.add_argument("--json", action="store_true", help="one JSON object instead of lines")
    config.set_defaults(func=cmd_config)
