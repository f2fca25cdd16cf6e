"""fal's published input schema for Lynx against ours: what differs, field by field.

fal publishes each model's queue API as an OpenAPI document
(``https://fal.ai/api/openapi/queue/openapi.json?endpoint_id=bytedance/lynx``); its submit
operation (``POST /{endpoint_id}``) takes the model's input schema (``LynxInput``). This module
owns reading such a document, finding that schema, and comparing it with the JSON Schema of
``service.messages.LynxInput``, so that a change on fal's side (a range, a new option, a new
required field) shows up as a list of sentences instead of as 422s in production.

Gather, decide, print: ``fetch_document`` / ``load_document`` read (the only I/O, used by the
``lynx-relay fal-schema`` command and never at import), ``compare`` is pure, and
``compare_command`` prints. ``schemas/fal/bytedance-lynx.openapi.json`` is the checked-in
snapshot; ``schemas/fal/README.md`` says where it comes from.

What counts as a difference, per property: presence; required-ness; the JSON type (``integer``
is not ``number``); ``minimum``/``maximum`` and their exclusive forms; the enum values; the
default (below). Two things are deliberately not differences:

- We accept ``null`` where fal's field is not nullable: ``LynxInput.to_fal_arguments`` drops
  nulls, so ``null`` means "leave it to fal", as leaving the field out does. (fal accepting a
  ``null`` that we refuse *is* a difference.)
- Our optional fields default to ``null`` (fal applies its own default). What we do check is
  every place the relay states or relies on fal's default: a non-null default of ours, a
  "(fal's default: X)" in a field's description (it goes into ``schemas/request.schema.json``),
  and the defaults the cost estimate assumes (``service.core.cost``).

Keywords the comparison does not look at (titles, descriptions, ``minLength``, ``examples``,
fal's ``x-fal-*``) may differ freely: our stricter string checks (a non-empty prompt, an image
URL or data URI) are the relay's own policy.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
from pydantic import BaseModel

from service.core.cost import DEFAULT_FRAMES_PER_SECOND, DEFAULT_NUM_FRAMES
from service.messages import LynxInput

ENDPOINT_ID = "bytedance/lynx"
OPENAPI_BASE_URL = "https://fal.ai/api/openapi/queue/openapi.json"

# fal defaults the relay's own code relies on when a request leaves the field out.
RELIED_ON_DEFAULTS: Mapping[str, object] = {
    "num_frames": DEFAULT_NUM_FRAMES,
    "frames_per_second": DEFAULT_FRAMES_PER_SECOND,
}

_DOCUMENTED_DEFAULT = re.compile(r"fal's default: ([^)]*)\)")
_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
_MISSING = object()


class SchemaDocumentError(ValueError):
    """The document is not an OpenAPI document we can read the endpoint's input from."""


def openapi_url(endpoint_id: str = ENDPOINT_ID, base_url: str = OPENAPI_BASE_URL) -> str:
    """Where fal publishes the queue OpenAPI document of ``endpoint_id``."""
    # fal's own links keep the id's slash as is (``?endpoint_id=bytedance/lynx``).
    return f"{base_url}?{urlencode({'endpoint_id': endpoint_id}, safe='/')}"


def load_document(path: str | Path) -> dict[str, Any]:
    """An OpenAPI document from a JSON file."""
    return _as_document(json.loads(Path(path).read_text(encoding="utf-8")))


def fetch_document(url: str, *, timeout_s: float = 30.0) -> dict[str, Any]:
    """Download an OpenAPI document (the command's only network call)."""
    with httpx.Client(timeout=timeout_s, follow_redirects=True) as client:
        response = client.get(url, headers={"Accept": "application/json"})
        response.raise_for_status()
        return _as_document(response.json())


def _as_document(value: object) -> dict[str, Any]:
    if not isinstance(value, dict) or "paths" not in value:
        raise SchemaDocumentError("not an OpenAPI document (no paths)")
    return value


def input_schema(document: Mapping[str, Any], endpoint_id: str | None = None) -> dict[str, Any]:
    """The JSON body schema of the endpoint's submit (``POST /{endpoint_id}``), $refs followed.

    Without ``endpoint_id``: the endpoint the document names (``info.x-fal-metadata``), else
    its only POST operation with a JSON body."""
    if endpoint_id is None:
        info = document.get("info")
        metadata = info.get("x-fal-metadata") if isinstance(info, dict) else None
        named = metadata.get("endpointId") if isinstance(metadata, dict) else None
        endpoint_id = named if isinstance(named, str) else None
    bodies = dict(_post_bodies(document))
    if endpoint_id is not None:
        path = "/" + endpoint_id.strip("/")
        if path not in bodies:
            raise SchemaDocumentError(f"no POST {path} with a JSON body in the document")
        body = bodies[path]
    elif len(bodies) == 1:
        [body] = bodies.values()
    else:
        raise SchemaDocumentError(f"{len(bodies)} POST operations with a JSON body; name one")
    return _resolve(body, document)


def _post_bodies(document: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    found: list[tuple[str, Mapping[str, Any]]] = []
    for path, item in (document.get("paths") or {}).items():
        operation = item.get("post") if isinstance(item, dict) else None
        if not isinstance(operation, dict):
            continue
        content = operation.get("requestBody", {}).get("content", {})
        schema = content.get("application/json", {}).get("schema")
        if isinstance(schema, dict):
            found.append((path, schema))
    return found


def _resolve(schema: Mapping[str, Any], root: Mapping[str, Any]) -> dict[str, Any]:
    """Follow local ``$ref``s (``#/a/b``) until a schema without one."""
    seen: set[str] = set()
    while "$ref" in schema:
        ref = schema["$ref"]
        if not isinstance(ref, str) or not ref.startswith("#/") or ref in seen:
            raise SchemaDocumentError(f"cannot follow $ref {ref!r}")
        seen.add(ref)
        target: Any = root
        for token in ref[2:].split("/"):
            key = token.replace("~1", "/").replace("~0", "~")
            if not isinstance(target, dict) or key not in target:
                raise SchemaDocumentError(f"$ref {ref!r} points nowhere")
            target = target[key]
        if not isinstance(target, dict):
            raise SchemaDocumentError(f"$ref {ref!r} is not a schema")
        schema = target
    return dict(schema)


@dataclass(frozen=True)
class Facts:
    """What a property's schema says about the values it accepts, ``null`` set apart."""

    types: frozenset[str]
    nullable: bool
    bounds: Mapping[str, float]
    enum: frozenset[object] | None
    default: object  # _MISSING when the schema gives none


def facts(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Facts:
    """Normalise a property schema: ``anyOf``/``oneOf`` branches, ``type`` lists, OpenAPI 3.0's
    ``nullable`` and boolean ``exclusiveMinimum``, and JSON Schema's numeric one."""
    schema = _resolve(schema, root)
    branches = [
        _resolve(branch, root) for branch in (schema.get("anyOf") or schema.get("oneOf") or [])
    ]
    if not branches:
        branches = [schema]
    types: set[str] = set()
    nullable = bool(schema.get("nullable"))
    bounds: dict[str, float] = {}
    enum: set[object] | None = None
    for branch in branches:
        declared = branch.get("type")
        names = declared if isinstance(declared, list) else [declared] if declared else []
        nullable = nullable or "null" in names or bool(branch.get("nullable"))
        if branch.get("enum") is not None:
            values = [value for value in branch["enum"] if value is not None]
            nullable = nullable or len(values) < len(branch["enum"])
            enum = (enum or set()) | {_hashable(value) for value in values}
        types.update(name for name in names if name != "null")
        bounds.update(_bounds(branch))
    return Facts(
        types=frozenset(types),
        nullable=nullable,
        bounds=bounds,
        enum=None if enum is None else frozenset(enum),
        default=schema.get("default", _MISSING),
    )


def _bounds(schema: Mapping[str, Any]) -> dict[str, float]:
    bounds = {
        key: float(value)
        for key in _BOUNDS
        if isinstance(value := schema.get(key), int | float) and not isinstance(value, bool)
    }
    # OpenAPI 3.0: exclusiveMinimum: true makes minimum exclusive.
    for flag, plain in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if schema.get(flag) is True and plain in bounds:
            bounds[flag] = bounds.pop(plain)
    return bounds


def _hashable(value: object) -> object:
    return json.dumps(value, sort_keys=True) if isinstance(value, dict | list) else value


def compare(
    document_schema: Mapping[str, Any],
    model_schema: Mapping[str, Any],
    *,
    document_root: Mapping[str, Any] | None = None,
    relied_on_defaults: Mapping[str, object] = RELIED_ON_DEFAULTS,
) -> list[str]:
    """The differences between fal's input schema and ours, one sentence each; [] if none.

    ``document_root`` is what the document schema's ``$ref``s point into (the whole document);
    the model schema's point into itself (pydantic's ``$defs``)."""
    doc_root = document_root if document_root is not None else document_schema
    theirs = _resolve(document_schema, doc_root)
    ours = _resolve(model_schema, model_schema)
    their_props: Mapping[str, Any] = theirs.get("properties") or {}
    our_props: Mapping[str, Any] = ours.get("properties") or {}
    differences = [
        f"{name}: in fal's schema, missing from LynxInput"
        for name in their_props
        if name not in our_props
    ]
    differences += [
        f"{name}: in LynxInput, missing from fal's schema"
        for name in our_props
        if name not in their_props
    ]
    their_required = set(theirs.get("required") or [])
    our_required = set(ours.get("required") or [])
    for name in sorted(their_required - our_required):
        differences.append(f"{name}: required by fal, optional in LynxInput")
    for name in sorted(our_required - their_required):
        differences.append(f"{name}: optional for fal, required by LynxInput")
    for name, their_schema in their_props.items():
        if name in our_props:
            differences += _compare_property(
                name,
                facts(their_schema, doc_root),
                facts(our_props[name], model_schema),
                relied_on_defaults.get(name, _MISSING),
            )
    return differences


def _compare_property(name: str, theirs: Facts, ours: Facts, relied_on: object) -> list[str]:
    found: list[str] = []
    if theirs.types != ours.types:
        found.append(f"{name}: type is {_types(theirs)} for fal, {_types(ours)} in LynxInput")
    if theirs.nullable and not ours.nullable:
        found.append(f"{name}: fal accepts null, LynxInput refuses it")
    for key in _BOUNDS:
        their_bound, our_bound = theirs.bounds.get(key), ours.bounds.get(key)
        if their_bound != our_bound:
            found.append(
                f"{name}: {key} is {_num(their_bound)} for fal, {_num(our_bound)} in LynxInput"
            )
    if theirs.enum != ours.enum:
        if theirs.enum is None or ours.enum is None:
            found.append(
                f"{name}: enum is {_enum(theirs.enum)} for fal, {_enum(ours.enum)} in LynxInput"
            )
        else:
            if added := theirs.enum - ours.enum:
                found.append(f"{name}: fal accepts {_enum(frozenset(added))}, LynxInput does not")
            if removed := ours.enum - theirs.enum:
                found.append(f"{name}: LynxInput accepts {_enum(frozenset(removed))}, fal does not")
    found += _compare_defaults(name, theirs, ours, relied_on)
    return found


def _compare_defaults(name: str, theirs: Facts, ours: Facts, relied_on: object) -> list[str]:
    their_default = theirs.default
    claims: list[tuple[str, object]] = []
    if ours.default is not _MISSING and ours.default is not None:
        claims.append(("LynxInput's default", ours.default))
    if relied_on is not _MISSING:
        claims.append(("the relay assumes fal's default", relied_on))
    found = []
    for who, value in claims:
        if their_default is _MISSING or not _same(value, their_default):
            found.append(f"{name}: {who} is {value!r}, fal's is {_default(their_default)}")
    return found


def documented_defaults(model: type[BaseModel] = LynxInput) -> dict[str, str]:
    """The "(fal's default: X)" each field's description states, by field name."""
    stated = {}
    for name, field in model.model_fields.items():
        if field.description and (match := _DOCUMENTED_DEFAULT.search(field.description)):
            stated[name] = match.group(1).strip()
    return stated


def compare_documented_defaults(
    document_schema: Mapping[str, Any],
    stated: Mapping[str, str],
    *,
    document_root: Mapping[str, Any] | None = None,
) -> list[str]:
    """Differences between the defaults our descriptions state and fal's schema's."""
    doc_root = document_root if document_root is not None else document_schema
    props: Mapping[str, Any] = _resolve(document_schema, doc_root).get("properties") or {}
    found = []
    for name, text in stated.items():
        if name not in props:
            continue  # reported as a missing property already
        their_default = facts(props[name], doc_root).default
        if their_default is _MISSING or not _same_text(text, their_default):
            found.append(
                f"{name}: LynxInput's description says fal's default is {text}, "
                f"fal's is {_default(their_default)}"
            )
    return found


def compare_with_model(
    document: Mapping[str, Any],
    model: type[BaseModel] = LynxInput,
    endpoint_id: str | None = None,
) -> list[str]:
    """Every difference between the document's input schema for the endpoint and ``model``."""
    schema = input_schema(document, endpoint_id)
    return compare(schema, model.model_json_schema(), document_root=document) + (
        compare_documented_defaults(schema, documented_defaults(model), document_root=document)
    )


def compare_command(url: str | None, file: str | None, *, endpoint_id: str = ENDPOINT_ID) -> int:
    """``lynx-relay fal-schema [--url URL | --file PATH]``: print the differences between fal's
    published Lynx input and ``LynxInput``. Exit 0 when none, 1 when any, 2 when the document
    cannot be read. Without ``--file``, downloads ``--url`` (default: fal's document)."""
    if url is not None and file is not None:
        return _refuse("give --url or --file, not both")
    source = file if file is not None else url or openapi_url(endpoint_id)
    try:
        document = load_document(file) if file is not None else fetch_document(source)
        differences = compare_with_model(document, LynxInput, endpoint_id)
    except (OSError, ValueError, httpx.HTTPError) as exc:
        # ValueError covers bad JSON and SchemaDocumentError.
        return _refuse(f"cannot read fal's OpenAPI document from {source}: {exc}")
    if not differences:
        print(f"LynxInput matches fal's input schema for {endpoint_id} ({source})")
        return 0
    print(f"LynxInput differs from fal's input schema for {endpoint_id} ({source}):")
    for difference in differences:
        print(f"  - {difference}")
    return 1


def _refuse(message: str) -> int:
    print(f"lynx-relay: {message}", file=sys.stderr)
    return 2


def _same(ours: object, theirs: object) -> bool:
    if _is_number(ours) and _is_number(theirs):
        return math.isclose(float(ours), float(theirs))  # type: ignore[arg-type]
    return ours == theirs


def _same_text(text: str, theirs: object) -> bool:
    if _is_number(theirs):
        try:
            return math.isclose(float(text), float(theirs))  # type: ignore[arg-type]
        except ValueError:
            return False
    return text == theirs


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _types(value: Facts) -> str:
    return " | ".join(sorted(value.types)) or "unspecified"


def _num(value: float | None) -> str:
    if value is None:
        return "absent"
    return str(int(value)) if value.is_integer() else str(value)


def _enum(values: frozenset[object] | None) -> str:
    if values is None:
        return "absent"
    return ", ".join(sorted(repr(value) for value in values))


def _default(value: object) -> str:
    return "absent" if value is _MISSING else repr(value)
