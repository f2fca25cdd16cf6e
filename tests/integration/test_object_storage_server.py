"""The test object store itself (scripts/s3proxy through the ``s3_endpoint`` fixture): what the
output-storage tests rely on, checked once against the real server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import obstore
import pytest
from botocore.exceptions import ClientError
from obstore.store import S3Store

from tests.object_storage import S3Server

MiB = 1024 * 1024


def store_for(server: S3Server, bucket: str) -> S3Store:
    return S3Store(
        bucket,
        endpoint=server.endpoint,
        access_key_id=server.identity,
        secret_access_key=server.credential,
        region=server.region,
        client_options={"allow_http": True},
    )


async def chunks(total: int, size: int) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        n = min(size, total - sent)
        yield bytes([sent // size % 256]) * n
        sent += n


async def test_a_streamed_multipart_upload_lands_as_one_object(s3_endpoint: S3Server) -> None:
    """obstore streams an async iterator as a multipart upload (5 MiB parts); the object reads
    back whole, has S3's multipart ETag ("<md5>-<parts>", the same on HEAD), and is a plain file
    in the server's folder."""
    bucket = await s3_endpoint.create_bucket_async()
    store = store_for(s3_endpoint, bucket)
    put = await obstore.put_async(store, "runs/r1/output.mp4", chunks(12 * MiB, MiB))
    assert put["e_tag"] is not None
    assert put["e_tag"].endswith('-3"')
    head = await obstore.head_async(store, "runs/r1/output.mp4")
    assert head["size"] == 12 * MiB
    assert head["e_tag"] == put["e_tag"]
    got = await obstore.get_async(store, "runs/r1/output.mp4")
    body = bytes(await got.bytes_async())
    assert body == b"".join([bytes([i]) * MiB for i in range(12)])
    if s3_endpoint.folder is not None:
        assert (s3_endpoint.folder / "data" / bucket / "runs/r1/output.mp4").stat().st_size == (
            12 * MiB
        )
    assert s3_endpoint.object_keys(bucket) == ["runs/r1/output.mp4"]


def test_wrong_credentials_are_refused(s3_endpoint: S3Server) -> None:
    """The server checks signatures: another secret gets 403, so credential mistakes show."""
    bucket = s3_endpoint.create_bucket()
    client = s3_endpoint.new_client(secret="not-the-secret")
    with pytest.raises(ClientError) as refused:
        client.put_object(Bucket=bucket, Key="k", Body=b"x")
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_default_sdk_checksums_are_not_implemented(s3_endpoint: S3Server) -> None:
    """botocore's default flexible checksums (since 1.36) get 501 NotImplemented from S3Proxy
    2.6.0, as from other S3-compatible servers that lag AWS: why checksums must be a setting."""
    if s3_endpoint.port is None:
        pytest.skip("a server given from outside may accept flexible checksums")
    bucket = s3_endpoint.create_bucket()
    client = s3_endpoint.new_client(default_checksums=True)
    with pytest.raises(ClientError) as refused:
        client.put_object(Bucket=bucket, Key="k", Body=b"x")
    assert refused.value.response["Error"]["Code"] == "NotImplemented"
    # The same request with checksums only when required goes through.
    s3_endpoint.client().put_object(Bucket=bucket, Key="k", Body=b"x")
    assert s3_endpoint.object_bytes(bucket, "k") == b"x"


async def test_stop_and_start_keep_port_and_data(s3_endpoint: S3Server) -> None:
    """While stopped the endpoint refuses connections; started again it answers on the same
    port with the objects it had."""
    if s3_endpoint.port is None:
        pytest.skip("a server given from outside cannot be stopped by the tests")
    bucket = await s3_endpoint.create_bucket_async()
    store = store_for(s3_endpoint, bucket)
    await obstore.put_async(store, "kept.txt", b"still here")
    await s3_endpoint.stop_async()
    try:
        async with httpx.AsyncClient() as http:
            with pytest.raises(httpx.ConnectError):
                await http.get(s3_endpoint.endpoint)
        with pytest.raises(Exception, match=r"(?i)connect|refused|error sending"):
            await asyncio.wait_for(
                obstore.put_async(store_for(s3_endpoint, bucket), "lost.txt", b"x"), 60
            )
    finally:
        await s3_endpoint.start_async()
    got = await obstore.get_async(store, "kept.txt")
    assert bytes(await got.bytes_async()) == b"still here"
