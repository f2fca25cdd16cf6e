"""Keeping a finished job's video in the user's object storage (RELAY_OUTPUT_URL) before its
result is published: streamed from fal's CDN to the store, verified, retried with backoff.

The copy happens while the job's ledger entry still says ``submitted``; only the result
(with the stored URL) and the ``finished`` entry end it. A replica that dies during a copy
leaves the job to be resumed: the next owner finds it COMPLETED at fal, fetches its result
and copies again (the same key, overwritten whole); the job is never submitted again.
After the retry window the request fails with ``storage_failed`` (retryable, fal's URL in its
details) or, by setting, keeps fal's URL.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from service.core import outcomes
from service.core.backoff import Backoff
from service.core.outcomes import Outcome
from service.core.storage import CopyCheck, object_key, retry_delay
from service.errors import FalError, FalResultExpired, StorageError
from service.ports import OutputStore, VideoFiles
from service.relay.context import JobContext
from service.relay.tools import Tools


@dataclass(frozen=True, slots=True)
class KeepConfig:
    prefix: str = ""
    key_template: str = "{tenant}/{request_id}.mp4"
    event_url: Literal["object", "presigned"] = "object"
    presign_ttl_s: int = 7 * 86_400
    max_copies: int = 4
    retry_window_s: float = 600.0
    retry_backoff: tuple[float, float] = (1.0, 30.0)
    on_failure: Literal["fail", "fal_url"] = "fail"
    delete_at_fal: bool = False


class VideoKeeper:
    def __init__(
        self, tools: Tools, *, files: VideoFiles, store: OutputStore, config: KeepConfig
    ) -> None:
        self._files = files
        self._store = store
        self._config = config
        self._copies = asyncio.Semaphore(config.max_copies)
        self._clock = tools.clock
        self._metrics = tools.metrics

    async def keep(self, ctx: JobContext, fal_request_id: str, outcome: Outcome) -> Outcome:
        """The outcome with the video stored; a failed outcome when it could not be."""
        assert outcome.video is not None
        video = outcome.video
        fal_url = str(video["url"])
        key = object_key(
            self._config.prefix,
            self._config.key_template,
            tenant=ctx.tenant,
            request_id=ctx.request_id,
            fal_request_id=fal_request_id,
            day=self._clock.now(),
        )
        log = ctx.log.bind(object_key=key)
        started = self._clock.monotonic()
        backoff = Backoff(*self._config.retry_backoff)
        while True:
            try:
                async with self._copies:
                    self._metrics.output_copies_running.inc()
                    try:
                        check = await self._copy(fal_url, key, video)
                    finally:
                        self._metrics.output_copies_running.dec()
                break
            except FalResultExpired as exc:
                # fal no longer has the file. If our copy is in the store already (made and
                # verified before a crash, then fal's copies deleted), it is the result.
                found = await self._found_stored(key, video)
                if found is None:
                    return self._gave_up(log, outcome, fal_url, key, exc)
                log.info("output_found_stored", bytes=found)
                return replace(outcome, video=await self._stored_video(video, key, found, None))
            except (StorageError, FalError) as exc:
                elapsed = self._clock.monotonic() - started
                delay = retry_delay(
                    retryable=exc.retryable,
                    elapsed_s=elapsed,
                    delay_s=backoff.next(),
                    window_s=self._config.retry_window_s,
                )
                if delay is None:
                    return self._gave_up(log, outcome, fal_url, key, exc)
                self._metrics.output_copies.labels("retried").inc()
                log.warning("output_copy_failed", error=exc.message, retry_in_s=round(delay, 2))
                await self._clock.sleep(delay)
        self._metrics.output_copies.labels("stored").inc()
        self._metrics.output_bytes.inc(check.size)
        self._metrics.output_copy_seconds.observe(self._clock.monotonic() - started)
        log.info("output_stored", bytes=check.size, sha256=check.sha256)
        if self._config.delete_at_fal:
            await self._delete_at_fal(log, fal_request_id)
        return replace(
            outcome, video=await self._stored_video(video, key, check.size, check.sha256)
        )

    async def _copy(self, url: str, key: str, video: Mapping[str, Any]) -> CopyCheck:
        check = CopyCheck(self._store.part_size, whole_md5=not self._store.multipart)
        dropped: list[FalError] = []
        async with self._files.download(url) as download:

            async def counted() -> AsyncIterator[bytes]:
                try:
                    async for chunk in download.chunks():
                        check.feed(chunk)
                        yield chunk
                except FalError as exc:
                    dropped.append(exc)  # the store only sees its stream fail
                    raise

            content_type = download.content_type or video.get("content_type")
            try:
                put = await self._store.put(key, counted(), str(content_type or "video/mp4"))
            except StorageError:
                if dropped:  # fal's side failed, not the store: say so (and retry as fal's)
                    raise dropped[0] from None
                raise
        stored = await self._store.head(key)
        size = video.get("file_size")
        problems = check.problems(
            download.size,
            size if isinstance(size, int) else None,
            stored.size if stored is not None else None,
        )
        etag_problem = check.etag_problem(stored.etag if stored and stored.etag else put.etag)
        if etag_problem:
            problems.append(etag_problem)
        if problems:
            raise StorageError(f"the copy of {url} to {key} did not verify: {'; '.join(problems)}")
        return check

    async def _found_stored(self, key: str, video: Mapping[str, Any]) -> int | None:
        """The size of an earlier copy in the store that fits what fal said, or None."""
        try:
            stored = await self._store.head(key)
        except StorageError:
            return None
        expected = video.get("file_size")
        if stored is None or (isinstance(expected, int) and stored.size != expected):
            return None
        return stored.size

    async def _stored_video(
        self, video: Mapping[str, Any], key: str, size: int, sha256: str | None
    ) -> dict[str, Any]:
        url = (
            await self._store.presigned(key, self._config.presign_ttl_s)
            if self._config.event_url == "presigned"
            else self._store.url_for(key)
        )
        return {
            **video,
            "url": url,
            "fal_url": video["url"],
            "file_size": size,
            "sha256": sha256,
        }

    def _gave_up(
        self, log: Any, outcome: Outcome, fal_url: str, key: str, exc: StorageError | FalError
    ) -> Outcome:
        if self._config.on_failure == "fal_url":
            self._metrics.output_copies.labels("kept_fal_url").inc()
            log.warning("output_copy_given_up_fal_url_kept", error=exc.message)
            return outcome
        self._metrics.output_copies.labels("failed").inc()
        log.error("output_copy_given_up", error=exc.message)
        return outcomes.failed(
            "storage_failed",
            f"the video could not be copied to output storage: {exc.message}",
            # Retryable: the video is at fal (details.fal_url) until its files expire.
            retryable=True,
            details={"fal_url": fal_url, "object_key": key},
            billed_units=outcome.billed_units,
        )

    async def _delete_at_fal(self, log: Any, fal_request_id: str) -> None:
        # Best effort: the copy is verified and the result goes out either way; fal deletes
        # its copies by their lifetime (RELAY_FAL_OUTPUT_TTL_S) anyway.
        try:
            await self._files.delete_payloads(fal_request_id)
        except FalError as exc:
            self._metrics.fal_payload_deletes.labels("failed").inc()
            log.warning("fal_payloads_delete_failed", error=exc.message)
        else:
            self._metrics.fal_payload_deletes.labels("deleted").inc()
