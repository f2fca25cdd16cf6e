"""Settling submits whose outcome is unknown, with fal's request history: the shell of
``service.core.reconcile``.

A job whose submit answer was lost (or whose intent a take-over found with nothing after it)
asks ``settle``; while any such job waits, one loop reads the history window every
``RELAY_RECONCILE_INTERVAL_S`` and answers them all: the fal request id to adopt, or None
("not there past the bound: submit again"). One read serves every open intent.

Which intents take part in the matching: every intent in the ledger view, this replica's and
the others' (the count rule needs them all), except the digests of this replica's own submits
still in flight: their answer may yet name one of the listed requests, so those digests wait
for the next round. The ledger's fal request ids (submitted and finished entries) are never
adopted again.

Without the history (switched off, or 401/403/404 there, at start or later), jobs are not
reconciled: the caller behaves as before the history existed. ``off_reason`` says why, for
``/readyz``; one log line says it when it happens.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta

from service.core.backoff import Backoff
from service.core.jobs import JobEvent
from service.core.ledger import FalRef, LedgerView
from service.core.reconcile import (
    Intent,
    Seen,
    Verdict,
    body_digest,
    give_up_bound,
    history_window,
    match,
    unmatched,
)
from service.decoding import InputPolicy, decode_request
from service.errors import FalError, FalHistoryRefused, FalUnauthorized, FalUnavailable
from service.messages import VideoRequest
from service.ports import FalHistory, FalHistoryItem, Inbox, VideoJobs
from service.relay.context import JobContext, Jobs
from service.relay.submit import Submitter
from service.relay.tools import Tools

_PROBE_SPAN = timedelta(minutes=1)


class HistoryOff(FalUnavailable):
    """fal's history cannot settle this submit (off or refused): it ends as before."""


@dataclass(slots=True)
class _Open:
    intent: Intent
    answer: asyncio.Future[str | None]
    since: float  # monotonic, for the time to resolve


class Reconciler:
    def __init__(
        self,
        tools: Tools,
        *,
        history: FalHistory | None,
        off_reason: str | None,
        view: LedgerView,
        jobs: Jobs,
        interval: float,
        give_up_after: float,
        skew: float,
    ) -> None:
        self._history = history
        if history is None and off_reason is None:
            off_reason = "no request history given"
        self.off_reason = off_reason
        self._view = view
        self._jobs = jobs
        self._interval = interval
        self._give_up_after = timedelta(seconds=give_up_after)
        self._skew = timedelta(seconds=skew)
        self._clock = tools.clock
        self._metrics = tools.metrics
        self._log = tools.log
        self._open: dict[str, _Open] = {}
        self._wake = asyncio.Event()
        self._lists_unended = False  # seen: the history lists jobs before they end
        self._metrics.fal_history_available.set(1 if self.available else 0)

    @property
    def available(self) -> bool:
        return self.off_reason is None

    async def probe(self) -> None:
        """At start: one small read. Refused: off from here, said once. Any other failure
        leaves it on (the history is asked again when a submit needs it)."""
        if self._history is None or not self.available:
            self._say_off()
            return
        now = self._clock.now()
        try:
            await self._history.requests(now - _PROBE_SPAN, now)
        except (FalUnauthorized, FalHistoryRefused) as exc:
            self._turn_off(exc)
        except FalError as exc:
            self._log.warning("fal_history_probe_failed", error=exc.message)

    async def settle(self, intent: Intent) -> str | None:
        """The fal request id the history shows for ``intent`` (to adopt), or None: it was
        not there long enough to say fal never created it (submit again). Raises
        ``HistoryOff`` when the history cannot answer."""
        if not self.available:
            self._metrics.reconciliations.labels("given_up").inc()
            raise HistoryOff(f"fal's request history is off ({self.off_reason})")
        answer: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._open[intent.request_id] = _Open(intent, answer, self._clock.monotonic())
        self._metrics.reconciliations_started.inc()
        self._wake.set()
        try:
            return await answer
        finally:
            self._open.pop(intent.request_id, None)

    async def run(self) -> None:
        """The loop that reads the history while intents wait (a background task)."""
        backoff = Backoff(self._interval, max(self._interval, 60.0))
        while self.available:
            if not self._open:
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                await self._round()
            except (FalUnauthorized, FalHistoryRefused) as exc:
                self._turn_off(exc)
                return
            except FalError as exc:
                delay = backoff.next()
                self._log.warning("fal_history_read_failed", error=exc.message, retry_in_s=delay)
                await self._clock.sleep(delay)
                continue
            backoff.reset()
            await self._clock.sleep(self._interval)

    async def _round(self) -> None:
        assert self._history is not None
        now = self._clock.now()
        waiting = {rid: o for rid, o in self._open.items() if not o.answer.done()}
        window = history_window((o.intent for o in waiting.values()), now, self._skew)
        if window is None:
            return
        items = await self._history.requests(*window)
        now = self._clock.now()
        self._lists_unended |= any(item.ended_at is None for item in items)
        seen = [s for item in items if (s := _seen(item, window[0])) is not None]
        intents = {e.key: Intent(e.key, e.digest or "", e.at) for e in self._view.intents()}
        intents.update((rid, o.intent) for rid, o in waiting.items())
        # This replica's submits in flight (or adoptions being recorded): their answers may
        # name a listed request, so their digests wait for the next round.
        busy = {i.digest for rid, i in intents.items() if rid in self._jobs and rid not in waiting}
        pairs = match(
            [i for i in intents.values() if i.digest not in busy],
            seen,
            self._view.claimed(),
            self._skew,
        )
        bound = give_up_bound(self._lists_unended, self._give_up_after, self._skew)
        for rid, o in waiting.items():
            if o.answer.done():
                continue  # its job was cancelled while the history was read
            fal_id = pairs.get(rid)
            if fal_id is not None:
                self._resolved(o, fal_id, "adopted")
            elif unmatched(o.intent, now, bound) is Verdict.SUBMIT_AGAIN:
                self._resolved(o, None, "submitted_again")

    def _resolved(self, o: _Open, fal_id: str | None, outcome: str) -> None:
        o.answer.set_result(fal_id)
        self._metrics.reconciliations.labels(outcome).inc()
        self._metrics.reconcile_seconds.observe(self._clock.monotonic() - o.since)
        self._log.info(
            "reconciled", request_id=o.intent.request_id, outcome=outcome, fal_request_id=fal_id
        )

    def _turn_off(self, exc: FalError) -> None:
        self.off_reason = f"FAL_API_URL refused the request history: {exc.message}"
        self._say_off()
        for o in list(self._open.values()):
            if not o.answer.done():
                o.answer.set_exception(HistoryOff(f"fal's request history is off: {exc.message}"))
                self._metrics.reconciliations.labels("given_up").inc()

    def _say_off(self) -> None:
        self._metrics.fal_history_available.set(0)
        self._log.warning(
            "fal_history_off",
            reason=self.off_reason,
            effect="a submit whose answer is lost fails as fal_unavailable",
        )


class LostSubmits:
    """What a job whose submit's outcome is unknown does with the reconciler's answer: the
    fal job it found is adopted (its ``submitted`` entry written), or the job is made ready to
    be submitted again, its body read again from Kafka when this replica never had it."""

    def __init__(
        self,
        tools: Tools,
        *,
        reconciler: Reconciler,
        fal: VideoJobs,
        submitter: Submitter,
        jobs: Jobs,
        inbox: Inbox,
        policy: InputPolicy,
    ) -> None:
        self._reconciler = reconciler
        self._fal = fal
        self._submitter = submitter
        self._jobs = jobs
        self._inbox = inbox
        self._policy = policy
        self._clock = tools.clock

    async def settle(self, ctx: JobContext) -> FalRef | None:
        """Ask fal's history about the job's intent: its fal job, adopted and recorded; or
        None, having made the job ready to be submitted again."""
        assert ctx.intent is not None
        try:
            fal_id = await self._reconciler.settle(ctx.intent)
        except HistoryOff:
            if ctx.request is not None:
                raise  # a lost answer without a history: fal_unavailable, as before
            fal_id = None  # taken over: without a history it was always submitted again
        if fal_id is not None:
            ref = self._fal.ref_for(fal_id)
            await self._submitter.record(ctx, ref)
            ctx.log = ctx.log.bind(fal_request_id=fal_id)
            ctx.log.info("job_adopted")
            return ref
        if ctx.request is None:
            ctx.request = await self._read_again(ctx)
        ctx.intent = None
        self._jobs.advance(ctx.request_id, JobEvent.RESUBMIT, self._clock.now())
        ctx.log.info("job_submitting_again")
        return None

    async def _read_again(self, ctx: JobContext) -> VideoRequest:
        """The request's body from its record (a job taken over from its intent)."""
        backoff = Backoff(0.5, 10.0)
        while True:
            try:
                record = await self._inbox.read(ctx.part, ctx.source.offset)
                break
            except Exception as exc:  # Kafka cannot answer now; a hand-back cancels the wait
                delay = backoff.next()
                ctx.log.warning("request_read_failed", error=repr(exc), retry_in_s=delay)
                await self._clock.sleep(delay)
        decoded = decode_request(record.value, self._policy) if record is not None else None
        if not isinstance(decoded, VideoRequest) or decoded.request_id != ctx.request_id:
            raise FalUnavailable(
                "fal's history shows no job for this request and its record can no longer be "
                "read to submit it again",
                retryable=True,
            )
        return decoded


def _seen(item: FalHistoryItem, since: datetime) -> Seen | None:
    """A history item as the matching sees it; None without its input (payloads deleted)."""
    if item.json_input is None:
        return None
    # Without a send time it may still be ours: dated at the window's start, it can match
    # only the oldest intents.
    return Seen(item.request_id, body_digest(item.json_input), item.sent_at or since)
