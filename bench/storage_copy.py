"""One worker of ``storage_clients.py``: copy videos from their URLs into S3 with one client, at
once, in this process alone, and print what it cost as one JSON line.

Run by ``storage_clients.py`` only, one fresh process per measurement, so that RSS is never
shared between clients or runs. It imports only what its client needs (the other client's
modules would count in its baseline). The order: imports, the client, a warm-up (one HEAD of the
first URL and one tiny PUT: connections and lazy set-up), then the peak-RSS mark is reset
(``/proc/self/clear_refs``) and VmRSS read as the baseline; CPU (``time.process_time()``: user +
system, every thread) and wall time are taken around the copies alone.

Clients (``--client``):

- ``httpx``: the download alone, discarded (the part of every figure that is not S3);
- ``obstore``: ``obstore.put_async(S3Store, key, response.aiter_raw(), ...)``, a multipart
  upload of ``chunk_size`` parts (default 5 MiB) with up to ``max_concurrency`` (default 12) in
  flight; ``unsigned_payload`` 1 sends ``UNSIGNED-PAYLOAD`` instead of each part's SHA-256;
  ``piece_size`` N hands obstore the download in pieces of N bytes (httpx ``aiter_bytes(N)``)
  instead of the socket reads as they come (``aiter_raw()``, up to 64 KiB);
- ``obstore-http``: obstore fetches the URL itself (``HTTPStore``) and streams its chunks into
  ``put_async``: Rust end to end;
- ``aiobotocore``: create_multipart_upload / upload_part / complete with ``part_size`` parts
  (default 8 MiB), one part in flight, checksums only when required (S3Proxy 2.6.0 refuses the
  SDK's default flexible checksums with 501 NotImplemented);
- ``aiobotocore-stream``: one PutObject whose body is the download itself (``ContentLength``
  from the source, ``UNSIGNED-PAYLOAD``: ``payload_signing_enabled=False``), so nothing is
  buffered beyond a socket read; botocore only accepts bytes or a file-like body, so the stream
  is wrapped in an object with ``read`` (never called) and ``__aiter__`` (which aiohttp streams).
  S3 takes up to 5 GB in one PUT; a failed PUT starts again from the first byte.

``options`` may also hold ``max_copies``: at most that many copies run at once, the others wait
(a budget on buffered parts, for the RSS bound).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef

MiB = 1024 * 1024
IDENTITY = "lynx-local"
CREDENTIAL = "lynx-local-secret"
REGION = "us-east-1"
AIOBOTOCORE_PART = 8 * MiB
OBSTORE_CHUNK = 5 * MiB
OBSTORE_IN_FLIGHT = 12  # obstore's default max_concurrency

Copy = Callable[[str, str], Awaitable[int]]
WarmUp = Callable[[], Awaitable[None]]


def status_kib(field: str) -> int:
    """A ``/proc/self/status`` figure (VmRSS, VmHWM) in KiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux 4.0+); False where that is not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
    except OSError:
        return False
    return True


async def run(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, int] = json.loads(args.options)
    max_copies = options.pop("max_copies", len(args.url))
    urls: list[str] = args.url
    keys = [f"{args.prefix}/{index}.mp4" for index in range(len(urls))]
    async with contextlib.AsyncExitStack() as stack:
        http = await stack.enter_async_context(httpx.AsyncClient(timeout=600.0))
        copy, warm_up = await make_client(args.client, options, args, stack, http)
        (await http.head(urls[0])).raise_for_status()
        await warm_up()
        reset = reset_peak_rss()
        baseline = status_kib("VmRSS")
        cpu0, wall0 = time.process_time(), time.perf_counter()
        limit = asyncio.Semaphore(max_copies)

        async def limited(url: str, key: str) -> int:
            async with limit:
                return await copy(url, key)

        sizes = await asyncio.gather(
            *(limited(url, key) for url, key in zip(urls, keys, strict=True))
        )
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        after = status_kib("VmRSS")
        peak = status_kib("VmHWM")
        # obstore 0.12.1 given a Python (async) iterator: a Tokio thread still calls into the
        # event loop just after put_async returns; if the interpreter is finalizing by then,
        # that thread's GIL take ends in pthread_exit through Rust frames and the process
        # aborts (SIGABRT, exit 134) after its work is done. A moment's grace avoids it.
        await asyncio.sleep(0.2)
    return {
        "client": args.client,
        "copies": len(urls),
        "bytes": sum(sizes),
        "cpu_s": cpu,
        "wall_s": wall,
        "baseline_kib": baseline,
        "peak_growth_kib": peak - baseline if reset else None,
        "retained_growth_kib": after - baseline,
        "max_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "keys": keys,
    }


async def make_client(
    client: str,
    options: dict[str, int],
    args: argparse.Namespace,
    stack: contextlib.AsyncExitStack,
    http: httpx.AsyncClient,
) -> tuple[Copy, WarmUp]:
    """``(copy(url, key) -> bytes copied, warm_up())`` for ``client``."""
    if client == "httpx":
        return download_only(http)
    if client in ("obstore", "obstore-http"):
        return obstore_client(client, options, args, http)
    if client == "aiobotocore":
        return await aiobotocore_client(options, args, stack, http)
    if client == "aiobotocore-stream":
        return await aiobotocore_stream_client(args, stack, http)
    raise ValueError(f"unknown client {client!r}")


def download_only(http: httpx.AsyncClient) -> tuple[Copy, WarmUp]:
    async def download(url: str, _key: str) -> int:
        count = 0
        async with http.stream("GET", url) as response:
            response.raise_for_status()
            async for piece in response.aiter_raw():
                count += len(piece)
        return count

    async def nothing() -> None:
        return None

    return download, nothing


def obstore_client(
    client: str, options: dict[str, int], args: argparse.Namespace, http: httpx.AsyncClient
) -> tuple[Copy, WarmUp]:
    # Imported here: a worker of another client must not carry obstore in its baseline.
    import obstore  # noqa: PLC0415
    from obstore.store import HTTPStore, S3Store  # noqa: PLC0415

    chunk_size = options.get("chunk_size", OBSTORE_CHUNK)
    in_flight = options.get("max_concurrency", OBSTORE_IN_FLIGHT)
    piece_size = options.get("piece_size", 0)
    store = S3Store(
        args.bucket,
        endpoint=args.endpoint,
        access_key_id=IDENTITY,
        secret_access_key=CREDENTIAL,
        region=REGION,
        client_options={"allow_http": True},
        # Not the default: the SHA-256 of each part is left out of the signature.
        unsigned_payload=bool(options.get("unsigned_payload", 0)),
    )

    async def from_http_store(url: str, key: str) -> int:
        base, _, name = url.rpartition("/")
        # object_store's default timeout (30 s) covers the whole response body: far too short
        # for a big file on a slow link.
        source = HTTPStore(base, client_options={"allow_http": True, "timeout": "600s"})
        got = await obstore.get_async(source, name)
        chunks = got.stream(min_chunk_size=chunk_size)
        await obstore.put_async(
            store, key, chunks, chunk_size=chunk_size, max_concurrency=in_flight
        )
        return int(got.meta["size"])

    async def from_httpx(url: str, key: str) -> int:
        count = 0

        async def counted(raw: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
            nonlocal count
            async for piece in raw:
                count += len(piece)
                yield piece

        async with http.stream("GET", url) as response:
            response.raise_for_status()
            # Each piece crosses from asyncio into obstore's Tokio threads (a thread hand-off
            # and an event-loop wake-up): bigger pieces, fewer crossings.
            pieces = response.aiter_bytes(piece_size) if piece_size else response.aiter_raw()
            await obstore.put_async(
                store,
                key,
                counted(pieces),
                chunk_size=chunk_size,
                max_concurrency=in_flight,
            )
        return count

    async def warm_up() -> None:
        await obstore.put_async(store, f"{args.prefix}/warm-up", b"x")

    return (from_http_store if client == "obstore-http" else from_httpx), warm_up


async def aiobotocore_client(
    options: dict[str, int],
    args: argparse.Namespace,
    stack: contextlib.AsyncExitStack,
    http: httpx.AsyncClient,
) -> tuple[Copy, WarmUp]:
    # Imported here: a worker of another client must not carry botocore in its baseline.
    from aiobotocore.config import AioConfig  # noqa: PLC0415
    from aiobotocore.session import get_session  # noqa: PLC0415

    s3 = await stack.enter_async_context(
        get_session().create_client(
            "s3",
            endpoint_url=args.endpoint,
            region_name=REGION,
            aws_access_key_id=IDENTITY,
            aws_secret_access_key=CREDENTIAL,
            config=AioConfig(
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                s3={"addressing_style": "path"},
                max_pool_connections=max(10, len(args.url)),
            ),
        )
    )
    part_size = options.get("part_size", AIOBOTOCORE_PART)

    async def copy(url: str, key: str) -> int:
        upload = await s3.create_multipart_upload(
            Bucket=args.bucket, Key=key, ContentType="video/mp4"
        )
        upload_id = upload["UploadId"]
        parts: list[CompletedPartTypeDef] = []
        count = 0

        async def send(pieces: list[bytes]) -> None:
            number = len(parts) + 1
            body = b"".join(pieces)
            pieces.clear()
            done = await s3.upload_part(
                Bucket=args.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body
            )
            parts.append({"ETag": done["ETag"], "PartNumber": number})

        try:
            pieces: list[bytes] = []
            held = 0
            async with http.stream("GET", url) as response:
                response.raise_for_status()
                async for piece in response.aiter_raw():
                    count += len(piece)
                    rest = piece
                    while held + len(rest) >= part_size:  # a part is full: send it
                        room = part_size - held
                        pieces.append(rest[:room])
                        await send(pieces)
                        rest, held = rest[room:], 0
                    if rest:
                        pieces.append(rest)
                        held += len(rest)
            if pieces or not parts:
                await send(pieces)
            await s3.complete_multipart_upload(
                Bucket=args.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException:
            await s3.abort_multipart_upload(Bucket=args.bucket, Key=key, UploadId=upload_id)
            raise
        return count

    async def warm_up() -> None:
        await s3.put_object(Bucket=args.bucket, Key=f"{args.prefix}/warm-up", Body=b"x")

    return copy, warm_up


class StreamedBody:
    """A download as a PutObject body: botocore's validation wants bytes or something with
    ``read``; aiohttp (under aiobotocore) streams anything with ``__aiter__``."""

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks

    def read(self, *_args: object) -> bytes:
        raise RuntimeError("a streamed body cannot be read again (no retry of a streamed PUT)")

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks


async def aiobotocore_stream_client(
    args: argparse.Namespace, stack: contextlib.AsyncExitStack, http: httpx.AsyncClient
) -> tuple[Copy, WarmUp]:
    from aiobotocore.config import AioConfig  # noqa: PLC0415
    from aiobotocore.session import get_session  # noqa: PLC0415

    s3 = await stack.enter_async_context(
        get_session().create_client(
            "s3",
            endpoint_url=args.endpoint,
            region_name=REGION,
            aws_access_key_id=IDENTITY,
            aws_secret_access_key=CREDENTIAL,
            config=AioConfig(
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                s3={"addressing_style": "path", "payload_signing_enabled": False},
                max_pool_connections=max(10, len(args.url)),
                retries={"max_attempts": 1},  # a streamed body cannot be sent twice
            ),
        )
    )

    async def copy(url: str, key: str) -> int:
        count = 0

        async def counted(raw: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
            nonlocal count
            async for piece in raw:
                count += len(piece)
                yield piece

        async with http.stream("GET", url) as response:
            response.raise_for_status()
            await s3.put_object(
                Bucket=args.bucket,
                Key=key,
                Body=StreamedBody(counted(response.aiter_raw())),  # type: ignore[arg-type]
                ContentLength=int(response.headers["content-length"]),
                ContentType="video/mp4",
            )
        return count

    async def warm_up() -> None:
        await s3.put_object(Bucket=args.bucket, Key=f"{args.prefix}/warm-up", Body=b"x")

    return copy, warm_up


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--client", required=True, help="httpx, obstore, obstore-http, aiobotocore")
    parser.add_argument("--options", default="{}", help="JSON: the client's keyword options")
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--prefix", required=True, help="keys are PREFIX/<n>.mp4")
    parser.add_argument("--url", action="append", required=True, help="a video URL (repeat)")
    print(json.dumps(asyncio.run(run(parser.parse_args(argv)))))


if __name__ == "__main__":
    main()
