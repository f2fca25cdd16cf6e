"""The fal queue emulator as a real HTTP server: a thin aiohttp layer over the pure simulation.

This module owns the process-facing side: binding a socket (plain or TLS), turning requests into
calls on ``Simulation`` and ``wire`` and their ``Reply`` into responses, injecting the faults
``FaultInjector`` draws (answering them, delaying, or dropping the connection), counting calls and
faults for ``/_emulator/stats`` and reporting the bill there, the runtime settings (key, faults,
webhook drop rate, history mode and unit price) that ``/_emulator/config`` and ``reconfigure``
change, streaming the output files (``media``), the webhook keys and fal's Platform API
(``platform_api``), and the one driver task that advances the simulation when its next event is
due.
Every handler first advances the simulation to the current time, so answers are exact even when
the driver is late; each advance hands the jobs that completed with a webhook to ``webhooks``.

Routes: the queue routes under ``/{[ns/]owner/alias}`` (see ``wire.parse_queue_path``); the
Platform API under ``/v1`` (``api_url``; ``GET /v1/models/requests/by-endpoint``,
``DELETE /v1/models/requests/{id}/payloads`` and ``GET /v1/models/pricing``, with the queue's
key); and
unauthenticated ``GET /_emulator/stats[?jobs=1]``, ``GET|POST /_emulator/config``,
``GET /_emulator/files/{id}/output.mp4``, ``GET /_emulator/jwks.json`` (also
``/.well-known/jwks.json``, fal's path) and ``POST /_emulator/jwks/rotate``.

Order of a queue call: auth (with the current key), routing, then the fault draw, then the
normal handling. So a wrong key is always a 401 and unknown routes are never faulted.

Billing: the simulation charges each job once, when it completes (``jobs``), and ``wire`` puts
``X-Fal-Billable-Units`` on its result answers; this module only reports the totals (``stats()``
under ``billing``) and holds the unit price, which the pricing endpoint serves and which
``reconfigure`` changes from the next job to complete.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import random
import ssl
import time
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

import structlog
from aiohttp import web

from fal_emulator.config import (
    BILLING_UNIT,
    CURRENCY,
    EmulatorConfig,
    HistoryLists,
    add_arguments,
    check_drop_rate,
    check_history_lists,
    check_unit_price,
    config_from_arguments,
)
from fal_emulator.faults import FAULT_ENDPOINTS, FaultInjector, FaultKind, Faults
from fal_emulator.jobs import (
    OUTPUT_FILE_NAME,
    CancelOutcome,
    Job,
    Outcome,
    Phase,
    Simulation,
)
from fal_emulator.media import output_chunks
from fal_emulator.platform_api import (
    API_PREFIX,
    DOCS_URL,
    HISTORY_DOCS_URL,
    PAYLOADS_DOCS_URL,
    PRICING_DOCS_URL,
    PlatformError,
    PlatformRoute,
    check_request_id,
    delete_payloads,
    history_page,
    not_found,
    parse_history_query,
    parse_platform_path,
    parse_pricing_query,
    pricing_page,
    unauthorized,
)
from fal_emulator.webhooks import Delivery, WebhookSender
from fal_emulator.wire import (
    NOT_FOUND,
    UNAUTHORIZED,
    QueueRoute,
    QueueUrls,
    Reply,
    authorized,
    cancel_reply,
    detail,
    gateway_reply,
    is_low_priority,
    logs_requested,
    parse_queue_path,
    rate_limited_reply,
    record_headers,
    result_reply,
    start_timeout,
    status_reply,
    submit_reply,
)

__all__ = ["EmulatorConfig", "FalEmulator", "add_arguments", "config_from_arguments", "serve"]

_log = structlog.get_logger(__name__)

# Large enough for a data-URI subject image inline in the body, as LynxInput allows.
MAX_BODY_BYTES = 32 * 1024 * 1024
STREAM_KEEPALIVE_SECONDS = 15.0
# Open status streams get this long to finish when the server stops; they are told to end first.
SHUTDOWN_TIMEOUT_SECONDS = 1.0
CALL_KINDS = FAULT_ENDPOINTS
# How ``calls`` counts a call whose connection was dropped (reset, lost-answer) instead of a status.
DROPPED = "dropped"


class _Unset(enum.Enum):
    UNSET = "unset"


UNSET: Literal[_Unset.UNSET] = _Unset.UNSET


class FalEmulator:
    """One emulated fal queue: ``await start()`` to listen, ``await stop()`` to close."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config  # as started; the key and faults in force may differ (reconfigure)
        self._sim = Simulation(config, random.Random(config.seed))
        self._calls: dict[str, dict[str, int]] = {kind: {"total": 0} for kind in CALL_KINDS}
        # The runtime settings: start from the config, changed by reconfigure().
        self._fal_key = config.fal_key
        # A stream of its own, so faults never shift the simulation's draws.
        fault_seed = None if config.seed is None else f"faults:{config.seed}"
        self._injector = FaultInjector(config.faults, random.Random(fault_seed))
        self._faults: dict[str, dict[str, int]] = {kind: {"total": 0} for kind in FAULT_ENDPOINTS}
        # Webhook drops draw from a stream of their own too.
        webhook_seed = None if config.seed is None else f"webhooks:{config.seed}"
        self._webhooks = WebhookSender(config, random.Random(webhook_seed))
        self._history_lists: HistoryLists = config.history_lists
        # Submits whose job was created and whose answer was then lost (a lost-answer fault).
        self._created_then_lost = 0
        self._runner: web.AppRunner | None = None
        self._driver: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()  # set when a submit or cancel may have moved the next event
        self._changed = asyncio.Event()  # replaced after every change; status streams wait on it
        self._closing = False
        self._base_url: str | None = None

    @property
    def base_url(self) -> str:
        if self._base_url is None:
            raise RuntimeError("the emulator is not started")
        return self._base_url

    @property
    def api_url(self) -> str:
        """fal's Platform API as the emulator serves it: what a client uses as ``FAL_API_URL``
        (fal's is ``https://api.fal.ai/v1``)."""
        return f"{self.base_url}{API_PREFIX}"

    @property
    def jwks_url(self) -> str:
        """Where the webhook signing keys are published."""
        return f"{self.base_url}/_emulator/jwks.json"

    async def start(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
        *,
        webhook_ssl_context: ssl.SSLContext | None = None,
    ) -> str:
        """Listen on ``host:port`` (0 = any free port); returns the base URL, e.g. for clients.

        ``webhook_ssl_context`` verifies ``https`` webhook receivers (default: the system CAs).
        """
        if self._runner is not None:
            raise RuntimeError("the emulator is already started")
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        for path in ("/_emulator/jwks.json", "/.well-known/jwks.json"):
            app.router.add_get(path, self._handle_jwks)
        app.router.add_post("/_emulator/jwks/rotate", self._handle_rotate)
        app.router.add_get("/_emulator/stats", self._handle_stats)
        app.router.add_get("/_emulator/stats/", self._handle_stats)
        for path in ("/_emulator/config", "/_emulator/config/"):
            app.router.add_get(path, self._handle_get_config)
            app.router.add_post(path, self._handle_post_config)
        app.router.add_get("/_emulator/files/{request_id}/{name}", self._handle_file)
        # Before the queue's catch-all: an endpoint id can never start with v1 (config checks).
        app.router.add_route("*", API_PREFIX + "/{tail:.*}", self._handle_platform)
        app.router.add_route("*", "/{tail:.*}", self._handle_queue)
        # No access log: clients poll status many times a second and that is not news.
        runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT_SECONDS
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port, ssl_context=ssl_context).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._webhooks.open(webhook_ssl_context)
        bound_port = runner.addresses[0][1]
        shown_host = f"[{host}]" if ":" in host else host
        scheme = "https" if ssl_context is not None else "http"
        self._base_url = f"{scheme}://{shown_host}:{bound_port}"
        self._driver = asyncio.create_task(self._drive(), name="fal-emulator-driver")
        return self._base_url

    async def stop(self) -> None:
        """Stop the simulation, cancel pending webhook deliveries and close the server; open
        status streams end first."""
        self._closing = True
        self._pulse()
        driver, self._driver = self._driver, None
        if driver is not None:
            driver.cancel()
            # wait() rather than awaiting the task: its CancelledError is not ours to swallow.
            await asyncio.wait([driver])
        try:
            await self._webhooks.close()
        finally:
            if self._runner is not None:
                await self._runner.cleanup()
                self._runner = None
        # A driver that died early is a bug in the simulation: surface it rather than lose it.
        if driver is not None and not driver.cancelled() and driver.exception() is not None:
            raise RuntimeError("the emulator's driver task failed") from driver.exception()

    @property
    def faults(self) -> Faults:
        """The faults in force now."""
        return self._injector.faults

    def reconfigure(
        self,
        *,
        fal_key: str | Literal[_Unset.UNSET] | None = UNSET,
        faults: Faults | Literal[_Unset.UNSET] | None = UNSET,
        webhook_drop_rate: float | Literal[_Unset.UNSET] = UNSET,
        history_lists: HistoryLists | Literal[_Unset.UNSET] = UNSET,
        unit_price: float | Literal[_Unset.UNSET] = UNSET,
    ) -> None:
        """Change the accepted key (None: any non-empty key), the faults (None: none), the
        share of webhooks dropped, which jobs the request history lists and the unit price,
        while running; what is not passed stays. Takes effect from the next call (the next job
        to complete, for the drop rate and the price: a job already billed keeps its amount)."""
        if fal_key not in (UNSET, None) and not (isinstance(fal_key, str) and fal_key):
            raise ValueError("fal_key must be a non-empty string or None")
        if webhook_drop_rate is not UNSET:
            webhook_drop_rate = check_drop_rate(webhook_drop_rate)
        if history_lists is not UNSET:
            history_lists = check_history_lists(history_lists)
        if unit_price is not UNSET:
            unit_price = check_unit_price(unit_price)
        # Checked all first, so that a bad setting changes nothing.
        if fal_key is not UNSET:
            self._fal_key = fal_key
        if faults is not UNSET:
            self._injector.faults = Faults() if faults is None else faults
        if webhook_drop_rate is not UNSET:
            self._webhooks.drop_rate = webhook_drop_rate
        if history_lists is not UNSET:
            self._history_lists = history_lists
        if unit_price is not UNSET:
            # Jobs that ended before now, but that the driver has not replayed yet, are billed
            # at the old price: the change must not reach back in time.
            self._tick()
            self._sim.unit_price = unit_price
        _log.info("emulator_reconfigured", **self._runtime_view())

    def _runtime_view(self) -> dict[str, Any]:
        # Whether a key is set, never the key.
        return {
            "fal_key_set": self._fal_key is not None,
            "faults": self.faults.to_json(),
            "webhook_drop_rate": self._webhooks.drop_rate,
            "history_lists": self._history_lists,
            "unit_price": self._sim.unit_price,
        }

    @property
    def history_lists(self) -> HistoryLists:
        """Which jobs the request history lists now: ``"all"`` or ``"ended"``."""
        return self._history_lists

    @property
    def unit_price(self) -> float:
        """USD per billable unit now: what the pricing endpoint answers and a job ending now
        is charged."""
        return self._sim.unit_price

    # --- webhooks ---

    def webhook_jwks(self) -> dict[str, Any]:
        """The webhook signing keys as served at ``/_emulator/jwks.json``, oldest first."""
        return self._webhooks.keyring.jwks()

    def rotate_webhook_key(self) -> dict[str, str]:
        """Add a signing key (the JWKS then lists it too) and sign every attempt from now on
        with it; returns its JWK."""
        key = self._webhooks.keyring.rotate()
        _log.info("emulator_webhook_key_rotated", kid=key.kid)
        return key.jwk()

    async def webhooks_settled(self) -> None:
        """Wait until no webhook delivery is pending: each delivered, given up or stopped.

        Advances the simulation first, so jobs already due count. Jobs still running are not
        waited for."""
        self._tick()
        await self._webhooks.settled()

    def stats(self, *, include_jobs: bool = False) -> dict[str, Any]:
        """The body of ``GET /_emulator/stats``; with ``include_jobs`` every submission too."""
        self._tick()
        counters = self._sim.counters
        outcomes = {outcome.value: count for outcome, count in counters.outcomes.items()}
        stats: dict[str, Any] = {
            "submissions": counters.submissions,
            "submissions_by_endpoint": dict(counters.submissions_by_endpoint),
            "calls": {kind: dict(counts) for kind, counts in self._calls.items()},
            "in_flight": counters.in_flight,
            "peak_in_flight": counters.peak_in_flight,
            "queued": self._sim.queued,
            "running": counters.running,
            "peak_running": counters.peak_running,
            "completed": counters.completed,
            "succeeded": counters.outcomes[Outcome.SUCCEEDED],
            "failed": sum(n for outcome, n in counters.outcomes.items() if outcome.failed),
            "cancelled": counters.outcomes[Outcome.CANCELLED],
            "outcomes": outcomes,
            "faults": {kind: dict(counts) for kind, counts in self._faults.items()},
            # Jobs created by a submit whose answer was then lost (lost-answer, lost-answer-502):
            # they run and are billed, and their submitter never heard of them.
            "submits_created_then_lost": self._created_then_lost,
            "webhooks": self._webhooks.stats(),
            # What fal's invoice would say: every job billed when it ended, its result fetched
            # or not. amount_total adds each job's amount at the price when it ended, so it is
            # units_total * unit_price as long as the price was never changed.
            "billing": {
                "unit": BILLING_UNIT,
                "unit_price": self._sim.unit_price,
                "currency": CURRENCY,
                "units_total": counters.units_billed,
                "amount_total": counters.amount_billed,
                "jobs_billed": counters.jobs_billed,
            },
        }
        if include_jobs:
            jobs = list(self._sim.jobs())
            stats["jobs"] = [
                _job_record(job, self._webhooks.lookup(job.request_id)) for job in jobs
            ]
            # Fewer distinct inputs than jobs: some input was submitted twice (a duplicate, when
            # the test's inputs are all different).
            stats["distinct_inputs"] = len(
                {json.dumps(job.input, sort_keys=True, separators=(",", ":")) for job in jobs}
            )
        return stats

    # --- the simulation's clock ---

    def _tick(self) -> float:
        now = time.monotonic()
        if self._sim.advance(now):
            self._pulse()
        self._dispatch_webhooks()
        return now

    def _dispatch_webhooks(self) -> None:
        """Hand the jobs that completed with a webhook to the sender."""
        for job in self._sim.drain_completed():
            self._webhooks.completed(job)

    def _pulse(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _drive(self) -> None:
        """Advance the simulation whenever its next event is due or a command moved it."""
        while True:
            self._wake.clear()
            self._tick()
            wake_at = self._sim.next_wakeup()
            delay = None if wake_at is None else max(0.0, wake_at - time.monotonic())
            try:
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            except TimeoutError:
                pass

    # --- HTTP ---

    def _respond(self, kind: str, reply: Reply) -> web.Response:
        self._count(kind, reply.status)
        if reply.content_type == "application/json":
            return web.json_response(reply.body, status=reply.status, headers=reply.headers)
        return web.Response(
            text=reply.body,
            status=reply.status,
            headers=reply.headers,
            content_type=reply.content_type,
        )

    def _count(self, kind: str, status: int | str) -> None:
        counts = self._calls.setdefault(kind, {"total": 0})
        counts["total"] += 1
        counts[str(status)] = counts.get(str(status), 0) + 1

    def _record_fault(self, endpoint: str, fault: FaultKind, job: Job | None) -> None:
        counts = self._faults[endpoint]
        counts["total"] += 1
        counts[fault.value] = counts.get(fault.value, 0) + 1
        if job is not None:
            per_job = job.faults.setdefault(endpoint, {})
            per_job[fault.value] = per_job.get(fault.value, 0) + 1
        _log.debug(
            "emulator_fault_injected",
            endpoint=endpoint,
            kind=fault.value,
            request_id=None if job is None else job.request_id,
        )

    def _drop(self, kind: str, request: web.Request) -> web.Response:
        """Close the connection without an answer: the client sees it dropped mid-request.

        The response returned is never sent (aiohttp finds the transport closed and lets go).
        """
        self._count(kind, DROPPED)
        transport = request.transport
        if transport is not None:
            transport.abort()
        return web.Response(status=204)

    async def _inject(
        self, request: web.Request, route: QueueRoute, kind: str, fault: FaultKind
    ) -> web.Response | None:
        """Record ``fault`` and deliver it: the answer instead of the normal one, or None when
        the call goes on to be handled (after a slow delay; lost-answer drops it later)."""
        # A submit's job does not exist yet; slow and lost-answer record on it once it does.
        self._record_fault(kind, fault, None if kind == "submit" else self._lookup(route))
        if fault is FaultKind.SLOW:
            await asyncio.sleep(self._injector.slow_delay())
            return None
        if fault.loses_answer:
            return None
        if fault is FaultKind.RESET:
            return self._drop(kind, request)
        if fault is FaultKind.RATE_LIMITED:
            return self._respond(kind, rate_limited_reply(self.faults.retry_after))
        status = fault.gateway_status
        assert status is not None, f"{fault.value} is not a per-call fault"
        return self._respond(kind, gateway_reply(status))

    async def _handle_queue(self, request: web.Request) -> web.StreamResponse:
        route = parse_queue_path(request.method, request.path)
        kind = "other" if route is None else route.kind.removesuffix("_stream")
        # Auth before anything else, as fal's gateway does; the key is never logged or echoed.
        if not authorized(request.headers.get("Authorization"), self._fal_key):
            return self._respond(kind, UNAUTHORIZED)
        if route is None:
            return self._respond(kind, detail(404, "Not Found"))
        if route.endpoint not in self.config.endpoints:
            if route.kind == "cancel":
                return self._respond(kind, cancel_reply(CancelOutcome.NOT_FOUND))
            if route.kind == "submit":
                return self._respond(kind, detail(404, f"Application {route.endpoint} not found"))
            return self._respond(kind, NOT_FOUND)
        fault = self._injector.draw(kind)
        if fault is not None:
            faulted = await self._inject(request, route, kind, fault)
            if faulted is not None:
                return faulted
        base_url = f"{request.scheme}://{request.host}"
        match route.kind:
            case "submit":
                return await self._submit(request, route, base_url, fault)
            case "cancel":
                return self._cancel(route)
            case "status_stream":
                return await self._status_stream(request, route, base_url)
            case "status":
                return self._status(request, route, base_url)
            case _:
                return self._result(route, base_url)

    async def _submit(
        self, request: web.Request, route: QueueRoute, base_url: str, fault: FaultKind | None
    ) -> web.Response:
        """Create the job and answer; with ``lost-answer`` or ``lost-answer-502`` the answer is
        lost (connection dropped, or the gateway's 502) whatever it would have been, job or not.

        A start timeout header that is not a positive number of seconds is refused with a 400
        before the body is read, and makes no job."""
        try:
            timeout = start_timeout(request.headers)
        except ValueError as exc:
            return self._submit_answer(request, detail(400, str(exc)), fault)
        raw = await request.read()
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):
            reply = detail(400, "Request body is not valid JSON")
            return self._submit_answer(request, reply, fault)
        if not isinstance(body, dict):
            reply = detail(422, "Request body must be a JSON object")
            return self._submit_answer(request, reply, fault)
        fate = self._injector.model_fate()
        now = time.monotonic()
        job, position = self._sim.submit(
            now=now,
            wall=time.time(),
            request_id=str(uuid.uuid4()),
            gateway_request_id=str(uuid.uuid4()),
            endpoint=route.endpoint,
            subpath=route.subpath,
            body=body,
            headers_recorded=record_headers(request.headers),
            webhook=request.query.get("fal_webhook"),
            low_priority=is_low_priority(request.headers.get("X-Fal-Queue-Priority")),
            model_error_status=None if fate is None else fate.model_status,
            start_timeout=timeout,
        )
        if job.webhook:
            self._webhooks.register(job.request_id, job.webhook, base_url)
            self._dispatch_webhooks()  # an invalid input completes at once
        if fate is not None and job.plan.model_fault:
            self._record_fault("result", fate, job)
        if fault is not None:
            per_job = job.faults.setdefault("submit", {})
            per_job[fault.value] = per_job.get(fault.value, 0) + 1
            if fault.loses_answer:
                self._created_then_lost += 1
        _log.debug(
            "emulator_job_submitted",
            request_id=job.request_id,
            endpoint=job.endpoint,
            low_priority=job.low_priority,
            queue_position=position,
            outcome=job.plan.outcome.value,
            start_timeout=job.start_timeout,
        )
        self._pulse()
        self._wake.set()
        urls = QueueUrls.build(base_url, job.endpoint, job.request_id)
        return self._submit_answer(request, submit_reply(job, position, urls), fault)

    def _submit_answer(
        self, request: web.Request, reply: Reply, fault: FaultKind | None
    ) -> web.Response:
        if fault is FaultKind.LOST_ANSWER:
            return self._drop("submit", request)
        if fault is FaultKind.LOST_ANSWER_502:
            return self._respond("submit", gateway_reply(502))
        return self._respond("submit", reply)

    def _lookup(self, route: QueueRoute) -> Job | None:
        assert route.request_id is not None
        job = self._sim.lookup(route.request_id)
        # A request id is only known under the endpoint it was submitted to.
        return job if job is not None and job.endpoint == route.endpoint else None

    def _status(self, request: web.Request, route: QueueRoute, base_url: str) -> web.Response:
        now = self._tick()
        job = self._lookup(route)
        if job is None or job.phase is Phase.EXPIRED:
            return self._respond("status", NOT_FOUND)
        urls = QueueUrls.build(base_url, job.endpoint, job.request_id)
        with_logs = logs_requested(request.query.get("logs"))
        position = self._sim.queue_position(job)
        return self._respond("status", status_reply(job, now, position, urls, with_logs))

    def _result(self, route: QueueRoute, base_url: str) -> web.Response:
        self._tick()
        job = self._lookup(route)
        if job is not None:
            self._sim.record_result_fetch(job)
        return self._respond("result", result_reply(job, base_url))

    def _cancel(self, route: QueueRoute) -> web.Response:
        assert route.request_id is not None
        if self._lookup(route) is None:
            return self._respond("cancel", cancel_reply(CancelOutcome.NOT_FOUND))
        outcome = self._sim.cancel(route.request_id, time.monotonic())
        self._dispatch_webhooks()
        if outcome is CancelOutcome.REQUESTED:
            _log.debug("emulator_job_cancelled", request_id=route.request_id)
            self._pulse()
            self._wake.set()
        return self._respond("cancel", cancel_reply(outcome))

    async def _status_stream(
        self, request: web.Request, route: QueueRoute, base_url: str
    ) -> web.StreamResponse:
        """Server-sent events: each changed status as ``data: <json>``, closed after COMPLETED.

        A new event is sent when the simulation changes (a job started, finished, was cancelled),
        so log lines that appear between changes arrive with the next change.
        """
        self._tick()
        job = self._lookup(route)
        if job is None or job.phase is Phase.EXPIRED:
            return self._respond("status", NOT_FOUND)
        self._count("status", 200)
        urls = QueueUrls.build(base_url, job.endpoint, job.request_id)
        with_logs = logs_requested(request.query.get("logs"))
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        last = ""
        try:
            while not self._closing:
                changed = self._changed
                now = self._tick()
                reply = status_reply(job, now, self._sim.queue_position(job), urls, with_logs)
                payload = json.dumps(reply.body)
                if payload != last:
                    await response.write(f"data: {payload}\n\n".encode())
                    last = payload
                if job.phase not in (Phase.IN_QUEUE, Phase.IN_PROGRESS):
                    break
                try:
                    async with asyncio.timeout(STREAM_KEEPALIVE_SECONDS):
                        await changed.wait()
                except TimeoutError:
                    await response.write(b": keep-alive\n\n")
            await response.write_eof()
        except ConnectionResetError:
            pass  # the client went away; nothing to tell it
        return response

    # --- fal's Platform API ---

    async def _handle_platform(self, request: web.Request) -> web.Response:
        """``/v1/...``: auth with the queue's key first (401), then the route (404), then its
        parameters (422, or 404 for an unknown endpoint or request). Errors in the Platform
        API's shape, each with a request id of its own."""
        route = parse_platform_path(request.method, request.path)
        kind = "other" if route is None else route.kind
        docs_url = {
            "history": HISTORY_DOCS_URL,
            "delete_payloads": PAYLOADS_DOCS_URL,
            "pricing": PRICING_DOCS_URL,
        }.get(kind, DOCS_URL)
        base_url = f"{request.scheme}://{request.host}"
        try:
            if not authorized(request.headers.get("Authorization"), self._fal_key):
                raise unauthorized()
            if route is None:
                raise not_found(f"No route for {request.method} {request.path}")
            if route.kind == "history":
                body = self._history(request, base_url)
            elif route.kind == "pricing":
                ids = parse_pricing_query(request.query.items(), endpoints=self.config.endpoints)
                body = pricing_page(ids, self._sim.unit_price)
            else:
                body = self._delete_payloads(route, base_url)
        except PlatformError as exc:
            self._count(kind, exc.status)
            error = exc.body(str(uuid.uuid4()), docs_url)
            return web.json_response(error, status=exc.status)
        self._count(kind, 200)
        return web.json_response(body)

    def _history(self, request: web.Request, base_url: str) -> dict[str, Any]:
        self._tick()
        query = parse_history_query(
            request.query.items(), now=datetime.now(UTC), endpoints=self.config.endpoints
        )
        return history_page(self._sim.jobs(), query, lists=self._history_lists, base_url=base_url)

    def _delete_payloads(self, route: PlatformRoute, base_url: str) -> dict[str, Any]:
        assert route.request_id is not None
        request_id = check_request_id(route.request_id)
        self._tick()
        job = self._sim.lookup(request_id)
        if job is None:
            raise not_found(f"Request {request_id} not found")
        body = delete_payloads(job, base_url)
        job.payloads_deleted = True
        _log.debug("emulator_payloads_deleted", request_id=request_id)
        return body

    async def _handle_stats(self, request: web.Request) -> web.Response:
        include_jobs = logs_requested(request.query.get("jobs"))
        return web.json_response(self.stats(include_jobs=include_jobs))

    async def _handle_jwks(self, _request: web.Request) -> web.Response:
        return web.json_response(self.webhook_jwks())

    async def _handle_rotate(self, _request: web.Request) -> web.Response:
        """Rotate the webhook signing key; answers the new JWKS."""
        self.rotate_webhook_key()
        return web.json_response(self.webhook_jwks())

    async def _handle_get_config(self, _request: web.Request) -> web.Response:
        return web.json_response(self._runtime_view())

    async def _handle_post_config(self, request: web.Request) -> web.Response:
        """``{"fal_key": str | null, "faults": <Faults.from_json> | null, "webhook_drop_rate":
        number, "history_lists": "all" | "ended", "unit_price": number}``; keys left out stay.

        Answers the settings now in force (whether a key is set, never the key), or 400.
        """
        try:
            body = json.loads(await request.read())
        except (ValueError, RecursionError):
            return web.json_response({"detail": "Request body is not valid JSON"}, status=400)
        try:
            self.reconfigure(**_runtime_settings(body))
        except ValueError as exc:
            return web.json_response({"detail": str(exc)}, status=400)
        return web.json_response(self._runtime_view())

    async def _handle_file(self, request: web.Request) -> web.StreamResponse:
        """A succeeded job's output video (``media``), streamed a page at a time with its
        Content-Length, so a file of hundreds of MB is never held; HEAD answers the headers."""
        job = self._sim.lookup(request.match_info["request_id"])
        if (
            job is None
            or job.outcome is not Outcome.SUCCEEDED
            or job.plan.output is None
            or job.payloads_deleted
            or request.match_info["name"] != OUTPUT_FILE_NAME
        ):
            return web.json_response({"detail": "File not found"}, status=404)
        size: int = job.plan.output["video"]["file_size"]
        width, height = job.plan.frame_size
        response = web.StreamResponse(headers={"Content-Type": "video/mp4"})
        response.content_length = size
        await response.prepare(request)
        if request.method != "HEAD":
            for chunk in output_chunks(job.request_id, size, width=width, height=height):
                # write() waits while the client's socket is full: a slow reader holds a page.
                await response.write(chunk)
        await response.write_eof()
        return response


def _runtime_settings(body: object) -> dict[str, Any]:
    """The ``reconfigure`` arguments a ``POST /_emulator/config`` body gives: those of its keys
    ``fal_key``, ``faults``, ``webhook_drop_rate``, ``history_lists`` and ``unit_price`` that it
    has, checked."""
    # ValueError throughout, not TypeError: every bad body is the same 400.
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")  # noqa: TRY004
    known = {"fal_key", "faults", "webhook_drop_rate", "history_lists", "unit_price"}
    unknown = set(body) - known
    if unknown:
        raise ValueError(f"unknown keys: {', '.join(sorted(unknown))}")
    settings: dict[str, Any] = {}
    if "fal_key" in body:
        if not (body["fal_key"] is None or isinstance(body["fal_key"], str)):
            raise ValueError("fal_key must be a string or null")
        settings["fal_key"] = body["fal_key"]
    if "faults" in body:
        settings["faults"] = Faults.from_json(body["faults"])
    if "webhook_drop_rate" in body:
        settings["webhook_drop_rate"] = check_drop_rate(body["webhook_drop_rate"])
    if "history_lists" in body:
        settings["history_lists"] = check_history_lists(body["history_lists"])
    if "unit_price" in body:
        settings["unit_price"] = check_unit_price(body["unit_price"])
    return settings


def _job_record(job: Job, delivery: Delivery | None) -> dict[str, Any]:
    return {
        "request_id": job.request_id,
        "endpoint": job.endpoint,
        "subpath": job.subpath,
        "input": job.input,
        "headers_recorded": job.headers_recorded,
        "webhook": job.webhook,
        "low_priority": job.low_priority,
        # The deadline to start in seconds (None: none); a job past it ends start_timeout.
        "start_timeout": job.start_timeout,
        "submitted_at": datetime.fromtimestamp(job.submitted_wall, UTC).isoformat(),
        "state": job.phase.value,
        "outcome": None if job.outcome is None else job.outcome.value,
        # What it will end as unless cancelled or not started by its start timeout
        # (model_error when a model fault was injected).
        "planned_outcome": job.plan.outcome.value,
        "in_flight": job.in_flight,
        "faults": {endpoint: dict(counts) for endpoint, counts in job.faults.items()},
        # Deleted through the Platform API: the history shows no payloads, the file is gone.
        "payloads_deleted": job.payloads_deleted,
        # {"state", "attempts"} when the submit asked for a webhook (see ``webhooks``).
        "webhook_delivery": None if delivery is None else delivery.to_json(),
        # Billed when it ended (0 while running and when not billed); the amount at the unit
        # price then, so a price change never re-prices it.
        "billed_units": job.billed_units,
        "billed_amount": job.billed_amount,
    }


def _ensure_logging() -> None:
    # The CLI normally configures structlog; run bare, the emulator still speaks JSON lines.
    if not structlog.is_configured():
        structlog.configure(
            processors=[
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.processors.JSONRenderer(),
            ],
            wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        )


async def serve(config: EmulatorConfig, host: str, port: int) -> None:
    """Run an emulator until cancelled; logs ``emulator_listening`` with the base URL once bound."""
    _ensure_logging()
    emulator = FalEmulator(config)
    base_url = await emulator.start(host, port)
    try:
        _log.info(
            "emulator_listening",
            base_url=base_url,
            endpoints=list(config.endpoints),
            run_time=list(config.run_time),
            queue_wait=list(config.queue_wait),
            max_concurrent=config.max_concurrent,
            failure_rate=config.failure_rate,
            result_ttl=config.result_ttl,
            seed=config.seed,
            faults=config.faults.spec() or None,
            auth="fixed key" if config.fal_key is not None else "any key",
            jwks_url=emulator.jwks_url,
            api_url=emulator.api_url,
            history_lists=config.history_lists,
            webhook_kid=emulator.webhook_jwks()["keys"][-1]["kid"],
            webhook_user_id=config.webhook_user_id,
            webhook_retry_delays=list(config.webhook_retry_delays),
            webhook_drop_rate=config.webhook_drop_rate,
            unit_price=config.unit_price,
            bill_user_errors=config.bill_user_errors,
        )
        await asyncio.Event().wait()
    finally:
        await emulator.stop()
