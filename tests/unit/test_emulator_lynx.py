"""The emulator's own copy of fal's Lynx input schema: fal's ranges, enums and defaults, not the
relay's (which still accepts up to 100 frames; the emulator refuses 82-100 as fal's schema does).
"""

from __future__ import annotations

from typing import Any

import pytest

from fal_emulator.jobs import validate_input
from fal_emulator.lynx import DEFAULT_NEGATIVE_PROMPT, LynxInput
from tests.unit.emulator_support import BODY, body


def refusal(fields: dict[str, Any]) -> tuple[list[str | int], str]:
    """The one ``detail`` entry a body with ``fields`` gets: its ``loc`` and ``type``."""
    model, errors = validate_input(body(**fields))
    assert model is None
    (entry,) = errors
    return entry["loc"], entry["type"]


def test_fal_defaults_apply_to_fields_left_out() -> None:
    """A body with only the two required fields gets every default fal's schema gives."""
    model, errors = validate_input(BODY)
    assert errors == []
    assert model == LynxInput(image_url=BODY["image_url"], prompt=BODY["prompt"])
    assert model.model_dump(exclude={"image_url", "prompt"}) == {
        "negative_prompt": DEFAULT_NEGATIVE_PROMPT,
        "num_inference_steps": 50,
        "seed": None,
        "resolution": "720p",
        "aspect_ratio": "16:9",
        "ip_scale": 1,
        "strength": 1,
        "frames_per_second": 16,
        "guidance_scale": 5,
        "guidance_scale_2": 2,
        "num_frames": 81,
    }


@pytest.mark.parametrize(
    ("field", "lowest", "highest", "step"),
    [
        ("num_frames", 9, 81, 1),
        ("num_inference_steps", 1, 75, 1),
        ("frames_per_second", 5, 30, 1),
        ("ip_scale", 0, 2, 0.01),
        ("strength", 0, 2, 0.01),
        ("guidance_scale", 1, 20, 0.01),
        ("guidance_scale_2", 0, 10, 0.01),
    ],
)
def test_ranges_are_fals_inclusive_bounds(
    field: str, lowest: float, highest: float, step: float
) -> None:
    """Each bound is accepted; one step beyond it is a 422 naming the field."""
    for value in (lowest, highest):
        fields: dict[str, Any] = {field: value}
        model, errors = validate_input(body(**fields))
        assert errors == []
        assert getattr(model, field) == value
    assert refusal({field: lowest - step}) == (["body", field], "greater_than_equal")
    assert refusal({field: highest + step}) == (["body", field], "less_than_equal")


@pytest.mark.parametrize("frames", [82, 90, 100])
def test_num_frames_above_81_is_refused_as_fals_schema_does(frames: int) -> None:
    """fal's prose says "9 to 100" but its schema says 9-81; the emulator follows the schema."""
    assert refusal({"num_frames": frames}) == (["body", "num_frames"], "less_than_equal")


@pytest.mark.parametrize(
    ("field", "value"),
    [("resolution", "1080p"), ("aspect_ratio", "4:3"), ("resolution", None)],
)
def test_enums_take_only_fals_options(field: str, value: object) -> None:
    """Only the listed options; ``null`` is not one (only ``seed`` is nullable)."""
    loc, _ = refusal({field: value})
    assert loc == ["body", field]


def test_seed_may_be_null_and_validation_is_lax_like_fastapi() -> None:
    """``seed: null`` means a random seed; ``"48"`` is a fine number; unknown keys are ignored."""
    model, errors = validate_input(body(seed=None, num_frames="48", not_a_lynx_field=True))
    assert errors == []
    assert model is not None
    assert (model.seed, model.num_frames) == (None, 48)


@pytest.mark.parametrize("missing", ["image_url", "prompt"])
def test_required_fields(missing: str) -> None:
    model, errors = validate_input({k: v for k, v in BODY.items() if k != missing})
    assert model is None
    assert errors == [{"loc": ["body", missing], "msg": "Field required", "type": "missing"}]


@pytest.mark.parametrize(
    ("image_url", "refused"),
    [
        ("https://images.example.com/subject.png", False),
        ("http://images.example.com/subject.png", False),
        ("data:image/png;base64,iVBORw0KGgo=", False),
        ("https://subjects.example.invalid/face.png", True),
        ("ftp://images.example.com/subject.png", True),
        ("not a url", True),
        ("https:///no-host.png", True),
    ],
)
def test_an_image_the_app_cannot_download_fails_like_its_download(
    image_url: str, refused: bool
) -> None:
    """The schema takes any string; what the app cannot fetch is its ``file_download_error``."""
    model, errors = validate_input(body(image_url=image_url))
    if not refused:
        assert (model is not None, errors) == (True, [])
        return
    assert model is None
    (entry,) = errors
    assert (entry["loc"], entry["type"]) == (["body", "image_url"], "file_download_error")
    assert entry["msg"].startswith(f"Failed to download image from {image_url}")
