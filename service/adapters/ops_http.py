"""The HTTP endpoints on RELAY_HTTP_PORT: ``/metrics``, ``/livez``, ``/readyz``, and
``POST /fal/webhook`` where fal reports finished jobs (RELAY_WATCH_MODE=webhook).

``/livez`` answers 200 while the relay's loop keeps turning (a wedged loop gets the pod
restarted); ``/readyz`` answers 200 while the relay is connected and taking work, and 503 while
it starts or shuts down.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.aiohttp import make_aiohttp_handler

from service.adapters.webhooks import WebhookRejected, WebhookVerifier
from service.logs import get_logger


class OpsServer:
    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        is_live: Callable[[], bool],
        is_ready: Callable[[], bool],
        ready_detail: Callable[[], dict[str, Any]] = dict,
        webhooks: tuple[WebhookVerifier, Callable[[str, dict[str, Any]], None]] | None = None,
    ) -> None:
        self._registry = registry
        self._is_live = is_live
        self._is_ready = is_ready
        self._ready_detail = ready_detail
        self._webhooks = webhooks
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self, host: str, port: int) -> None:
        app = web.Application()
        # prometheus_client's own handler: the text format, or OpenMetrics when the scraper's
        # Accept asks for it, gzip when its Accept-Encoding allows, ?name[]= to pick metrics.
        app.router.add_get("/metrics", make_aiohttp_handler(self._registry))
        app.router.add_get("/livez", self._livez)
        app.router.add_get("/readyz", self._readyz)
        if self._webhooks is not None:
            app.router.add_post("/fal/webhook", self._webhook)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = site._server  # aiohttp exposes the bound port only here (port 0 in tests)
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _livez(self, _request: web.Request) -> web.Response:
        ok = self._is_live()
        return web.json_response({"live": ok}, status=200 if ok else 503)

    async def _readyz(self, _request: web.Request) -> web.Response:
        ok = self._is_ready()
        # The detail explains, never decides: a relay that works without fal's history is
        # ready all the same.
        return web.json_response({"ready": ok, **self._ready_detail()}, status=200 if ok else 503)

    async def _webhook(self, request: web.Request) -> web.Response:
        assert self._webhooks is not None
        verifier, deliver = self._webhooks
        body = await request.read()
        try:
            parsed = await verifier.verify(dict(request.headers), body)
        except WebhookRejected as exc:
            get_logger().warning("webhook_rejected", reason=str(exc))
            return web.json_response({"accepted": False, "reason": str(exc)}, status=401)
        deliver(str(parsed["request_id"]), parsed)
        return web.json_response({"accepted": True})
