"""Our Lynx input model against fal's published OpenAPI document (the checked-in snapshot).

The boundary cases are derived from the snapshot, not written here: a change to the snapshot
changes what is tested. Every case is also checked against the snapshot's schema itself (with
``jsonschema``), so "LynxInput refuses it" is only asserted where fal's schema refuses it too.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from pydantic import ValidationError

from service.fal_openapi import (
    RELIED_ON_DEFAULTS,
    SchemaDocumentError,
    compare,
    compare_command,
    compare_with_model,
    facts,
    fetch_document,
    input_schema,
    load_document,
    openapi_url,
)
from service.messages import LynxInput

SNAPSHOT_PATH = Path(__file__).parents[2] / "schemas" / "fal" / "bytedance-lynx.openapi.json"
SNAPSHOT = load_document(SNAPSHOT_PATH)
FAL_INPUT = input_schema(SNAPSHOT)
PROPERTIES: dict[str, Any] = FAL_INPUT["properties"]
REQUIRED: list[str] = FAL_INPUT["required"]
# A body with only the required fields, valid for both (our model checks the image's shape).
BASE: dict[str, Any] = {
    "image_url": "https://storage.googleapis.com/falserverless/example_inputs/lynx/example_in.png",
    "prompt": "A person carves a pumpkin on a porch in the evening.",
}


def _fal_accepts(body: dict[str, Any]) -> bool:
    validator = jsonschema.Draft202012Validator(FAL_INPUT)
    return validator.is_valid(body)


def _we_accept(body: dict[str, Any]) -> bool:
    try:
        LynxInput.model_validate(body)
    except ValidationError:
        return False
    return True


def _boundary_cases() -> Iterator[Any]:
    """(field, value, accepted) at and just past every bound and for every enum of the snapshot."""
    for name, schema in PROPERTIES.items():
        found = facts(schema, SNAPSHOT)
        kind = next(iter(found.types), None)
        step = 1 if kind == "integer" else 1e-6
        for key, value in found.bounds.items():
            inside = {"minimum": value, "maximum": value}.get(key)
            if inside is not None:
                yield pytest.param(name, _cast(kind, inside), True, id=f"{name}={inside}")
            outside = value - step if key in {"minimum", "exclusiveMinimum"} else value + step
            yield pytest.param(name, _cast(kind, outside), False, id=f"{name}={outside}")
            if key.startswith("exclusive"):
                just_inside = value + step if key == "exclusiveMinimum" else value - step
                yield pytest.param(name, _cast(kind, just_inside), True, id=f"{name}={just_inside}")
                yield pytest.param(name, _cast(kind, value), False, id=f"{name}={value}!")
        for option in sorted(found.enum or (), key=repr):
            yield pytest.param(name, option, True, id=f"{name}={option}")
        if found.enum:
            yield pytest.param(name, "not-an-option", False, id=f"{name}=not-an-option")


def _cast(kind: str | None, value: float) -> int | float:
    return int(value) if kind == "integer" else float(value)


def test_the_snapshot_and_lynx_input_have_no_differences() -> None:
    """LynxInput takes what fal's published schema takes: no difference at all."""
    assert compare_with_model(SNAPSHOT) == []


def test_the_snapshot_gives_num_frames_9_to_81() -> None:
    """The range the issue names: 9 to 81 (fal's prose says 100; its schema, and we, say 81)."""
    num_frames = facts(PROPERTIES["num_frames"], SNAPSHOT)
    assert (num_frames.types, num_frames.bounds) == (
        frozenset({"integer"}),
        {"minimum": 9, "maximum": 81},
    )


def test_the_snapshot_has_ranges_and_enums_to_test() -> None:
    """The derived table is not empty by accident (a snapshot that lost its ranges)."""
    cases = list(_boundary_cases())
    assert len(cases) >= 2 * 2 * 7 + 6
    assert {case.values[0] for case in cases} >= {"num_frames", "resolution", "aspect_ratio"}


@pytest.mark.parametrize(("name", "value", "accepted"), list(_boundary_cases()))
def test_lynx_input_accepts_and_refuses_what_the_snapshot_does(
    name: str, value: object, accepted: bool
) -> None:
    """At each bound and just past it, and for each enum value and one outside the enum, our
    model and fal's schema agree."""
    body = {**BASE, name: value}
    assert _fal_accepts(body) is accepted
    assert _we_accept(body) is accepted


@pytest.mark.parametrize("missing", REQUIRED)
def test_a_body_missing_a_required_field_is_refused(missing: str) -> None:
    """Each field the snapshot requires is required by our model too."""
    body = {key: value for key, value in BASE.items() if key != missing}
    assert not _fal_accepts(body)
    assert not _we_accept(body)


def test_the_required_fields_alone_are_enough() -> None:
    """Nothing else is required on either side."""
    assert set(BASE) == set(REQUIRED)
    assert _fal_accepts(BASE)
    assert _we_accept(BASE)


@pytest.mark.parametrize("name", [name for name in PROPERTIES if name not in REQUIRED])
def test_a_null_optional_field_reaches_fal_as_a_body_fal_accepts(name: str) -> None:
    """We take null for every optional field (null means "fal's default"); the body fal gets
    then leaves it out, so it passes fal's schema even where fal's field is not nullable."""
    arguments = LynxInput.model_validate({**BASE, name: None}).to_fal_arguments()
    assert name not in arguments
    assert _fal_accepts(arguments)


def test_the_relay_relies_on_fal_defaults_the_snapshot_gives() -> None:
    """The cost estimate assumes fal's defaults for num_frames and frames_per_second."""
    for name, value in RELIED_ON_DEFAULTS.items():
        assert facts(PROPERTIES[name], SNAPSHOT).default == value


def _changed(edit: Any) -> dict[str, Any]:
    document = copy.deepcopy(SNAPSHOT)
    edit(document["components"]["schemas"]["LynxInput"])
    return document


def _set(path: list[str], value: object) -> Any:
    def edit(schema: dict[str, Any]) -> None:
        target = schema
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return edit


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        pytest.param(
            _set(["properties", "num_frames", "maximum"], 100),
            "num_frames: maximum is 100 for fal, 81 in LynxInput",
            id="num_frames-maximum-100",
        ),
        pytest.param(
            _set(["properties", "num_frames", "minimum"], 17),
            "num_frames: minimum is 17 for fal, 9 in LynxInput",
            id="num_frames-minimum-17",
        ),
        pytest.param(
            _set(["properties", "resolution", "enum"], ["480p", "580p", "720p", "1080p"]),
            "resolution: fal accepts '1080p', LynxInput does not",
            id="enum-value-added",
        ),
        pytest.param(
            _set(["properties", "aspect_ratio", "enum"], ["16:9", "9:16"]),
            "aspect_ratio: LynxInput accepts '1:1', fal does not",
            id="enum-value-removed",
        ),
        pytest.param(
            _set(["required"], ["image_url", "prompt", "resolution"]),
            "resolution: required by fal, optional in LynxInput",
            id="new-required-field",
        ),
        pytest.param(
            _set(["properties", "loop"], {"type": "boolean", "default": False}),
            "loop: in fal's schema, missing from LynxInput",
            id="new-property",
        ),
        pytest.param(
            _set(["properties", "frames_per_second", "type"], "number"),
            "frames_per_second: type is number for fal, integer in LynxInput",
            id="integer-becomes-number",
        ),
        pytest.param(
            _set(["properties", "ip_scale", "exclusiveMinimum"], 0),
            "ip_scale: exclusiveMinimum is 0 for fal, absent in LynxInput",
            id="exclusive-bound",
        ),
        pytest.param(
            _set(["properties", "frames_per_second", "default"], 24),
            "frames_per_second: the relay assumes fal's default is 16, fal's is 24",
            id="relied-on-default-changed",
        ),
        pytest.param(
            _set(["properties", "num_inference_steps", "default"], 30),
            "num_inference_steps: LynxInput's description says fal's default is 50, fal's is 30",
            id="documented-default-changed",
        ),
        pytest.param(
            _set(["properties", "prompt"], {"anyOf": [{"type": "string"}, {"type": "null"}]}),
            "prompt: fal accepts null, LynxInput refuses it",
            id="required-field-becomes-nullable",
        ),
    ],
)
def test_the_comparison_finds_a_change_in_fals_document(edit: Any, expected: str) -> None:
    """Each kind of change fal could make to the schema is reported (the check can fail)."""
    assert expected in compare_with_model(_changed(edit))


def test_a_removed_property_is_reported() -> None:
    """A field fal dropped is one producers can still send: reported."""
    document = copy.deepcopy(SNAPSHOT)
    del document["components"]["schemas"]["LynxInput"]["properties"]["guidance_scale_2"]
    assert compare_with_model(document) == [
        "guidance_scale_2: in LynxInput, missing from fal's schema"
    ]


def test_openapi_3_0_forms_are_read_like_json_schema_ones() -> None:
    """``nullable: true`` and a boolean ``exclusiveMinimum`` mean what their 2020-12 forms mean."""
    old = {"type": "integer", "nullable": True, "minimum": 0, "exclusiveMinimum": True}
    new = {"anyOf": [{"type": "integer", "exclusiveMinimum": 0}, {"type": "null"}]}
    assert facts(old, {}) == facts(new, {})


def test_refs_are_followed_in_the_document_and_in_the_model_schema() -> None:
    """The submit body's $ref, and $refs inside properties, lead to the schema they name."""
    document = {
        "paths": {"/o/m": {"post": {"requestBody": {"content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/In"}}}}}}},
        "components": {"schemas": {
            "In": {"type": "object", "properties": {"n": {"$ref": "#/components/schemas/N"}}},
            "N": {"type": "integer", "minimum": 1},
        }},
    }  # fmt: skip
    model = {"properties": {"n": {"$ref": "#/$defs/N"}}, "$defs": {"N": {"type": "integer"}}}
    assert compare(input_schema(document), model, document_root=document) == [
        "n: minimum is 1 for fal, absent in LynxInput"
    ]


def test_a_document_without_the_endpoint_is_refused() -> None:
    """Asking for an endpoint the document does not describe is an error, not "no difference"."""
    with pytest.raises(SchemaDocumentError):
        input_schema(SNAPSHOT, "fal-ai/lynx")


def test_the_default_url_is_fals_document_for_bytedance_lynx() -> None:
    """Without --url the command downloads fal's published document for bytedance/lynx."""
    assert openapi_url() == (
        "https://fal.ai/api/openapi/queue/openapi.json?endpoint_id=bytedance/lynx"
    )


class _Server:
    """A local HTTP server answering every GET with one body (no network beyond loopback)."""

    def __init__(self, body: bytes, status: int = 200) -> None:
        self.paths: list[str] = []
        paths = self.paths

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                paths.append(self.path)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: the assertions say what matters

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}/api/openapi/queue/openapi.json"

    def __enter__(self) -> _Server:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The local server is reached directly, whatever proxy the machine sets."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


def test_fetch_reads_the_document_over_http() -> None:
    """The download path returns the document the server serves, asked for by endpoint id."""
    with _Server(SNAPSHOT_PATH.read_bytes()) as server:
        document = fetch_document(openapi_url(base_url=server.base_url))
    assert document == SNAPSHOT
    assert server.paths == ["/api/openapi/queue/openapi.json?endpoint_id=bytedance/lynx"]


def test_the_command_exits_0_when_the_download_matches(capsys: pytest.CaptureFixture[str]) -> None:
    """``lynx-relay fal-schema --url``: no difference, exit 0, one line saying so."""
    with _Server(SNAPSHOT_PATH.read_bytes()) as server:
        code = compare_command(openapi_url(base_url=server.base_url), None)
    assert code == 0
    assert "LynxInput matches" in capsys.readouterr().out


def test_the_command_exits_1_and_lists_the_differences(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A newer document with num_frames up to 100: exit 1, the difference printed."""
    newer = _changed(_set(["properties", "num_frames", "maximum"], 100))
    with _Server(json.dumps(newer).encode()) as server:
        code = compare_command(server.base_url, None)
    assert code == 1
    assert "num_frames: maximum is 100 for fal, 81 in LynxInput" in capsys.readouterr().out


def test_the_command_reads_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--file``: the same comparison on a saved document."""
    saved = tmp_path / "lynx.json"
    saved.write_text(json.dumps(_changed(_set(["required"], ["image_url"]))))
    assert compare_command(None, str(saved)) == 1
    assert "prompt: optional for fal, required by LynxInput" in capsys.readouterr().out
    assert compare_command(None, str(SNAPSHOT_PATH)) == 0


@pytest.mark.parametrize(
    ("body", "status"),
    [(b"{}", 200), (b"not json", 200), (b'{"detail": "Not Found"}', 404)],
    ids=["not-openapi", "not-json", "http-404"],
)
def test_the_command_exits_2_when_the_document_cannot_be_read(
    body: bytes, status: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """A document that is not there or not OpenAPI is an error (2), never "matches" (0)."""
    with _Server(body, status) as server:
        assert compare_command(server.base_url, None) == 2
    assert "cannot read fal's OpenAPI document" in capsys.readouterr().err


def test_the_command_takes_a_url_or_a_file_not_both(capsys: pytest.CaptureFixture[str]) -> None:
    """Both at once is a usage error (2); nothing is fetched."""
    assert compare_command("http://127.0.0.1:9/x", str(SNAPSHOT_PATH)) == 2
    assert "not both" in capsys.readouterr().err
