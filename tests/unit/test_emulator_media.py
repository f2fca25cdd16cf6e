"""The emulator's output video (``fal_emulator.media``) and how it is served: a valid MP4 of the
asked size, the same bytes for the same request id, streamed with its Content-Length without
ever being held whole.

Validity is checked with a small ISO-BMFF box parser here (no ffprobe needed); where ffprobe is
installed, one test also asks it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import struct
import subprocess
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from fal_emulator import EmulatorConfig, config_from_arguments
from fal_emulator.config import MAX_OUTPUT_BYTES, parse_size
from fal_emulator.jobs import parse_directives
from fal_emulator.media import (
    MIN_OUTPUT_SIZE,
    PAGE_SIZE,
    head,
    output_bytes,
    output_chunks,
)
from tests.unit.emulator_support import StartEmulator, body, emulator_fixtures, emulator_parser

start_emulator, fal = emulator_fixtures()

MiB = 1024 * 1024
# Boxes that hold only boxes (after a header of so many bytes, for sample entries and stsd).
CONTAINERS = {b"moov": 0, b"trak": 0, b"mdia": 0, b"minf": 0, b"dinf": 0, b"stbl": 0}
FULL_CONTAINERS = {b"stsd": 8, b"dref": 8}
SAMPLE_ENTRY_HEADER = 78  # VisualSampleEntry fields before its child boxes (avcC)


@dataclass
class Box:
    kind: bytes
    start: int
    size: int
    payload: bytes
    children: list[Box] = field(default_factory=list)

    def find(self, *path: bytes) -> Box:
        box = self
        for kind in path:
            (box,) = [child for child in box.children if child.kind == kind]
        return box


def parse_boxes(data: bytes, start: int = 0, end: int | None = None) -> list[Box]:
    """ISO/IEC 14496-12 boxes in ``data[start:end]``: each size field must fit exactly, so a
    file that parses whole is a well-formed box tree."""
    end = len(data) if end is None else end
    boxes: list[Box] = []
    at = start
    while at < end:
        assert end - at >= 8, f"{end - at} stray bytes at {at}"
        size, kind = struct.unpack_from(">I4s", data, at)
        header = 8
        if size == 1:
            (size,) = struct.unpack_from(">Q", data, at + 8)
            header = 16
        assert size >= header, f"box {kind!r} at {at} has size {size}"
        assert at + size <= end, f"box {kind!r} at {at} overruns its parent"
        payload = data[at + header : at + size]
        box = Box(kind, at, size, payload)
        if kind in CONTAINERS:
            box.children = parse_boxes(data, at + header, at + size)
        elif kind in FULL_CONTAINERS:
            (count,) = struct.unpack_from(">I", payload, 4)
            box.children = parse_boxes(data, at + header + FULL_CONTAINERS[kind], at + size)
            assert len(box.children) == count
        elif kind == b"avc1":
            box.children = parse_boxes(data, at + header + SAMPLE_ENTRY_HEADER, at + size)
        boxes.append(box)
        at += size
    assert at == end
    return boxes


def check_mp4(data: bytes, width: int, height: int) -> Box:
    """``data`` is ftyp, moov, mdat and nothing else, with one video track of ``width`` x
    ``height`` and no samples; answers the mdat box."""
    ftyp, moov, mdat = parse_boxes(data)
    assert (ftyp.kind, moov.kind, mdat.kind) == (b"ftyp", b"moov", b"mdat")
    assert ftyp.payload[:4] == b"isom"
    assert b"mp41" in ftyp.payload[8:]
    root = Box(b"", 0, len(data), data, [ftyp, moov, mdat])
    tkhd = root.find(b"moov", b"trak", b"tkhd").payload
    assert struct.unpack(">II", tkhd[-8:]) == (width << 16, height << 16)
    assert root.find(b"moov", b"trak", b"mdia", b"hdlr").payload[8:12] == b"vide"
    avc1 = root.find(b"moov", b"trak", b"mdia", b"minf", b"stbl", b"stsd", b"avc1")
    assert struct.unpack_from(">HH", avc1.payload, 24) == (width, height)
    assert avc1.find(b"avcC").payload[0] == 1
    stsz = root.find(b"moov", b"trak", b"mdia", b"minf", b"stbl", b"stsz").payload
    assert struct.unpack(">II", stsz[4:]) == (0, 0)  # no samples
    root.find(b"moov", b"mvhd")
    root.find(b"moov", b"trak", b"mdia", b"minf", b"dinf", b"dref", b"url ")
    return mdat


@pytest.mark.parametrize(
    "size", [MIN_OUTPUT_SIZE, MIN_OUTPUT_SIZE + 1, 16 * 1024, 3 * PAGE_SIZE + 17]
)
def test_the_file_is_a_valid_mp4_of_exactly_the_size(size: int) -> None:
    """ftyp + moov + mdat, every box size exact, the padding inside mdat: valid at any size."""
    data = output_bytes("req-1", size, width=480, height=854)
    assert len(data) == size
    mdat = check_mp4(data, 480, 854)
    assert mdat.start + mdat.size == size


def test_past_4_gib_the_mdat_box_has_a_64_bit_size() -> None:
    """A 5 GiB file's mdat says size 1 and carries its real size in 64 bits (checked on the
    head alone: the padding is not made)."""
    size = 5 * 1024**3
    data = head(size)
    moov_end = len(data) - 16
    size32, kind, size64 = struct.unpack_from(">I4sQ", data, moov_end)
    assert (size32, kind) == (1, b"mdat")
    assert moov_end + size64 == size
    assert len(head(MIN_OUTPUT_SIZE)) == MIN_OUTPUT_SIZE


def test_the_bytes_depend_only_on_the_request_id_and_size() -> None:
    """A test can recompute what it downloaded; another request id gives another file, and no
    two pages of a file are alike (a copier that repeats or drops one is caught)."""
    size = 4 * PAGE_SIZE + 1000
    first = output_bytes("req-a", size)
    assert output_bytes("req-a", size) == first
    other = output_bytes("req-b", size)
    assert len(other) == size
    assert other != first
    padding_start = len(head(size))
    pages = [first[at : at + PAGE_SIZE] for at in range(padding_start, size - PAGE_SIZE, PAGE_SIZE)]
    assert len(set(pages)) == len(pages) == 4


def test_chunks_are_pages_and_a_big_file_is_never_held() -> None:
    """``output_chunks`` is lazy: 200 MB pass through with a few pages allocated at most."""
    size = 200 * 1000 * 1000
    tracemalloc.start()
    try:
        total = 0
        largest = 0
        for chunk in output_chunks("req-big", size):
            total += len(chunk)
            largest = max(largest, len(chunk))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == size
    assert largest == PAGE_SIZE
    assert peak < 8 * PAGE_SIZE  # 200 MB went through


def test_sizes_below_a_valid_file_are_refused() -> None:
    with pytest.raises(ValueError, match="at least"):
        output_bytes("req-1", MIN_OUTPUT_SIZE - 1)
    with pytest.raises(ValueError, match="output_bytes"):
        EmulatorConfig(output_bytes=MIN_OUTPUT_SIZE - 1)
    with pytest.raises(ValueError, match="output_bytes"):
        EmulatorConfig(output_bytes=MAX_OUTPUT_BYTES + 1)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("4096", 4096),
        ("256K", 256 * 1024),
        ("100M", 100 * MiB),
        ("100MiB", 100 * MiB),
        ("1g", 1024**3),
    ],
)
def test_output_bytes_on_the_command_line(text: str, size: int) -> None:
    """``--output-bytes`` takes bytes or a binary K/M/G multiple."""
    assert parse_size(text) == size
    args = emulator_parser().parse_args(["--output-bytes", text])
    assert config_from_arguments(args).output_bytes == size


@pytest.mark.parametrize("text", ["", "abc", "-5", "1.5M", "10", "²", "9" * 5000])
def test_unreadable_or_too_small_sizes_are_usage_errors(text: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each message is checked by its own test
        parse_size(text)
    parser = emulator_parser()
    parser.exit_on_error = False
    with pytest.raises(argparse.ArgumentError):
        parser.parse_args(["--output-bytes", text])


def test_a_prompt_can_ask_one_job_for_another_size() -> None:
    """``[emulator:output-bytes=N]``; a size that is unreadable or out of bounds is ignored."""
    assert parse_directives("x [emulator:output-bytes=5000000]").output_bytes == 5_000_000
    for ignored in ("12", "abc", "9" * 40, str(MAX_OUTPUT_BYTES + 1), "1e6"):
        assert parse_directives(f"[emulator:output-bytes={ignored}]").output_bytes is None


# --- served --------------------------------------------------------------------------------


async def finished_video(start: StartEmulator, prompt: str = "", **config: Any) -> dict[str, Any]:
    """The ``video`` of a job that succeeded on a new emulator with ``config``, plus its
    ``request_id``."""
    harness = await start(**config)
    submitted = await harness.submit(body(prompt))
    await harness.completed(submitted)
    result = await harness.client.get(submitted["response_url"])
    video: dict[str, Any] = result.json()["video"]
    video["request_id"] = submitted["request_id"]
    return video


async def test_the_served_file_is_the_recomputable_mp4_of_file_size(
    start_emulator: StartEmulator,
) -> None:
    """GET answers exactly ``output_bytes(request_id, file_size, width, height)`` with that
    Content-Length; HEAD answers the same headers and no body."""
    video = await finished_video(start_emulator)
    assert video["file_size"] == 16 * 1024  # the default
    async with httpx.AsyncClient() as bare:
        got = await bare.get(video["url"])
        headed = await bare.head(video["url"])
    assert got.status_code == 200
    assert got.headers["content-type"] == "video/mp4"
    assert int(got.headers["content-length"]) == video["file_size"]
    assert got.content == output_bytes(
        video["request_id"], video["file_size"], width=video["width"], height=video["height"]
    )
    check_mp4(got.content, video["width"], video["height"])
    assert headed.status_code == 200
    assert int(headed.headers["content-length"]) == video["file_size"]
    assert headed.content == b""


async def test_the_size_follows_the_config_and_the_prompt(start_emulator: StartEmulator) -> None:
    """``output_bytes`` sets every job's file; a prompt's directive sets its own job's."""
    by_config = await finished_video(start_emulator, output_bytes=100_000)
    by_prompt = await finished_video(start_emulator, "[emulator:output-bytes=123457]")
    async with httpx.AsyncClient() as bare:
        for video, size in ((by_config, 100_000), (by_prompt, 123_457)):
            assert video["file_size"] == size
            got = await bare.get(video["url"])
            assert len(got.content) == size
            assert int(got.headers["content-length"]) == size


async def test_a_big_file_is_streamed_not_held(start_emulator: StartEmulator) -> None:
    """32 MiB go from the emulator to a streaming reader in this process with no more than a
    few pages allocated at once, server and client together, and arrive intact."""
    size = 32 * MiB
    video = await finished_video(start_emulator, output_bytes=size)
    expected = hashlib.sha256()
    for chunk in output_chunks(video["request_id"], size):
        expected.update(chunk)
    received = hashlib.sha256()
    count = 0
    tracemalloc.start()
    try:
        async with httpx.AsyncClient() as bare, bare.stream("GET", video["url"]) as response:
            assert int(response.headers["content-length"]) == size
            async for piece in response.aiter_raw():
                received.update(piece)
                count += len(piece)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == size
    assert received.hexdigest() == expected.hexdigest()
    assert peak < 4 * MiB


async def test_deleted_payloads_and_other_names_are_404(start_emulator: StartEmulator) -> None:
    video = await finished_video(start_emulator)
    async with httpx.AsyncClient() as bare:
        other = await bare.get(video["url"].replace("output.mp4", "other.mp4"))
        unknown = await bare.get(video["url"].replace(video["request_id"], "no-such-id"))
    assert (other.status_code, unknown.status_code) == (404, 404)


@pytest.mark.skipif(shutil.which("ffprobe") is None, reason="ffprobe is not installed")
def test_ffprobe_reads_one_h264_video_stream(tmp_path: Path) -> None:
    """Where ffprobe exists, it too reads the file: an MP4 with one H.264 stream of the size."""
    path = tmp_path / "output.mp4"
    path.write_bytes(output_bytes("req-1", 3 * PAGE_SIZE, width=720, height=1280))
    probed = subprocess.run(  # noqa: S603 - fixed arguments
        [
            str(shutil.which("ffprobe")),
            "-v",
            "error",
            "-show_entries",
            "stream=codec_type,codec_name,width,height:format=format_name,size,probe_score",
            "-of",
            "json",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    info = json.loads(probed.stdout)
    assert info["streams"] == [
        {"codec_name": "h264", "codec_type": "video", "width": 720, "height": 1280}
    ]
    assert "mp4" in info["format"]["format_name"]
    assert int(info["format"]["size"]) == 3 * PAGE_SIZE
    assert info["format"]["probe_score"] == 100
