"""The session's S3-compatible object store for tests: an S3Proxy run by ``scripts/s3proxy``.

``S3Server`` is what the ``s3_endpoint`` fixture (tests/conftest.py) yields: where the server is,
the credentials it checks, a way to make a fresh bucket, and a way to take the server down and
bring it back on the same port with the same data (for "storage is down for 30 s" tests).
Buckets are made with botocore (a dependency of aiobotocore), since obstore cannot create one;
botocore is told to send checksums only when required, as S3Proxy 2.6.0 answers the default
flexible checksums with 501 NotImplemented.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from botocore.config import Config

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "s3proxy"
# scripts/s3proxy's local-only defaults: no secret, the server listens on 127.0.0.1 only.
DEFAULT_IDENTITY = "lynx-local"
DEFAULT_CREDENTIAL = "lynx-local-secret"
REGION = "us-east-1"


def checksums_when_required() -> Config:
    """What S3Proxy (and other S3-compatible servers that lag AWS) accept: see the module
    docstring. botocore is imported here, not at the top: it takes about half a second, and
    every test session loads this module through tests/conftest.py."""
    from botocore.config import Config  # noqa: PLC0415 - see the docstring

    return Config(
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        s3={"addressing_style": "path"},
    )


class S3ServerError(RuntimeError):
    """scripts/s3proxy could not start or stop the server."""


@dataclass
class S3Server:
    """One S3-compatible server: ``endpoint`` (``http://127.0.0.1:PORT``), ``identity`` (the
    access key id), ``credential`` (the secret key), ``region``.

    ``port`` and ``folder`` are set when this session started the server itself (then ``stop``
    and ``start`` work); both are ``None`` for a server given from outside.
    """

    endpoint: str
    identity: str = DEFAULT_IDENTITY
    credential: str = field(default=DEFAULT_CREDENTIAL, repr=False)
    region: str = REGION
    port: int | None = None
    folder: Path | None = None
    _client: Any = field(default=None, init=False, repr=False)

    # --- buckets ------------------------------------------------------------------------------

    def create_bucket(self, prefix: str = "test") -> str:
        """A new, empty bucket with a unique name (``<prefix>-<12 hex digits>``); its name."""
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    async def create_bucket_async(self, prefix: str = "test") -> str:
        """``create_bucket`` off the event loop."""
        return await asyncio.to_thread(self.create_bucket, prefix)

    def client(self) -> Any:
        """A synchronous botocore S3 client for this server (made once), for test set-up and
        checks: ``get_object``, ``list_objects_v2``, ``head_object``..."""
        if self._client is None:
            self._client = self.new_client()
        return self._client

    def new_client(self, *, secret: str | None = None, default_checksums: bool = False) -> Any:
        """A new botocore S3 client: with another ``secret`` than the server's, or with
        botocore's own default checksums (which S3Proxy refuses), for tests of those cases."""
        import botocore.session  # noqa: PLC0415 - see checksums_when_required

        return botocore.session.get_session().create_client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=self.identity,
            aws_secret_access_key=self.credential if secret is None else secret,
            config=None if default_checksums else checksums_when_required(),
        )

    def object_bytes(self, bucket: str, key: str) -> bytes:
        """The whole object ``bucket/key`` (small objects only: it is read into memory)."""
        body: bytes = self.client().get_object(Bucket=bucket, Key=key)["Body"].read()
        return body

    def object_keys(self, bucket: str, prefix: str = "") -> list[str]:
        """The objects' keys under ``prefix`` in ``bucket`` (first 1000), sorted.

        S3Proxy's default filesystem backend also lists each folder on the way to a key
        (``runs/``, ``runs/r1/``) as an object with no ETag; those are left out, as S3 has none.
        """
        listed = self.client().list_objects_v2(Bucket=bucket, Prefix=prefix)
        return sorted(
            entry["Key"]
            for entry in listed.get("Contents", [])
            if not (entry["Key"].endswith("/") and "ETag" not in entry)
        )

    # --- down and up again --------------------------------------------------------------------

    def stop(self) -> None:
        """Stop the server (SIGTERM; data stays in ``folder``). Connections are refused until
        ``start``. Blocks for up to a few seconds: from async code use ``stop_async``."""
        self._script("stop")

    def start(self) -> None:
        """Start the server again on the same port with the same data and credentials; returns
        once it answers HTTP (about 2-4 s). A no-op when it is running."""
        self._script("start")

    async def stop_async(self) -> None:
        await asyncio.to_thread(self.stop)

    async def start_async(self) -> None:
        await asyncio.to_thread(self.start)

    def _script(self, command: str) -> str:
        if self.port is None or self.folder is None:
            raise S3ServerError(
                f"cannot {command} an S3 server this session did not start ({self.endpoint})"
            )
        return run_script(command, self.port, self.folder, self.identity, self.credential)


def run_script(command: str, port: int, folder: Path, identity: str, credential: str) -> str:
    """``scripts/s3proxy COMMAND --port PORT --dir FOLDER`` (credentials through the
    environment, so the secret stays off the command line); its stdout."""
    env = {
        **os.environ,
        "LYNX_S3PROXY_IDENTITY": identity,
        "LYNX_S3PROXY_CREDENTIAL": credential,
    }
    done = subprocess.run(  # noqa: S603 - our own script
        [str(SCRIPT), command, "--port", str(port), "--dir", str(folder)],
        capture_output=True,
        text=True,
        timeout=600 if command == "start" else 90,
        check=False,
        env=env,
    )
    if done.returncode != 0:
        raise S3ServerError(f"scripts/s3proxy {command} failed:\n{done.stderr[-4000:]}")
    return done.stdout
