"""The user's object storage for videos (RELAY_OUTPUT_URL), through obstore: S3 and
S3-compatible servers, Google Cloud Storage, Azure Blob Storage.

obstore (Rust's object_store) was chosen by measurement against aiobotocore: CPU and memory
per 100 MB streamed (``bench/results/storage-clients.md``). Credentials come from each
cloud's standard chain (for S3: AWS_* variables, a web identity token file as IRSA mounts
it, ECS and instance metadata), so nothing here holds a secret.

A video is streamed in parts of RELAY_OUTPUT_PART_MIB (a multipart upload, one part in flight
besides the one filling), so a copy holds about two parts of memory whatever the video's size,
and RELAY_OUTPUT_MAX_COPIES bounds the copies: 20 copies of 200 MiB asked for at once grew the
relay's memory by about 51 MiB at the defaults (4 at a time, 8 MiB parts), 63 MiB with 8 at a
time of 5 MiB parts, 137 MiB with all 20 at once (bench/results/output-relay.md).
obstore's errors are translated here into ``StorageError``: refusals (credentials, a missing
bucket, a bad path) are not retryable, the rest (5xx, timeouts, resets) are.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import obstore
from obstore.exceptions import (
    BaseError,
    InvalidPathError,
    NotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
    UnknownConfigurationKeyError,
)
from obstore.store import from_url

from service.errors import StorageError
from service.ports import StoredObject

_REFUSALS = (
    PermissionDeniedError,
    UnauthenticatedError,
    InvalidPathError,
    UnknownConfigurationKeyError,
)


def _unquoted(etag: str | None) -> str | None:
    return etag.strip('"').removeprefix("W/").strip('"') if etag else None


class ObjectStoreOutput:
    def __init__(
        self,
        url: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        part_mib: int = 8,
    ) -> None:
        parts = urlsplit(url)
        self._scheme = "s3" if parts.scheme == "s3a" else parts.scheme
        self._bucket = parts.netloc
        self.part_size = part_mib * 1_048_576
        self.multipart = True  # put() always asks obstore for a multipart upload
        config: dict[str, Any] = {}
        client: dict[str, Any] = {"timeout": "60s", "connect_timeout": "10s"}
        if self._scheme == "s3":
            if endpoint_url:
                # An S3-compatible server: path-style addressing (bucket in the path) is
                # what MinIO, S3Proxy and most others answer to.
                config.update(endpoint=endpoint_url, virtual_hosted_style_request=False)
                client["allow_http"] = endpoint_url.startswith("http://")
            if region:
                config["region"] = region
            # The payload is not hashed for the signature (S3's UNSIGNED-PAYLOAD): the relay
            # checks the copy itself (size, ETag), and hashing each part again cost a fifth of
            # the client's CPU (bench/results/storage-clients.md). TLS protects it in transit.
            config["unsigned_payload"] = True
        # The relay retries a copy as a whole, with backoff and metrics (``relay.storage``);
        # obstore's own retries are kept short so a store that is down is seen as down.
        retry = {"max_retries": 2, "retry_timeout": timedelta(seconds=10)}
        # One call for every cloud: the dicts' keys are checked by obstore at run time.
        self._store = from_url(  # type: ignore[call-overload]
            f"{self._scheme}://{self._bucket}",
            config=config or None,
            client_options=client,
            retry_config=retry,
        )

    async def put(
        self, key: str, chunks: AsyncIterator[bytes], content_type: str | None
    ) -> StoredObject:
        try:
            result = await obstore.put_async(
                self._store,
                key,
                chunks,
                attributes={"Content-Type": content_type} if content_type else None,
                use_multipart=True,
                chunk_size=self.part_size,
                max_concurrency=1,
            )
        except BaseError as exc:
            raise _storage_error("put", key, exc) from None
        except Exception as exc:  # an error of the stream we were given, passed through obstore
            raise StorageError(f"put {key}: the stream failed: {exc!r}") from None
        return StoredObject(size=-1, etag=_unquoted(result.get("e_tag")))

    async def head(self, key: str) -> StoredObject | None:
        try:
            meta = await obstore.head_async(self._store, key)
        except NotFoundError:
            return None
        except BaseError as exc:
            raise _storage_error("head", key, exc) from None
        return StoredObject(size=int(meta["size"]), etag=_unquoted(meta.get("e_tag")))

    def url_for(self, key: str) -> str:
        return f"{self._scheme}://{self._bucket}/{key}"

    async def presigned(self, key: str, ttl_s: int) -> str:
        try:
            signed: str = await obstore.sign_async(
                self._store,
                "GET",
                key,
                timedelta(seconds=ttl_s),
            )
        except BaseError as exc:
            raise _storage_error("presign", key, exc) from None
        return signed


def _storage_error(what: str, key: str, exc: BaseError) -> StorageError:
    # obstore's messages name the bucket and the key, never a credential.
    message = f"{what} {key}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return StorageError(message, retryable=not isinstance(exc, (*_REFUSALS, NotFoundError)))
