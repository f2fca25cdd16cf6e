"""Copying a video to the output store, the decisions without the I/O: where it goes (the
key template), whether a copy is what fal served (size and checksums), and whether a failed
copy is tried again.

A copy is verified three ways: the bytes read equal the length fal's CDN announced (and the
``file_size`` fal's result named); the object the store holds has that size; and its entity
tag, when the store computes it the S3 way, is the MD5 of the bytes (one part) or the MD5 of
the parts' MD5s with the part count (multipart). A store whose tags are neither (SSE-KMS,
some S3-compatible servers) is checked by size only; the SHA-256 of the bytes goes into the
result event either way, for whoever reads the object later.
"""

from __future__ import annotations

import hashlib
import string
from dataclasses import dataclass, field
from datetime import datetime

KEY_FIELDS = frozenset({"tenant", "request_id", "fal_request_id", "date"})


def template_problems(template: str) -> str | None:
    """Why a key template is unusable, or None. Fields: ``{tenant}``, ``{request_id}``,
    ``{fal_request_id}``, ``{date}`` (YYYY-MM-DD, UTC); ``{request_id}`` is required, or two
    requests would write one object."""
    try:
        names = {name for _text, name, _spec, _conv in string.Formatter().parse(template) if name}
    except ValueError as exc:
        return f"not a template: {exc}"
    unknown = names - KEY_FIELDS
    if unknown:
        return f"unknown field(s) {sorted(unknown)}; use {sorted(KEY_FIELDS)}"
    if "request_id" not in names:
        return "must contain {request_id} (each request needs its own object)"
    if template.startswith("/"):
        return "must not start with /"
    return None


def object_key(
    prefix: str, template: str, *, tenant: str, request_id: str, fal_request_id: str, day: datetime
) -> str:
    """The object's key: the prefix of RELAY_OUTPUT_URL, then the template filled in. Request
    ids may hold ``/`` and ``:``; they are kept (S3 keys take them), ``..`` is not made."""
    key = template.format(
        tenant=tenant,
        request_id=request_id,
        fal_request_id=fal_request_id,
        date=day.strftime("%Y-%m-%d"),
    )
    parts = [p for p in key.split("/") if p not in ("", ".", "..")]
    return "/".join([p for p in prefix.split("/") if p] + parts)


@dataclass
class CopyCheck:
    """The running size and checksums of the bytes of one copy, as they pass."""

    part_size: int
    # The whole object's MD5: the ETag of a single PUT. A store that always uploads in parts
    # never needs it, and it is a third of the hashing (bench/results/output-relay.md).
    whole_md5: bool = True
    size: int = 0
    _sha256: hashlib._Hash = field(default_factory=hashlib.sha256)
    _md5: hashlib._Hash = field(default_factory=hashlib.md5)
    _part: hashlib._Hash = field(default_factory=hashlib.md5)
    _part_fill: int = 0
    _part_digests: list[bytes] = field(default_factory=list)

    def feed(self, chunk: bytes) -> None:
        self.size += len(chunk)
        self._sha256.update(chunk)
        if self.whole_md5:
            self._md5.update(chunk)
        view = memoryview(chunk)
        while view:
            take = min(len(view), self.part_size - self._part_fill)
            self._part.update(view[:take])
            self._part_fill += take
            view = view[take:]
            if self._part_fill == self.part_size:
                self._part_digests.append(self._part.digest())
                self._part, self._part_fill = hashlib.md5(), 0  # noqa: S324 - S3's ETag is MD5

    @property
    def sha256(self) -> str:
        return self._sha256.hexdigest()

    def etags(self) -> frozenset[str]:
        """The entity tags an S3-style store gives these bytes: multipart, and one PUT's."""
        digests = list(self._part_digests)
        if self._part_fill or not digests:
            digests.append(self._part.digest())
        multipart = hashlib.md5(b"".join(digests)).hexdigest()  # noqa: S324
        tags = {f"{multipart}-{len(digests)}"}
        if self.whole_md5:
            tags.add(self._md5.hexdigest())
        return frozenset(tags)

    def problems(
        self, announced: int | None, fal_file_size: int | None, stored_size: int | None
    ) -> list[str]:
        """What does not match; empty when the copy is whole."""
        out = []
        if announced is not None and self.size != announced:
            out.append(f"read {self.size} bytes, fal's CDN announced {announced}")
        if fal_file_size is not None and self.size != fal_file_size:
            out.append(f"read {self.size} bytes, fal's result says file_size {fal_file_size}")
        if stored_size is None:
            out.append("the store has no such object after the upload")
        elif stored_size != self.size:
            out.append(f"the store holds {stored_size} bytes, {self.size} were sent")
        return out

    def etag_problem(self, etag: str | None) -> str | None:
        """A checksum mismatch, if the tag is an S3-style one (32 hex digits, maybe ``-N``)."""
        if etag is None or not _s3_style(etag):
            return None
        if etag.lower() in self.etags():
            return None
        return f"the store's checksum (ETag {etag}) is not that of the bytes sent"


def _s3_style(etag: str) -> bool:
    digest, _, parts = etag.partition("-")
    return (
        len(digest) == 32
        and all(c in string.hexdigits for c in digest)
        and (parts == "" or parts.isdigit())
    )


def retry_delay(
    *, retryable: bool, elapsed_s: float, delay_s: float, window_s: float
) -> float | None:
    """How long to wait before the next attempt of a failed copy, or None to give up: a copy
    is tried again while the error may pass and the wait still ends inside the window."""
    if not retryable or elapsed_s + delay_s > window_s:
        return None
    return delay_s
