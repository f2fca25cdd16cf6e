"""The AsyncAPI document of the topics is generated from the models, kept equal to the
checked-in file, and accepted by the AsyncAPI project's own parser (which refuses a broken one).

The parser is ``@asyncapi/parser`` under Node, installed by ``make setup`` into
``tools/asyncapi-check``; without it these tests fail (they never skip), saying so.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from pydantic import BaseModel, create_model

from service.adapters.ledger_codec import encode_entry
from service.asyncapi import FILE_NAME, WireModels, asyncapi_document
from service.core.ledger import FalRef, LedgerEntry, Source
from service.messages import CancelRequest, VideoRequest
from service.schemas import check_schemas, render, write_schemas

ROOT = Path(__file__).resolve().parents[2]
CHECKED_IN = ROOT / "schemas" / FILE_NAME
CHECKER = ROOT / "tools" / "asyncapi-check"


def _parse(*paths: Path) -> subprocess.CompletedProcess[str]:
    """Run the AsyncAPI parser on ``paths`` (one Node start for all): exit code, and for each
    a ``== <path>`` section of its diagnostics on stdout."""
    if not (CHECKER / "node_modules" / "@asyncapi" / "parser").is_dir():
        pytest.fail(
            "the AsyncAPI parser is not installed in tools/asyncapi-check: run `make setup` "
            "(it runs `npm ci --prefix tools/asyncapi-check`; needs Node 20+)"
        )
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not on PATH: install Node.js 20+, then run `make setup`")
    return subprocess.run(  # noqa: S603 - the fixed node binary, our own script
        [node, str(CHECKER / "validate.mjs"), *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _sections(stdout: str) -> dict[str, str]:
    """The parser's output, by document."""
    out: dict[str, str] = {}
    current = ""
    for line in stdout.splitlines():
        if line.startswith("== "):
            current = line[3:]
            out[current] = ""
        else:
            out[current] = out.get(current, "") + line + "\n"
    return out


def test_the_checked_in_document_is_the_generated_one() -> None:
    """schemas/asyncapi.json is exactly what the models render (`lynx-relay schemas`)."""
    assert CHECKED_IN.read_text() == render(asyncapi_document()), "run: uv run lynx-relay schemas"


def test_a_drifted_model_makes_the_document_stale(tmp_path: Path) -> None:
    """A field added to a model shows in the document, and the check reports the file."""
    drifted = create_model("VideoRequest", __base__=VideoRequest, callback_url=(str | None, None))
    document = asyncapi_document(WireModels(request=drifted))
    assert "callback_url" in document["components"]["schemas"]["VideoRequest"]["properties"]
    assert render(document) != CHECKED_IN.read_text()

    write_schemas(tmp_path)
    assert check_schemas(tmp_path) == []
    (tmp_path / FILE_NAME).write_text(render(document))
    assert check_schemas(tmp_path) == [FILE_NAME]


def test_channels_are_the_contract_topics_with_their_variables() -> None:
    """Each channel's address is the contract's default topic, and names its variable."""
    channels = asyncapi_document()["channels"]
    expected = {
        "requests": ("lynx.requests", "RELAY_REQUESTS_TOPIC"),
        "results": ("lynx.results", "RELAY_RESULTS_TOPIC"),
        "deadLetters": ("lynx.requests.dlq", "RELAY_DEAD_LETTER_TOPIC"),
        "ledger": ("lynx.relay.jobs", "RELAY_JOBS_TOPIC"),
        "progress": (None, "RELAY_PROGRESS_TOPIC"),  # off unless set
    }
    assert set(channels) == set(expected)
    for name, (address, variable) in expected.items():
        assert channels[name]["address"] == address
        assert variable in channels[name]["description"]


def test_the_parser_accepts_the_checked_in_document() -> None:
    """The AsyncAPI parser reads the file with no error and no warning."""
    done = _parse(CHECKED_IN)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "valid AsyncAPI 3.0.0: 5 channels, 7 operations, 6 messages (0 warnings)" in done.stdout


def _missing_channel(doc: dict[str, Any]) -> None:
    doc["operations"]["sendResult"]["channel"] = {"$ref": "#/channels/nowhere"}


def _foreign_message(doc: dict[str, Any]) -> None:
    doc["operations"]["sendResult"]["messages"] = [
        {"$ref": "#/channels/requests/messages/videoRequest"}
    ]


def _bad_schema(doc: dict[str, Any]) -> None:
    doc["components"]["schemas"]["Video"]["type"] = "movie"


BREAKAGES: list[tuple[Callable[[dict[str, Any]], None], str]] = [
    (_missing_channel, "'#/channels/nowhere' does not exist"),
    (_foreign_message, "asyncapi3-operation-messages-from-referred-channel"),
    (_bad_schema, "components.schemas.Video.type"),
]


def test_the_parser_rejects_a_broken_copy(tmp_path: Path) -> None:
    """Each broken document fails the check with the parser's own diagnostic (it really
    parses), while the good one beside it passes: one Node start for all four."""
    broken = []
    for i, (breakage, _diagnostic) in enumerate(BREAKAGES):
        doc = copy.deepcopy(json.loads(CHECKED_IN.read_text()))
        breakage(doc)
        path = tmp_path / f"asyncapi-{i}.json"
        path.write_text(json.dumps(doc))
        broken.append(path)
    done = _parse(CHECKED_IN, *broken)
    assert done.returncode == 1, done.stdout + done.stderr
    sections = _sections(done.stdout)
    assert "valid AsyncAPI 3.0.0" in sections[str(CHECKED_IN)]
    for path, (_breakage, diagnostic) in zip(broken, BREAKAGES, strict=True):
        assert "invalid (" in sections[str(path)]
        assert diagnostic in sections[str(path)]


def test_the_message_examples_are_accepted_by_the_models() -> None:
    """The parser does not check examples against payloads, so the models do."""
    messages = asyncapi_document()["components"]["messages"]
    models: dict[str, type[BaseModel]] = {
        "videoRequest": VideoRequest,
        "cancelRequest": CancelRequest,
    }
    for name, model in models.items():
        for example in messages[name]["examples"]:
            model.model_validate_json(json.dumps(example["payload"]))


def test_the_ledger_schema_describes_what_the_codec_writes() -> None:
    """Every kind of entry the ledger codec encodes is valid against the internal schema."""
    schema = asyncapi_document()["components"]["schemas"]["LedgerEntry"]
    validator = jsonschema.Draft7Validator(schema)
    at = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
    source = Source("lynx.requests", 3, 41)
    fal = FalRef("f-1", "https://q/status", "https://q/response", "https://q/cancel")
    entries = [
        LedgerEntry(key="r1", state="intent", source=source, at=at, digest="ab" * 32, units=5.0),
        LedgerEntry(
            key="r1",
            state="submitted",
            source=source,
            at=at,
            fal=fal,
            received_at=at,
            metadata={"tenant": "acme"},
            deadline=at,
            tenant="acme",
        ),
        LedgerEntry(
            key="r1",
            state="finished",
            source=source,
            at=at,
            status="succeeded",
            shape="720p|16:9|81|50",
            run_s=42.5,
            fal_request_id="f-1",
            units=5.0625,
            amount=3.0375,
        ),
        LedgerEntry(key=source.key, state="rejected", source=source, at=at),
    ]
    for entry in entries:
        validator.validate(json.loads(encode_entry(entry, "writer-1")))
