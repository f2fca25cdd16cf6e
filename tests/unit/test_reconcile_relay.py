"""Submits whose answer was lost, settled with fal's request history, over fakes: adopted
when fal has the job, submitted again when it surely does not, and as before without a
history. The same cases run against real Kafka and the emulator in
tests/integration/test_reconcile.py; here the fake clock makes the give-up bound free."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from service.core.ledger import LedgerEntry, Source
from service.core.offsets import Partition
from service.core.reconcile import body_digest
from service.metrics import RelayMetrics
from tests.fakes import FakeClock, FakeFal, FakeHistory, FakeInbox, FakeOutbox
from tests.unit.test_relay import T0, request, running

GIVE_UP_S = 5.0
RECONCILE: dict[str, Any] = {
    "reconcile_interval": 0.05,
    "reconcile_give_up": GIVE_UP_S,
    "reconcile_skew": 1.0,
}


def fakes() -> tuple[FakeInbox, FakeOutbox, FakeFal, FakeHistory, FakeClock]:
    clock, fal = FakeClock(), FakeFal()
    fal.now = clock.now
    return FakeInbox(partitions=1), FakeOutbox(), fal, FakeHistory(fal), clock


def outcomes(metrics: RelayMetrics) -> dict[str, float]:
    return {
        outcome: metrics.reconciliations.labels(outcome)._value.get()
        for outcome in ("adopted", "submitted_again", "given_up")
    }


async def test_a_lost_answer_is_adopted_from_the_history_not_paid_again() -> None:
    inbox, outbox, fal, history, clock = fakes()
    metrics = RelayMetrics()
    fal.lose_answers = 1
    inbox.append(0, request("lost", "polls=2"))
    async with running(
        inbox, outbox, fal, clock=clock, history=history, metrics=metrics, **RECONCILE
    ):
        await outbox.wait_for(results=1)
    assert len(fal.jobs) == 1
    (event,) = outbox.results
    assert (event.status, event.fal_request_id) == ("succeeded", "fal-0")
    assert [(e.state, e.fal_id) for e in outbox.ledger] == [
        ("intent", None),
        ("submitted", "fal-0"),
        ("finished", "fal-0"),
    ]
    assert outbox.ledger[0].digest == body_digest(fal.submitted[0])
    assert outcomes(metrics) == {"adopted": 1, "submitted_again": 0, "given_up": 0}
    assert inbox.committed == {0: 1}


async def test_a_submit_that_created_nothing_is_sent_again_once_past_the_bound() -> None:
    inbox, outbox, fal, history, clock = fakes()
    metrics = RelayMetrics()
    fal.drop_submits = 1
    inbox.append(0, request("dropped"))
    async with running(
        inbox, outbox, fal, clock=clock, history=history, metrics=metrics, **RECONCILE
    ):
        await outbox.wait_for(results=1)
    assert len(fal.jobs) == 1  # one job, from the second submit
    assert outbox.results[0].status == "succeeded"
    intents = [e for e in outbox.ledger if e.state == "intent"]
    assert len(intents) == 2
    # Sent again only once the first intent was older than the bound (the history lists
    # queued jobs, so the bound is the smaller of the setting and a minute).
    assert intents[1].at - intents[0].at >= timedelta(seconds=GIVE_UP_S)
    assert outcomes(metrics) == {"adopted": 0, "submitted_again": 1, "given_up": 0}


async def test_identical_inputs_lost_together_adopt_two_jobs_each_once() -> None:
    inbox, outbox, fal, history, clock = fakes()
    fal.lose_answers = 2
    inbox.append(0, request("twin-a", "the same input"))
    inbox.append(0, request("twin-b", "the same input"))
    async with running(inbox, outbox, fal, clock=clock, history=history, **RECONCILE):
        await outbox.wait_for(results=2)
    assert len(fal.jobs) == 2
    assert {e.request_id: e.status for e in outbox.results} == {
        "twin-a": "succeeded",
        "twin-b": "succeeded",
    }
    assert sorted(e.fal_request_id or "" for e in outbox.results) == ["fal-0", "fal-1"]


async def test_a_history_outage_is_waited_out() -> None:
    inbox, outbox, fal, history, clock = fakes()
    fal.lose_answers = 1
    history.outages = 3
    inbox.append(0, request("patient"))
    async with running(inbox, outbox, fal, clock=clock, history=history, **RECONCILE):
        await outbox.wait_for(results=1)
    assert outbox.results[0].status == "succeeded"
    assert len(fal.jobs) == 1
    assert history.reads >= 1


def intent(rid: str, offset: int, body: Mapping[str, object]) -> LedgerEntry:
    return LedgerEntry(
        key=rid,
        state="intent",
        source=Source("requests", 0, offset),
        at=T0,
        digest=body_digest(body),
        received_at=T0,
        metadata={"from": "ledger"},
    )


async def test_an_intent_taken_over_is_adopted_when_fal_has_its_job() -> None:
    """A replica died between fal's answer and the ledger's: its successor finds the intent
    and fal's job in the history, and watches it; nothing is submitted."""
    inbox, outbox, fal, history, clock = fakes()
    body = {"image_url": "https://x/i.png", "prompt": "made before the crash"}
    await fal.submit(body)  # what the dead replica sent
    fal.submitted.clear()
    inbox.append(0, request("orphan", "made before the crash"))
    ledger = [intent("orphan", 0, body)]
    async with running(
        inbox, outbox, fal, clock=clock, history=history, ledger=ledger, **RECONCILE
    ) as relay:
        await relay.partitions_assigned({Partition(inbox.topic, 0)})
        await outbox.wait_for(results=1)
    assert fal.submitted == []
    (event,) = outbox.results
    assert (event.status, event.fal_request_id, event.metadata) == (
        "succeeded",
        "fal-0",
        {"from": "ledger"},
    )
    assert inbox.committed == {0: 1}


async def test_an_intent_taken_over_without_a_job_is_read_again_and_submitted() -> None:
    inbox, outbox, fal, history, clock = fakes()
    body = {"image_url": "https://x/i.png", "prompt": "never reached fal"}
    inbox.append(0, request("orphan", "never reached fal"))
    ledger = [intent("orphan", 0, body)]
    async with running(
        inbox, outbox, fal, clock=clock, history=history, ledger=ledger, **RECONCILE
    ) as relay:
        await relay.partitions_assigned({Partition(inbox.topic, 0)})
        await outbox.wait_for(results=1)
    assert [dict(s) for s in fal.submitted] == [body]
    assert outbox.results[0].status == "succeeded"
    assert inbox.committed == {0: 1}


async def test_without_a_history_a_lost_answer_fails_as_before_and_no_intent_is_written() -> None:
    inbox, outbox, fal, _history, clock = fakes()
    fal.lose_answers = 1
    inbox.append(0, request("unlucky"))
    async with running(inbox, outbox, fal, clock=clock, **RECONCILE) as relay:
        await outbox.wait_for(results=1)
        assert relay.fal_history_off is not None
    (event,) = outbox.results
    assert event.status == "failed"
    assert event.error is not None
    assert event.error.code == "fal_unavailable"
    assert [e.state for e in outbox.ledger] == ["finished"]


async def test_a_history_refused_at_start_turns_reconciling_off() -> None:
    inbox, outbox, fal, history, clock = fakes()
    metrics = RelayMetrics()
    history.refuse = True
    fal.lose_answers = 1
    inbox.append(0, request("unlucky"))
    async with running(
        inbox, outbox, fal, clock=clock, history=history, metrics=metrics, **RECONCILE
    ) as relay:
        await outbox.wait_for(results=1)
        assert relay.fal_history_off is not None
        assert "404" in relay.fal_history_off
    (event,) = outbox.results
    assert event.error is not None
    assert event.error.code == "fal_unavailable"
    assert metrics.fal_history_available._value.get() == 0
