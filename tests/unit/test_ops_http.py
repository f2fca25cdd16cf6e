"""``/metrics`` on the ops port: the relay's own registry, in the format and encoding the scraper
asks for (prometheus_client's aiohttp handler).

A real ``OpsServer`` on a free loopback port, read with an aiohttp client that leaves the body as
sent (no automatic decompression), so the test sees the bytes a scraper gets.
"""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator

import aiohttp
import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from service.adapters.ops_http import OpsServer
from service.metrics import RelayMetrics

SUBMISSIONS = "lynx_relay_fal_submissions"


@pytest.fixture
async def metrics_url() -> AsyncIterator[str]:
    """The relay's metrics with three paid submissions counted, served by a started OpsServer."""
    metrics = RelayMetrics()
    metrics.fal_submissions.inc(3)
    server = OpsServer(metrics.registry, is_live=lambda: True, is_ready=lambda: True)
    await server.start("127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.port}/metrics"
    finally:
        await server.stop()


async def scrape(url: str, headers: dict[str, str]) -> tuple[aiohttp.ClientResponse, bytes]:
    # skip_auto_headers: aiohttp would add Accept-Encoding itself; the test sends its own or none.
    async with (
        aiohttp.ClientSession(auto_decompress=False) as session,
        session.get(url, headers=headers, skip_auto_headers={"Accept-Encoding"}) as response,
    ):
        return response, await response.read()


def submissions(families: dict[str, float]) -> float | None:
    return families.get(f"{SUBMISSIONS}_total")


def samples(text: str, *, openmetrics: bool = False) -> dict[str, float]:
    parse = openmetrics_families if openmetrics else text_string_to_metric_families
    return {s.name: s.value for family in parse(text) for s in family.samples if not s.labels}


async def test_a_plain_scrape_gets_the_text_format(metrics_url: str) -> None:
    """No Accept, no Accept-Encoding: Prometheus's text format, uncompressed, with the
    relay's own metrics in it."""
    response, body = await scrape(metrics_url, {})
    assert response.status == 200
    assert response.content_type == "text/plain"
    assert "Content-Encoding" not in response.headers
    text = body.decode()
    assert not text.rstrip().endswith("# EOF")
    assert submissions(samples(text)) == 3.0


async def test_a_scraper_that_asks_for_openmetrics_gets_it(metrics_url: str) -> None:
    """``Accept: application/openmetrics-text`` (what Prometheus sends first) gets OpenMetrics:
    its content type, its ``# EOF`` terminator, and a body the OpenMetrics parser accepts
    whole (every metric of the registry is valid OpenMetrics)."""
    response, body = await scrape(
        metrics_url, {"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert response.status == 200
    assert response.content_type == "application/openmetrics-text"
    text = body.decode()
    assert text.endswith("# EOF\n")
    assert submissions(samples(text, openmetrics=True)) == 3.0


async def test_a_scraper_that_accepts_gzip_gets_gzip(metrics_url: str) -> None:
    """``Accept-Encoding: gzip``: the body is gzip that decompresses to the metrics."""
    response, body = await scrape(metrics_url, {"Accept-Encoding": "gzip"})
    assert response.status == 200
    assert response.headers["Content-Encoding"] == "gzip"
    assert body[:2] == b"\x1f\x8b"  # gzip's magic number: compressed on the wire
    assert submissions(samples(gzip.decompress(body).decode())) == 3.0
