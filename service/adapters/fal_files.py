"""fal's output files: reading a video from fal's CDN, and having fal delete a request's
stored files once the relay has its own copy (the Platform API's payloads endpoint).

The CDN is read with a client of its own that carries no ``Authorization`` header: the
video's URL is public, and our fal key goes only to fal's APIs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import quote

import httpx

from service.adapters.fal import json_body
from service.adapters.fal_history import history_error_for
from service.errors import FalResultExpired, FalUnavailable
from service.metrics import RelayMetrics, status_class

# Pieces of 1 MiB: each piece crosses from asyncio into obstore's threads, and 64 KiB pieces
# cost a quarter more CPU per copy (bench/results/storage-clients.md).
_CHUNK = 1_048_576


class _Download:
    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        length = response.headers.get("content-length")
        self.size = int(length) if length and length.isdigit() else None
        self.content_type = response.headers.get("content-type")

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.aiter_bytes(_CHUNK):
                yield chunk
        except httpx.HTTPError as exc:
            raise FalUnavailable(f"fal's CDN dropped the video: {type(exc).__name__}") from None


class FalFiles:
    def __init__(
        self,
        cdn: httpx.AsyncClient,
        api: httpx.AsyncClient,
        *,
        api_url: str,
        metrics: RelayMetrics,
    ) -> None:
        self._cdn = cdn
        self._api = api
        self._api_url = api_url.rstrip("/")
        self._metrics = metrics

    @asynccontextmanager
    async def download(self, url: str) -> AsyncIterator[_Download]:
        try:
            async with self._cdn.stream(
                "GET", url, timeout=httpx.Timeout(60.0, connect=10.0)
            ) as response:
                self._metrics.fal_http.labels("file", status_class(response.status_code)).inc()
                if response.status_code in (404, 410):
                    raise FalResultExpired(f"fal's CDN no longer has {url}")
                if not response.is_success:
                    # 403 from a CDN is an expired or revoked link too often to give up on at
                    # once; the copy's retry window bounds it.
                    raise FalUnavailable(f"fal's CDN answered {response.status_code} for {url}")
                yield _Download(response)
        except httpx.HTTPError as exc:
            self._metrics.fal_http.labels("file", "error").inc()
            raise FalUnavailable(f"no answer from fal's CDN: {type(exc).__name__}") from None

    async def delete_payloads(self, fal_request_id: str) -> None:
        url = f"{self._api_url}/models/requests/{quote(fal_request_id, safe='')}/payloads"
        try:
            response = await self._api.delete(url)
        except httpx.HTTPError as exc:
            self._metrics.fal_http.labels("payloads", "error").inc()
            raise FalUnavailable(
                f"no answer from fal's Platform API: {type(exc).__name__}"
            ) from None
        self._metrics.fal_http.labels("payloads", status_class(response.status_code)).inc()
        if not response.is_success:
            raise history_error_for(
                response.status_code, response.headers, json_body(response), "payloads"
            )
