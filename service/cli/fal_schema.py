"""``lynx-relay fal-schema``: our Lynx input model against fal's published OpenAPI document
(a newer download, or a file), so a change on fal's side is seen before fal refuses a job."""

from __future__ import annotations

import argparse
from typing import Any

from service.fal_openapi import compare_command, openapi_url


def cmd_fal_schema(args: argparse.Namespace) -> int:
    return compare_command(args.url, args.file)


def register(sub: Any) -> None:
    fal_schema = sub.add_parser(
        "fal-schema",
        help="compare the Lynx input model with fal's OpenAPI document (exit 1 on differences)",
        description="Download fal's OpenAPI document for Lynx (or read --file) and print how "
        "our input model differs from it: fields, required ones, types, ranges, enums and the "
        "defaults we rely on. The checked-in snapshot is schemas/fal/bytedance-lynx.openapi.json.",
    )
    source = fal_schema.add_mutually_exclusive_group()
    source.add_argument("--url", help=f"default: {openapi_url()}")
    source.add_argument("--file", help="a downloaded document (e.g. the checked-in snapshot)")
    fal_schema.set_defaults(func=cmd_fal_schema)
