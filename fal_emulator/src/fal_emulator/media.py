"""The emulator's output video: a small but valid MP4 of any size, the same bytes every time.

This module owns the bytes behind ``GET /_emulator/files/{request_id}/output.mp4``. The file is
a real ISO Base Media File (ISO/IEC 14496-12), laid out for streaming ("fast start"):

    ftyp                      isom, compatible with iso2/avc1/mp41
    moov
      mvhd                    timescale 1000, duration 0, next track 2
      trak
        tkhd                  track 1, enabled, width x height
        mdia
          mdhd, hdlr (vide)
          minf
            vmhd, dinf/dref (self-contained)
            stbl
              stsd            one avc1 sample entry (width x height) with an empty avcC
              stts, stsc, stsz, stco   no samples
    mdat                      padding up to the requested size (64-bit size past 4 GiB)

The track has no samples: nothing claims to decode, so no encoder is needed and any box parser
(or ``ffprobe``) reads it as a video stream with no frames. The ``mdat`` padding is what makes
the file as large as asked, so a copy of 200 MB can be tested without a real encoder.

Determinism: the bytes depend only on ``(request_id, size, width, height)``. The padding is cut
into pages of ``PAGE_SIZE``; every page is one random block drawn from a generator seeded by the
request id, with its first 16 bytes replaced by a tag (8 bytes of the id's SHA-256, then the page
number): so no two pages of a file are equal (a copier that repeats or drops a page is caught)
and a page costs one copy, not a hash. ``output_chunks`` yields the file page by page and never
holds more than one page; ``output_bytes`` joins them, for tests of small files.
"""

from __future__ import annotations

import hashlib
import random
import struct
from collections.abc import Iterator

PAGE_SIZE = 256 * 1024
DEFAULT_WIDTH = 1280
DEFAULT_HEIGHT = 720
_TAG_SIZE = 16
_MAX_BOX32 = 0xFFFFFFFF
# The identity matrix of mvhd and tkhd: 16.16 fixed point, except w at 2.30.
_MATRIX = struct.pack(">9I", 0x00010000, 0, 0, 0, 0x00010000, 0, 0, 0, 0x40000000)


def _box(kind: bytes, *payload: bytes) -> bytes:
    body = b"".join(payload)
    return struct.pack(">I4s", 8 + len(body), kind) + body


def _full_box(kind: bytes, version: int, flags: int, *payload: bytes) -> bytes:
    return _box(kind, struct.pack(">I", (version << 24) | flags), *payload)


def _fixed16(value: int) -> int:
    return value << 16


def _moov(width: int, height: int) -> bytes:
    mvhd = _full_box(
        b"mvhd",
        0,
        0,
        struct.pack(">IIII", 0, 0, 1000, 0),  # creation, modification, timescale, duration
        struct.pack(">IH10x", 0x00010000, 0x0100),  # rate 1.0, volume 1.0, reserved
        _MATRIX,
        bytes(24),  # pre_defined
        struct.pack(">I", 2),  # next_track_ID
    )
    tkhd = _full_box(
        b"tkhd",
        0,
        0x3,  # enabled, in movie
        struct.pack(">IIIII", 0, 0, 1, 0, 0),  # creation, modification, track_ID, -, duration
        struct.pack(">8xhhH2x", 0, 0, 0),  # reserved, layer, alternate_group, volume (video: 0)
        _MATRIX,
        struct.pack(">II", _fixed16(width), _fixed16(height)),
    )
    mdhd = _full_box(
        b"mdhd",
        0,
        0,
        struct.pack(">IIII", 0, 0, 1000, 0),  # creation, modification, timescale, duration
        struct.pack(">HH", 0x55C4, 0),  # language "und", pre_defined
    )
    hdlr = _full_box(b"hdlr", 0, 0, struct.pack(">I4s12x", 0, b"vide"), b"VideoHandler\x00")
    vmhd = _full_box(b"vmhd", 0, 1, struct.pack(">H6x", 0))  # graphicsmode copy, opcolor
    dinf = _box(b"dinf", _full_box(b"dref", 0, 0, struct.pack(">I", 1), _full_box(b"url ", 0, 1)))
    # AVCDecoderConfigurationRecord: version 1, Baseline profile, level 3.0, 4-byte NAL lengths,
    # no parameter sets (there are no samples to decode).
    avcc = _box(b"avcC", bytes([1, 66, 0, 30, 0xFF, 0xE0, 0x00]))
    avc1 = _box(
        b"avc1",
        struct.pack(">6xH", 1),  # reserved, data_reference_index
        struct.pack(">HH12x", 0, 0),  # pre_defined, reserved, pre_defined
        struct.pack(">HH", width, height),
        struct.pack(">III", 0x00480000, 0x00480000, 0),  # 72 dpi, 72 dpi, reserved
        struct.pack(">H", 1),  # frame_count
        bytes(32),  # compressorname (empty Pascal string)
        struct.pack(">Hh", 0x0018, -1),  # depth, pre_defined
        avcc,
    )
    stbl = _box(
        b"stbl",
        _full_box(b"stsd", 0, 0, struct.pack(">I", 1), avc1),
        _full_box(b"stts", 0, 0, struct.pack(">I", 0)),
        _full_box(b"stsc", 0, 0, struct.pack(">I", 0)),
        _full_box(b"stsz", 0, 0, struct.pack(">II", 0, 0)),
        _full_box(b"stco", 0, 0, struct.pack(">I", 0)),
    )
    minf = _box(b"minf", vmhd, dinf, stbl)
    trak = _box(b"trak", tkhd, _box(b"mdia", mdhd, hdlr, minf))
    return _box(b"moov", mvhd, trak)


_FTYP = _box(b"ftyp", b"isom", struct.pack(">I", 0x200), b"isomiso2avc1mp41")
# ftyp + moov does not depend on the frame size's value, only on its fields' widths.
_HEAD_SIZE = len(_FTYP) + len(_moov(DEFAULT_WIDTH, DEFAULT_HEIGHT))
MIN_OUTPUT_SIZE = _HEAD_SIZE + 8
"""The smallest file: ftyp, moov and an empty mdat."""


def _check(size: int, width: int, height: int) -> None:
    if size < MIN_OUTPUT_SIZE:
        raise ValueError(f"an output file is at least {MIN_OUTPUT_SIZE} bytes, got {size}")
    if not (0 < width <= 0xFFFF and 0 < height <= 0xFFFF):
        raise ValueError(f"width and height must be within 1..65535, got {width}x{height}")


def head(size: int, *, width: int = DEFAULT_WIDTH, height: int = DEFAULT_HEIGHT) -> bytes:
    """Everything before the padding: ftyp, moov and the mdat header of a ``size``-byte file."""
    _check(size, width, height)
    mdat_size = size - _HEAD_SIZE
    if mdat_size <= _MAX_BOX32:
        mdat_header = struct.pack(">I4s", mdat_size, b"mdat")
    else:  # size 1: the real size follows as 64 bits
        mdat_header = struct.pack(">I4sQ", 1, b"mdat", mdat_size)
    return _FTYP + _moov(width, height) + mdat_header


def output_chunks(
    request_id: str, size: int, *, width: int = DEFAULT_WIDTH, height: int = DEFAULT_HEIGHT
) -> Iterator[bytes]:
    """The ``size``-byte file of ``request_id``, in order: the head, then the padding one page
    (``PAGE_SIZE``) at a time, the last one cut short. Holds one page at a time."""
    first = head(size, width=width, height=height)
    yield first
    remaining = size - len(first)
    if remaining == 0:
        return
    digest = hashlib.sha256(request_id.encode()).digest()
    # Seeded by the id, not for secrecy: the padding only has to differ between files and pages.
    tail = random.Random(digest).randbytes(PAGE_SIZE)[_TAG_SIZE:]
    page = 0
    while remaining > 0:
        chunk = digest[:8] + struct.pack(">Q", page) + tail
        if remaining < PAGE_SIZE:
            chunk = chunk[:remaining]
        yield chunk
        remaining -= len(chunk)
        page += 1


def output_bytes(
    request_id: str, size: int, *, width: int = DEFAULT_WIDTH, height: int = DEFAULT_HEIGHT
) -> bytes:
    """The whole file, as ``output_chunks`` streams it (for small files and tests)."""
    return b"".join(output_chunks(request_id, size, width=width, height=height))
