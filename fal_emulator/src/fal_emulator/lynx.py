"""fal's input schema for Lynx, as the emulator's own copy: what the model app accepts.

The emulator plays fal, so it validates against what fal publishes, never against the relay's
wire model (the relay must not be able to mark its own homework; and this package imports
nothing from ``service``). Where each field, range, enum and default comes from:

- fal's OpenAPI document for the model,
  ``https://fal.ai/api/openapi/queue/openapi.json?endpoint_id=bytedance/lynx`` (schema
  ``LynxInput``), as rendered on fal's model page for ``bytedance/lynx``, its ``llms.txt``
  (``https://fal.ai/models/bytedance/lynx/llms.txt``) and its API page
  (``https://fal.ai/models/bytedance/lynx/api``): the field names, types, ``Default:`` and
  ``Range:``/``Options:`` lines quoted in each field's description below. The older id
  ``fal-ai/lynx`` (``https://fal.ai/models/fal-ai/lynx/api``) takes the same input: fal's JS
  client moved its typed Lynx endpoint to ``bytedance/lynx`` in December 2025 without changing
  the input type.
- ``num_frames``: the schema's range is 9 to 81 (default 81), although its prose says "Must
  be between 9 to 100"; the schema is what the app validates against, so 82-100 is refused here.
- ``seed`` is the only nullable field (``integer | null``, "If None, a random seed is
  chosen"); every other optional field has a default and no ``null`` in its type.
- ``image_url`` is a plain string in the schema; fal accepts an URL or a base64 ``data:`` URI
  ("File inputs accept URLs, Base64 data URIs", same pages). What the app cannot download
  fails when it runs, not in the schema: see ``download_error``.

Validation is lax, as FastAPI's is (``"81"`` is a fine ``num_frames``) and unknown keys are
ignored, as FastAPI ignores them.
"""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field

# The schema's default, quoted from the model page.
DEFAULT_NEGATIVE_PROMPT = (
    "Bright tones, overexposed, blurred background, static, subtitles, style, works, paintings, "
    "images, overall gray, worst quality, low quality, JPEG compression residue, ugly, "
    "incomplete, extra fingers, poorly drawn hands, poorly drawn faces, deformed, disfigured, "
    "misshapen limbs, fused fingers, still picture, messy background, three legs, many people in "
    "the background, walking backwards"
)

Resolution = Literal["480p", "580p", "720p"]
AspectRatio = Literal["16:9", "9:16", "1:1"]

_DATA_URI_RE = re.compile(r"data:image/[A-Za-z0-9.+-]+;base64,[A-Za-z0-9+/=\s]+")


class LynxInput(BaseModel):
    """The body of a Lynx submit, field for field as fal's OpenAPI document gives it."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    image_url: str = Field(
        description="The URL of the subject image to be used for video generation (required)."
    )
    prompt: str = Field(description="Text prompt to guide video generation (required).")
    negative_prompt: str = Field(
        default=DEFAULT_NEGATIVE_PROMPT,
        description="What should not appear in the video. Default: the artefact list above.",
    )
    num_inference_steps: int = Field(
        default=50, ge=1, le=75, description="Inference steps. Default: 50; Range: 1 to 75."
    )
    seed: int | None = Field(
        default=None, description="Random seed; if None, a random seed is chosen."
    )
    resolution: Resolution = Field(
        default="720p", description='Default: "720p"; Options: "480p", "580p", "720p".'
    )
    aspect_ratio: AspectRatio = Field(
        default="16:9", description='Default: "16:9"; Options: "16:9", "9:16", "1:1".'
    )
    ip_scale: float = Field(
        default=1, ge=0, le=2, description="Identity preservation. Default: 1; Range: 0 to 2."
    )
    strength: float = Field(
        default=1, ge=0, le=2, description="Reference image scale. Default: 1; Range: 0 to 2."
    )
    frames_per_second: int = Field(
        default=16, ge=5, le=30, description="Frames per second. Default: 16; Range: 5 to 30."
    )
    guidance_scale: float = Field(
        default=5, ge=1, le=20, description="Prompt guidance scale. Default: 5; Range: 1 to 20."
    )
    guidance_scale_2: float = Field(
        default=2, ge=0, le=10, description="Image guidance scale. Default: 2; Range: 0 to 10."
    )
    num_frames: int = Field(
        default=81, ge=9, le=81, description="Frames to generate. Default: 81; Range: 9 to 81."
    )


def download_error(image_url: str) -> str | None:
    """Why the app could not fetch the subject image, or None when it could.

    A base64 ``data:image/...`` URI needs no download. An http(s) URL is fetched, and fails on
    an RFC 2606 ``.invalid`` host (the tests' way to ask for a download failure) or when it
    names no host; anything else is not something the app can download at all.
    """
    if _DATA_URI_RE.fullmatch(image_url):
        return None
    parts = urlsplit(image_url)
    if parts.scheme not in ("http", "https"):
        return f"Failed to download image from {image_url}: not an http(s) URL or a data URI"
    host = parts.hostname or ""
    if not host:
        return f"Failed to download image from {image_url}: the URL names no host"
    if host == "invalid" or host.endswith(".invalid"):
        return f"Failed to download image from {image_url}: host {host} not found"
    return None
