"""The HTTP client for fal keeps to RELAY_FAL_MAX_CONNECTIONS, for both transports.

A local HTTP server counts the connections open at once while 20 calls run concurrently.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest

from service.app import fal_http_client
from service.config import load_settings
from service.errors import SettingsError

CALLS = 20


@dataclass
class LocalServer:
    """Answers every HTTP/1.1 request with 200; notes the most connections open at once.

    With ``hold_until`` set, answers wait until that many connections are open (so a client
    allowed that many must open them all before any call returns). Requests for ``/stream``
    are held open until ``release`` is set (``streams_open`` once ``streams`` of them are)."""

    hold_until: int | None = None
    streams: int = 0
    open_now: int = 0
    peak: int = 0
    held: int = 0
    crowded: asyncio.Event = field(default_factory=asyncio.Event)
    streams_open: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open_now += 1
        self.peak = max(self.peak, self.open_now)
        if self.hold_until is not None and self.open_now >= self.hold_until:
            self.crowded.set()
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                if self.hold_until is not None:
                    await self.crowded.wait()
                if head.startswith(b"GET /stream "):
                    self.held += 1
                    if self.held >= self.streams:
                        self.streams_open.set()
                    await self.release.wait()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.open_now -= 1
            writer.close()


@asynccontextmanager
async def serving(server: LocalServer) -> AsyncIterator[str]:
    listener = await asyncio.start_server(server.serve, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    async with listener:
        yield f"http://127.0.0.1:{port}/"


async def concurrent_calls(url: str, transport: str, max_connections: int | None) -> list[int]:
    s = load_settings(
        {"FAL_KEY": "k", "RELAY_MAX_IN_FLIGHT": "500", "RELAY_FAL_HTTP_TRANSPORT": transport}
        | ({} if max_connections is None else {"RELAY_FAL_MAX_CONNECTIONS": str(max_connections)})
    )
    async with fal_http_client(s) as http:
        responses = await asyncio.gather(*(http.get(url) for _ in range(CALLS)))
    return [r.status_code for r in responses]


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
async def test_calls_share_at_most_the_configured_connections(transport: str) -> None:
    server = LocalServer()
    async with serving(server) as url:
        statuses = await concurrent_calls(url, transport, 3)
    assert statuses == [200] * CALLS
    assert 1 <= server.peak <= 3


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
async def test_the_default_allows_more_than_a_few_connections(transport: str) -> None:
    # The server answers only once 10 connections are open: a client capped below 10 would hang.
    server = LocalServer(hold_until=10)
    async with serving(server) as url:
        statuses = await asyncio.wait_for(concurrent_calls(url, transport, None), 30)
    assert statuses == [200] * CALLS
    assert server.peak >= 10


@pytest.mark.parametrize("value", ["0", "1025", "many"])
def test_a_connection_limit_out_of_range_is_refused(value: str) -> None:
    with pytest.raises(SettingsError, match="RELAY_FAL_MAX_CONNECTIONS"):
        load_settings({"FAL_KEY": "k", "RELAY_FAL_MAX_CONNECTIONS": value})


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
async def test_in_stream_mode_open_streams_leave_room_for_calls(transport: str) -> None:
    in_flight = 6
    server = LocalServer(streams=in_flight)
    s = load_settings(
        {
            "FAL_KEY": "k",
            "RELAY_MAX_IN_FLIGHT": str(in_flight),
            "RELAY_WATCH_MODE": "stream",
            "RELAY_FAL_MAX_CONNECTIONS": "2",
            "RELAY_FAL_HTTP_TRANSPORT": transport,
        }
    )
    async with serving(server) as base, fal_http_client(s) as http:
        streams = [asyncio.create_task(http.get(f"{base}stream")) for _ in range(in_flight)]
        # Every job's stream is open at once, and a submit still gets through.
        await asyncio.wait_for(server.streams_open.wait(), 30)
        submit = await asyncio.wait_for(http.get(f"{base}submit"), 30)
        server.release.set()
        finished = await asyncio.gather(*streams)
    assert submit.status_code == 200
    assert [r.status_code for r in finished] == [200] * in_flight
