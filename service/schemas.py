"""JSON Schemas of the wire messages, generated from ``service.messages`` into ``schemas/``,
and the AsyncAPI document of the topics (``service.asyncapi``) next to them.

The checked-in files are what upstream teams read; a test fails when they drift from the
models, and ``lynx-relay schemas`` rewrites them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from service.asyncapi import FILE_NAME as ASYNCAPI_FILE
from service.asyncapi import asyncapi_document
from service.messages import CancelRequest, ProgressEvent, ResultEvent, VideoRequest

_SCHEMA_BASE = "urn:lynx-relay:schemas:v1:"


def schemas() -> dict[str, dict[str, Any]]:
    """Every file of ``schemas/`` by name: the JSON Schemas and the AsyncAPI document."""
    out = {}
    for name, schema in (
        ("request.schema.json", VideoRequest.model_json_schema(mode="validation")),
        ("cancel.schema.json", CancelRequest.model_json_schema(mode="validation")),
        ("progress-event.schema.json", ProgressEvent.model_json_schema(mode="serialization")),
        ("result-event.schema.json", ResultEvent.model_json_schema(mode="serialization")),
    ):
        out[name] = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": _SCHEMA_BASE + name,
            **schema,
        }
    out[ASYNCAPI_FILE] = asyncapi_document()
    return out


def render(schema: dict[str, Any]) -> str:
    """A file's exact text: what is written, and what the check compares."""
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write_schemas(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in schemas().items():
        path = folder / name
        path.write_text(render(schema))
        written.append(path)
    return written


def check_schemas(folder: Path) -> list[str]:
    """Names of the files that are missing or differ from the models."""
    return [
        name
        for name, schema in schemas().items()
        if not (folder / name).is_file() or (folder / name).read_text() != render(schema)
    ]
