"""The fal queue emulator served over TLS, as a process: ``fal_client`` only speaks https.

``fal-emulator serve`` has no TLS option, so this runner starts ``FalEmulator`` in-process with
an SSL context built from a certificate chain and key (``bench/run.py`` makes them with a
throwaway ``trustme`` CA for 127.0.0.1) and serves until SIGTERM or SIGINT. Every
``fal-emulator serve`` option is accepted (``--run-time``, ``--queue-wait``, ...)::

    python bench/tls_emulator.py --cert-chain server.pem --key server.key --port 8471 --run-time 2
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import ssl
import sys
from collections.abc import Sequence
from pathlib import Path

from fal_emulator import FalEmulator
from fal_emulator.logs import configure_logging
from fal_emulator.server import add_arguments, config_from_arguments


async def serve_tls(args: argparse.Namespace) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(args.cert_chain), str(args.key))
    emulator = FalEmulator(config_from_arguments(args))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    base_url = await emulator.start(args.host, args.port, ssl_context=context)
    try:
        print(f"tls emulator listening on {base_url}", file=sys.stderr, flush=True)
        await stop.wait()
    finally:
        await emulator.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add_arguments(parser)
    parser.add_argument("--cert-chain", type=Path, required=True, help="server certificate PEM")
    parser.add_argument("--key", type=Path, required=True, help="server private key PEM")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_tls(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
