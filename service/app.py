"""The composition root: settings -> adapters -> relay, and the order of start and shutdown.

Start: ops endpoints (so probes answer early), producer, consumer, relay. Stop: the relay stops
intake, hands back and commits; then the consumer leaves the group (its partitions move at
once), the producer flushes, HTTP clients close, and the ops endpoints go last.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
from aiokafka.errors import KafkaError
from httpx_aiohttp import AiohttpTransport

from service.adapters.clock import SystemClock
from service.adapters.fal import FalQueue, parse_webhook
from service.adapters.fal_files import FalFiles
from service.adapters.fal_history import FalRequestHistory
from service.adapters.fal_pricing import FalPricing
from service.adapters.kafka import KafkaInbox, KafkaOutbox
from service.adapters.kafka_client import KafkaRefused, ensure_topics, probe
from service.adapters.ledger import KafkaLedger, LedgerMissing, ensure_ledger_topic
from service.adapters.ledger_checkpoint import CheckpointPlace
from service.adapters.object_store import ObjectStoreOutput
from service.adapters.ops_http import OpsServer
from service.adapters.webhooks import WebhookVerifier
from service.config import Settings, is_local_url
from service.core.budgets import Spent, spend_between
from service.core.ledger import LedgerSink, LedgerView, SpendLines
from service.core.polling import PollSchedule
from service.logs import get_logger
from service.metrics import RelayMetrics
from service.relay import Relay, RelayConfig
from service.relay.storage import KeepConfig

STARTUP_TIMEOUT_S = 30.0
_LIVENESS_STALE_S = 60.0


class StartupError(Exception):
    """The service could not start (e.g. Kafka unreachable); the message is one clear line."""


def fal_http_client(settings: Settings) -> httpx.AsyncClient:
    """The HTTP client for fal, with the transport the settings choose (see the README's
    'Performance' section for the measurement behind the default)."""
    # A job makes a handful of short calls, so few connections serve thousands of jobs; each
    # TLS connection holds ~128 KiB of buffers and costs a handshake (bench/results/latest.md).
    calls = min(settings.relay_fal_max_connections, max(settings.relay_max_in_flight, 8))
    # In stream mode every job in flight holds its status stream's connection for as long as it
    # runs: room for all of them on top, or submits and result calls would queue behind streams.
    streams = settings.relay_max_in_flight if settings.relay_watch_mode == "stream" else 0
    limits = httpx.Limits(max_connections=calls + streams, max_keepalive_connections=calls)
    transport: httpx.AsyncBaseTransport = (
        AiohttpTransport(limits=limits)
        if settings.relay_fal_http_transport == "aiohttp"
        else httpx.AsyncHTTPTransport(limits=limits)
    )
    return httpx.AsyncClient(
        transport=transport,
        headers={"Authorization": f"Key {settings.fal_key_value}"},
        timeout=httpx.Timeout(30.0, connect=10.0),
    )


SinkT = TypeVar("SinkT", bound=LedgerSink)


async def read_ledger(settings: Settings, reader: str, sink: SinkT) -> SinkT:
    """Read the whole job ledger into ``sink`` (for the CLI's ``spend``, ``requests show`` and
    ``dlq redrive``), as a replica would at start."""
    ledger = KafkaLedger(settings, sink, writer=reader)
    try:
        # Wall-clock on purpose: a bound on connecting from a command line; the read itself
        # may take minutes on a large ledger (Ctrl-C stops it).
        async with asyncio.timeout(STARTUP_TIMEOUT_S):
            await ledger.connect()
        await ledger.read()
    except (KafkaError, OSError, TimeoutError, LedgerMissing) as exc:
        raise StartupError(
            f"cannot read the job ledger {settings.relay_jobs_topic} "
            f"(KAFKA_BOOTSTRAP_SERVERS={settings.kafka_bootstrap_servers}): "
            f"{str(exc) or type(exc).__name__}"
        ) from None
    finally:
        await ledger.stop()
    return sink


async def read_spend(settings: Settings, since: datetime, until: datetime) -> dict[str, Spent]:
    """Spend per tenant in ``[since, until)``, from the job ledger's finished entries (what
    ``lynx-relay spend`` prints)."""
    retention = timedelta(seconds=settings.relay_dedupe_retention_s)
    lines = await read_ledger(settings, "lynx-relay spend", SpendLines(retention, since, until))
    return spend_between(lines.lines, since, until)


def checkpoint_place(s: Settings) -> CheckpointPlace | None:
    """Where the ledger view's checkpoint is kept; None when RELAY_LEDGER_CHECKPOINT_DIR is
    unset."""
    if s.relay_ledger_checkpoint_dir is None:
        return None
    return CheckpointPlace(
        folder=s.relay_ledger_checkpoint_dir,
        topic=s.relay_jobs_topic,
        retention=timedelta(seconds=s.relay_dedupe_retention_s),
        budget_day=timedelta(seconds=s.relay_budget_day_s),
        max_age=timedelta(seconds=s.relay_ledger_checkpoint_max_age_s),
    )


def keep_config(s: Settings) -> KeepConfig | None:
    """Output storage as the relay is told it; None when RELAY_OUTPUT_URL is unset."""
    if s.relay_output_url is None:
        return None
    return KeepConfig(
        prefix=urlsplit(s.relay_output_url).path,
        key_template=s.relay_output_key_template,
        event_url=s.relay_output_event_url,
        presign_ttl_s=s.relay_output_presign_ttl_s,
        max_copies=s.relay_output_max_copies,
        retry_window_s=s.relay_output_retry_s,
        on_failure=s.relay_output_on_failure,
        delete_at_fal=s.relay_fal_delete_after_copy,
    )


class RelayService:
    """One relay process. ``run()`` returns after a clean shutdown (``stop()``)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = RelayMetrics(settings.relay_price_per_video_second)
        self.ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._relay: Relay | None = None
        self._ops: OpsServer | None = None
        self._log = get_logger()
        self._clock = SystemClock()

    @property
    def ops_port(self) -> int | None:
        return self._ops.port if self._ops else None

    def stop(self) -> None:
        self._stop.set()
        if self._relay is not None:
            self._relay.request_stop()

    def _is_live(self) -> bool:
        relay = self._relay
        if relay is None or not relay.running:
            return True  # starting or stopping: not wedged
        return self._clock.monotonic() - relay.last_loop_at < _LIVENESS_STALE_S

    def _webhook_delivered(self, fal_request_id: str, body: dict[str, Any]) -> None:
        if self._relay is not None:
            status, output = parse_webhook(body)
            self._relay.webhook_delivered(fal_request_id, status, output)

    def _ready_detail(self) -> dict[str, Any]:
        relay = self._relay
        if relay is None:
            return {}
        off = relay.fal_history_off
        return {"fal_history": "on" if off is None else f"off: {off}"}

    def _is_ready(self) -> bool:
        relay = self._relay
        return (
            relay is not None
            and relay.running
            and not relay.fal_key_refused
            and not relay.failing_writes
            and not self._stop.is_set()
        )

    async def _output_storage(
        self, stack: contextlib.AsyncExitStack, http: httpx.AsyncClient
    ) -> tuple[ObjectStoreOutput | None, FalFiles | None]:
        """The output store and fal's files, when RELAY_OUTPUT_URL is set."""
        s = self.settings
        if s.relay_output_url is None:
            return None, None
        store = ObjectStoreOutput(
            s.relay_output_url,
            endpoint_url=s.relay_output_endpoint_url,
            region=s.relay_output_region,
            part_mib=s.relay_output_part_mib,
        )
        # obstore's Tokio threads may still call back into the event loop just after a copy
        # (a stream's last poll): closing the loop under them aborted the process (exit 134)
        # in a repro (bench/results/storage-clients.md). A moment's grace at shutdown, last.
        stack.push_async_callback(asyncio.sleep, 0.1)
        # fal's CDN gets a client without our fal key (the video's URL is public).
        cdn = await stack.enter_async_context(
            httpx.AsyncClient(limits=httpx.Limits(max_connections=s.relay_output_max_copies * 2))
        )
        return store, FalFiles(cdn, http, api_url=s.fal_api_url, metrics=self.metrics)

    async def run(self) -> None:
        s = self.settings
        clock = self._clock
        async with contextlib.AsyncExitStack() as stack:
            http = await stack.enter_async_context(fal_http_client(s))
            webhook_mode = s.relay_watch_mode == "webhook"
            fal = FalQueue(
                http,
                base_url=s.fal_queue_url,
                endpoint=s.fal_endpoint,
                metrics=self.metrics,
                webhook_url=s.relay_webhook_url if webhook_mode else None,
                with_logs=s.relay_progress_topic is not None,
                output_ttl_s=s.relay_fal_output_ttl_s,
                store_io=s.relay_fal_store_io,
            )
            store, files = await self._output_storage(stack, http)
            webhooks = None
            if webhook_mode:
                # Keys are fetched without our fal key: the JWKS is public.
                jwks_http = await stack.enter_async_context(httpx.AsyncClient())
                verifier = WebhookVerifier(jwks_http, s.fal_jwks_url, clock)
                webhooks = (verifier, self._webhook_delivered)
            self._ops = OpsServer(
                self.metrics.registry,
                is_live=self._is_live,
                is_ready=self._is_ready,
                ready_detail=self._ready_detail,
                webhooks=webhooks,
            )
            try:
                await self._ops.start(s.relay_http_host, s.relay_http_port)
            except OSError as exc:
                # A port already taken is a setting to change, not a crash.
                raise StartupError(
                    f"cannot listen on RELAY_HTTP_HOST={s.relay_http_host} "
                    f"RELAY_HTTP_PORT={s.relay_http_port}: {exc.strerror or exc}"
                ) from None
            stack.push_async_callback(self._ops.stop)

            writer = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
            # A stable transactional id (with RELAY_GROUP_INSTANCE_ID) lets a restarted replica
            # fence its predecessor's producer and abort its open transaction at once.
            instance = s.relay_group_instance_id or uuid.uuid4().hex
            outbox = KafkaOutbox(
                s, transactional_id=f"lynx-relay:{s.relay_group_id}:{instance}", writer=writer
            )
            view = LedgerView(
                timedelta(seconds=s.relay_dedupe_retention_s),
                budget_day=timedelta(seconds=s.relay_budget_day_s),
                whole=s.relay_ledger_scope == "all",
            )
            ledger = KafkaLedger(s, view, writer, checkpoint=checkpoint_place(s))
            inbox = KafkaInbox(s, self.metrics)
            relay = Relay(
                inbox=inbox,
                outbox=outbox,
                fal=fal,
                ledger=ledger,
                view=view,
                clock=clock,
                metrics=self.metrics,
                config=RelayConfig(
                    max_in_flight=s.relay_max_in_flight,
                    poll=PollSchedule(s.relay_poll_min_interval_s, s.relay_poll_max_interval_s),
                    job_timeout=s.relay_job_timeout_s,
                    shutdown_grace=s.relay_shutdown_grace_s,
                    commit_interval=s.relay_commit_interval_s,
                    watch_mode=s.relay_watch_mode,
                    webhook_safety_poll=s.relay_webhook_safety_poll_s,
                    input_policy=s.input_policy,
                    progress=s.relay_progress_topic is not None,
                    progress_min_interval=s.relay_progress_min_interval_s,
                    progress_max_logs=s.relay_progress_max_logs,
                    fal_concurrency=s.relay_fal_concurrency,
                    tenants=s.tenants,
                    backlog_max=s.relay_backlog_max_requests,
                    backlog_body_bytes=s.relay_backlog_body_bytes,
                    priority_aging=s.relay_priority_aging_s,
                    history_off=s.fal_history_off,
                    reconcile_interval=s.relay_reconcile_interval_s,
                    reconcile_give_up=s.relay_reconcile_give_up_s,
                    reconcile_skew=s.relay_reconcile_skew_s,
                    fallback_unit_price=s.relay_price_per_video_second,
                    budget_pace=s.relay_budget_pace_s,
                    output=keep_config(s),
                ),
                store=store,
                files=files,
                history=FalRequestHistory(
                    http, api_url=s.fal_api_url, endpoint=s.fal_endpoint, metrics=self.metrics
                ),
                # Same key and the same reason not to send a placeholder key to fal.
                pricing=None
                if s.fal_key is None and not is_local_url(s.fal_api_url)
                else FalPricing(
                    http, api_url=s.fal_api_url, endpoint=s.fal_endpoint, metrics=self.metrics
                ),
            )
            try:
                await probe(s)
            except KafkaRefused as exc:
                raise StartupError(str(exc)) from None
            async with self._kafka_started("admin client"):
                if s.relay_create_jobs_topic:
                    await ensure_ledger_topic(s)
                if s.relay_create_topics:
                    await ensure_topics(s)
            async with self._kafka_started("producer"):
                await outbox.start()
            stack.push_async_callback(outbox.stop)
            async with self._kafka_started("ledger reader"):
                await ledger.connect()
            stack.push_async_callback(ledger.stop)
            # Not within the connect bound: reading a large ledger whole takes minutes (README
            # "How much a replica holds"); the orchestrator's startup probe bounds it.
            async with self._kafka_started("ledger reader", bounded=False):
                await ledger.read()
            async with self._kafka_started("consumer"):
                await inbox.start(listener=relay)
            stack.push_async_callback(inbox.stop)
            if self._stop.is_set():
                return
            self._relay = relay
            self._log.info(
                "relay_started",
                requests_topic=s.relay_requests_topic,
                results_topic=s.relay_results_topic,
                group_id=s.relay_group_id,
                max_in_flight=s.relay_max_in_flight,
                fal_endpoint=s.fal_endpoint,
                fal_queue_url=s.fal_queue_url,
                http_port=self._ops.port,
            )
            self.ready.set()
            await relay.run()

    @contextlib.asynccontextmanager
    async def _kafka_started(self, what: str, *, bounded: bool = True) -> AsyncIterator[None]:
        servers = self.settings.kafka_bootstrap_servers
        try:
            # Wall-clock on purpose: a bound on connecting to real Kafka at process start.
            async with asyncio.timeout(STARTUP_TIMEOUT_S if bounded else None):
                yield
        except (KafkaError, OSError, TimeoutError, LedgerMissing) as exc:
            detail = str(exc) or type(exc).__name__
            raise StartupError(
                f"cannot start the Kafka {what} (KAFKA_BOOTSTRAP_SERVERS={servers}): {detail}"
            ) from None
