"""The checked-in JSON Schemas are the models' own, and they say what the decoder does."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from service.schemas import check_schemas, schemas

FOLDER = Path(__file__).resolve().parents[2] / "schemas"


def test_checked_in_schemas_match_the_models() -> None:
    assert check_schemas(FOLDER) == [], "run: uv run lynx-relay schemas"


def test_a_drifted_schema_is_reported(tmp_path: Path) -> None:
    (tmp_path / "request.schema.json").write_text("{}\n")
    assert "request.schema.json" in check_schemas(tmp_path)
    assert "result-event.schema.json" in check_schemas(tmp_path)


def _validator(name: str) -> Any:
    schema = json.loads((FOLDER / name).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_the_contract_sample_request_is_valid() -> None:
    sample = {
        "request_id": "order-8841",
        "input": {"image_url": "https://example.com/subject.png", "prompt": "A person carves"},
        "metadata": {"tenant": "acme", "anything": ["echoed", "back"]},
    }
    _validator("request.schema.json").validate(sample)


@pytest.mark.parametrize(
    "bad",
    [
        {"request_id": "x", "input": {"prompt": "p"}},
        {"request_id": "x", "input": {"image_url": "https://a", "prompt": "p", "num_frames": 500}},
        {"request_id": "x", "input": {"image_url": "https://a", "prompt": "p", "extra": 1}},
        {"request_id": "has space", "input": {"image_url": "https://a", "prompt": "p"}},
    ],
)
def test_the_request_schema_refuses_what_the_relay_refuses(bad: dict[str, Any]) -> None:
    assert list(_validator("request.schema.json").iter_errors(bad))


def test_both_schemas_are_generated() -> None:
    assert set(schemas()) == {
        "request.schema.json",
        "cancel.schema.json",
        "result-event.schema.json",
        "progress-event.schema.json",
        "asyncapi.json",  # the topics' AsyncAPI document (tests/unit/test_asyncapi.py)
    }
