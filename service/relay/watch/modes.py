"""The watcher for a ``RELAY_WATCH_MODE``."""

from __future__ import annotations

from typing import Literal

from service.core.polling import PollSchedule
from service.ports import Clock, VideoJobs
from service.relay.key_gate import KeyGate
from service.relay.watch import Watcher
from service.relay.watch.poll import PollWatcher
from service.relay.watch.stream import StreamWatcher
from service.relay.watch.webhook import Deliveries, WebhookWatcher


def watcher_for(
    mode: Literal["poll", "stream", "webhook"],
    *,
    fal: VideoJobs,
    gate: KeyGate,
    clock: Clock,
    poll: PollSchedule,
    safety_poll: float,
    webhook_grace: float,
) -> tuple[Watcher, Deliveries | None]:
    """The watcher, and where webhooks are delivered to (webhook mode only)."""
    poller = PollWatcher(fal, gate, clock, poll)
    if mode == "stream":
        return StreamWatcher(fal, clock, poller), None
    if mode == "webhook":
        hooks = WebhookWatcher(clock, poller, safety_poll=safety_poll, grace=webhook_grace)
        return hooks, hooks.deliveries
    return poller, None
