"""The relay loop over fakes: concurrency, commits, dead letters, duplicates and shutdown.

The same behaviours are checked against real Kafka and the emulator in tests/integration;
here they run in milliseconds and can force the awkward interleavings.
"""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from service.adapters.ledger_codec import decode_entry, encode_entry
from service.core.ledger import FalRef, LedgerEntry, LedgerView, Source
from service.core.offsets import Partition
from service.core.polling import PollSchedule
from service.messages import VideoRequest
from service.metrics import RelayMetrics
from service.ports import (
    FalOutput,
    FalPhase,
    FalStatus,
    OutputStore,
    SubmitOptions,
    VideoFiles,
)
from service.relay import Relay, RelayConfig
from service.tenants import TenantPolicy, Tenants
from tests.fakes import (
    FakeClock,
    FakeFal,
    FakeHistory,
    FakeInbox,
    FakeLedgerFeed,
    FakeOutbox,
    FakePricing,
)


def request(rid: str, prompt: str = "a pumpkin", **extra: Any) -> bytes:
    body = {"request_id": rid, "input": {"image_url": "https://x/i.png", "prompt": prompt}}
    return json.dumps({**body, **extra}).encode()


@asynccontextmanager
async def running(
    inbox: FakeInbox,
    outbox: FakeOutbox,
    fal: FakeFal,
    limit: int = 3,
    ledger: list[LedgerEntry] | None = None,
    preloaded: bool = False,
    clock: FakeClock | None = None,
    metrics: RelayMetrics | None = None,
    history: FakeHistory | None = None,
    pricing: FakePricing | None = None,
    store: OutputStore | None = None,
    files: VideoFiles | None = None,
    **cfg: Any,
) -> AsyncIterator[Relay]:
    """A relay over the fakes; ``ledger`` is what a previous process left in the ledger, read
    when partitions are assigned (the test says when, as Kafka would), or already read at
    start (``preloaded``, as the app does before the relay runs)."""
    view = LedgerView(timedelta(days=7))
    for entry in ledger or [] if preloaded else []:
        view.apply(entry.key, entry)
    clock = clock or FakeClock()
    inbox.clock = clock
    relay = Relay(
        inbox=inbox,
        outbox=outbox,
        fal=fal,
        ledger=FakeLedgerFeed(view, ledger),
        view=view,
        clock=clock,
        metrics=metrics or RelayMetrics(),
        config=RelayConfig(max_in_flight=limit, poll=PollSchedule(0.01, 0.05), **cfg),
        history=history,
        pricing=pricing,
        store=store,
        files=files,
    )
    task = asyncio.create_task(relay.run())
    try:
        yield relay
    finally:
        relay.request_stop()
        async with asyncio.timeout(10):
            await task
    assert inbox.commit_violations == []


async def test_out_of_order_jobs_all_publish_and_commit_to_the_log_end() -> None:
    inbox, outbox, fal = FakeInbox(), FakeOutbox(), FakeFal()
    for i in range(30):
        inbox.append(i % 3, request(f"r{i}", f"polls={1 + (i * 7) % 5}"))
    async with running(inbox, outbox, fal, limit=4):
        await outbox.wait_for(results=30)
    assert sorted(e.request_id for e in outbox.results) == sorted(f"r{i}" for i in range(30))
    assert {e.status for e in outbox.results} == {"succeeded"}
    assert fal.peak_in_flight == 4
    assert inbox.committed == {0: 10, 1: 10, 2: 10}


async def test_never_more_jobs_at_fal_than_the_limit_across_many_partitions() -> None:
    inbox, outbox, fal = FakeInbox(partitions=6), FakeOutbox(), FakeFal()
    for i in range(60):
        inbox.append(i % 6, request(f"r{i}", "polls=3"))
    async with running(inbox, outbox, fal, limit=2):
        await outbox.wait_for(results=60)
    assert fal.peak_in_flight == 2
    assert len(fal.submitted) == 60


async def test_a_record_fetched_past_the_bound_is_rewound_not_taken() -> None:
    """With the slot taken and the backlog full, intake pauses; a partition assigned while
    paused still delivers a record: it is rewound, not queued or started."""
    inbox, outbox, fal = FakeInbox(partitions=1), FakeOutbox(), FakeFal()
    inbox.append(0, request("first", "hold"))
    inbox.append(0, request("second"))
    async with running(inbox, outbox, fal, limit=1, backlog_max=1) as relay:
        await fal.wait_submitted(1)
        inbox.append(1, request("late"))
        inbox.assign_on_next_fetch = 1
        async with asyncio.timeout(10):
            await inbox.rewound.wait()
        assert len(fal.submitted) == 1
        assert relay.waiting == 1  # "second" waits for the slot
    assert fal.peak_in_flight == 1
    assert inbox.committed == {}


async def test_invalid_messages_go_to_dead_letters_and_the_partition_keeps_flowing() -> None:
    inbox, outbox, fal = FakeInbox(partitions=1), FakeOutbox(), FakeFal()
    inbox.append(0, b"not json")
    inbox.append(0, request("bad-1", num_frames=3))  # unknown top-level field
    inbox.append(0, request("good-1"))
    async with running(inbox, outbox, fal):
        await outbox.wait_for(results=2, dead_letters=2)
    assert [(r.offset, code) for r, code, _m in outbox.dead_letters] == [
        (0, "not_json"),
        (1, "schema"),
    ]
    events = {e.request_id: e for e in outbox.results}
    assert events["bad-1"].error is not None
    assert events["bad-1"].error.code == "invalid_request"
    assert events["good-1"].status == "succeeded"
    assert inbox.committed == {0: 3}
    assert len(fal.submitted) == 1


async def test_a_duplicate_request_id_starts_no_second_job_and_adds_no_event() -> None:
    inbox, outbox, fal = FakeInbox(partitions=2), FakeOutbox(), FakeFal()
    inbox.append(0, request("same", "polls=3"))
    inbox.append(1, request("same", "polls=3"))
    inbox.append(1, request("other"))
    async with running(inbox, outbox, fal):
        await outbox.wait_for(results=2)
    assert sorted(e.request_id for e in outbox.results) == ["other", "same"]
    assert len(fal.submitted) == 2
    assert inbox.committed == {0: 1, 1: 2}  # the skipped duplicate's offset is committed too


async def test_failed_jobs_publish_a_failed_event_with_fals_details() -> None:
    inbox, outbox, fal = FakeInbox(partitions=1), FakeOutbox(), FakeFal()
    inbox.append(0, request("boom", "please fail", metadata={"t": 1}))
    async with running(inbox, outbox, fal):
        await outbox.wait_for(results=1)
    event = outbox.results[0]
    assert event.status == "failed"
    assert event.error is not None
    assert (event.error.code, event.error.details) == ("fal_failed", {"status_code": 500})
    assert event.metadata == {"t": 1}
    assert event.fal_request_id == "fal-0"


async def test_a_result_is_never_dropped_when_kafka_refuses_it_for_a_while() -> None:
    inbox, outbox, fal = FakeInbox(partitions=1), FakeOutbox(failures_to_inject=3), FakeFal()
    inbox.append(0, request("r"))
    async with running(inbox, outbox, fal):
        await outbox.wait_for(results=1)
    assert [e.request_id for e in outbox.results] == ["r"]


async def test_shutdown_abandons_jobs_at_fal_and_commits_only_finished_ones() -> None:
    inbox, outbox, fal = FakeInbox(partitions=1), FakeOutbox(), FakeFal()
    inbox.append(0, request("quick"))
    inbox.append(0, request("slow", "hold"))
    inbox.append(0, request("quick-2"))
    async with running(inbox, outbox, fal):
        await outbox.wait_for(results=2)
    assert sorted(e.request_id for e in outbox.results) == ["quick", "quick-2"]
    assert inbox.committed == {0: 1}  # "slow" (offset 1) is not finished: its offset stays
    assert fal.cancelled == []  # a job let go on shutdown is left running at fal ...
    slow = [e for e in outbox.ledger if e.key == "slow"]
    assert [e.state for e in slow] == ["submitted"]  # ... and the ledger knows where it is
    assert slow[0].fal is not None
    assert slow[0].source == Source(inbox.topic, 0, 1)


async def test_revoked_partitions_commit_their_finished_prefix_and_drop_their_jobs() -> None:
    """On revoke the relay commits what is finished in the lost partitions, abandons their
    jobs still at fal (the new owner takes them up), and keeps working the others."""
    inbox, outbox, fal = FakeInbox(partitions=2), FakeOutbox(), FakeFal()
    inbox.append(0, request("p0-done"))
    inbox.append(0, request("p0-held", "hold"))
    inbox.append(1, request("p1-held", "hold"))
    async with running(inbox, outbox, fal, limit=4) as relay:
        await outbox.wait_for(results=1)
        await fal.wait_submitted(3)
        assert relay.in_flight == 2
        await relay.partitions_revoked({Partition(inbox.topic, 0)})
        assert inbox.committed == {0: 1}
        # Partition 1 is still ours: its held job keeps its slot; p0-held gave its slot back.
        assert relay.in_flight == 1
        inbox.append(1, request("p1-next"))
        await outbox.wait_for(results=2)
    assert sorted(e.request_id for e in outbox.results) == ["p0-done", "p1-next"]
    assert inbox.committed == {0: 1}  # p1-held (offset 0) never finished


T0 = datetime(2026, 11, 24, tzinfo=UTC)


def submitted(rid: str, offset: int, fal_id: str, partition: int = 0) -> LedgerEntry:
    return LedgerEntry(
        key=rid,
        state="submitted",
        source=Source("requests", partition, offset),
        at=T0,
        fal=FalRef(fal_id, f"s/{fal_id}", f"r/{fal_id}", f"c/{fal_id}"),
        received_at=T0,
        metadata={"from": "ledger"},
    )


async def test_jobs_in_the_ledger_are_resumed_at_assignment_never_resubmitted() -> None:
    """After a crash, the new owner of a partition watches the job the ledger names: no
    second submit; the record's offset commits once the job's result is out."""
    fal = FakeFal()
    fal.already_running("fal-earlier", prompt="polls=2")
    inbox, outbox = FakeInbox(partitions=1), FakeOutbox()
    inbox.append(0, request("again", metadata={"from": "record"}))
    ledger = [submitted("again", 0, "fal-earlier")]
    async with running(inbox, outbox, fal, ledger=ledger) as relay:
        # The record is there before the ledger is read: it must wait for the catch-up.
        await relay.partitions_assigned({Partition(inbox.topic, 0)})
        await outbox.wait_for(results=1)
        await inbox.drained.wait()
    assert fal.submitted == []
    (event,) = outbox.results
    assert (event.request_id, event.status, event.fal_request_id) == (
        "again",
        "succeeded",
        "fal-earlier",
    )
    assert event.metadata == {"from": "ledger"}
    assert inbox.committed == {0: 1}


async def test_a_record_whose_job_is_finished_in_the_ledger_is_skipped() -> None:
    """A crash between publishing a result and committing its offset redelivers the record;
    the ledger's finished entry (written with the result) means nothing happens twice."""
    fal, inbox, outbox = FakeFal(), FakeInbox(partitions=1), FakeOutbox()
    inbox.append(0, request("done-before"))
    inbox.append(0, b"not json")
    inbox.append(0, request("new"))
    finished = LedgerEntry(
        key="done-before",
        state="finished",
        source=Source("requests", 0, 0),
        at=T0,
        status="succeeded",
    )
    rejected = LedgerEntry(
        key=Source("requests", 0, 1).key, state="rejected", source=Source("requests", 0, 1), at=T0
    )
    async with running(inbox, outbox, fal, ledger=[finished, rejected]) as relay:
        await relay.partitions_assigned({Partition(inbox.topic, 0)})
        await outbox.wait_for(results=1)
        await inbox.drained.wait()
    assert [e.request_id for e in outbox.results] == ["new"]
    assert outbox.dead_letters == []
    assert len(fal.submitted) == 1
    assert inbox.committed == {0: 3}


async def test_a_bad_message_reusing_a_running_requests_id_adds_no_event() -> None:
    """Exactly one terminal event per accepted request: an invalid message with the same
    request_id is dead-lettered, but publishes no failed event for it."""
    inbox, outbox, fal = FakeInbox(partitions=1), FakeOutbox(), FakeFal()
    inbox.append(0, request("busy", "polls=5"))
    inbox.append(0, request("busy", num_frames=1))  # unknown top-level field
    async with running(inbox, outbox, fal):
        await outbox.wait_for(results=1, dead_letters=1)
    assert [(e.request_id, e.status) for e in outbox.results] == [("busy", "succeeded")]


async def test_a_fal_outage_while_watching_does_not_abandon_the_paid_job() -> None:
    inbox, outbox, fal = FakeInbox(partitions=1), FakeOutbox(), FakeFal()
    fal.status_outages = 4
    inbox.append(0, request("patient", "polls=2"))
    async with running(inbox, outbox, fal):
        await outbox.wait_for(results=1)
    assert outbox.results[0].status == "succeeded"
    assert fal.status_outages == 0
    assert len(fal.submitted) == 1


async def test_a_job_at_fal_keeps_no_copy_of_its_request() -> None:
    # The input (a data URI can be megabytes) is needed only until fal has the job, which then
    # runs for minutes: thousands in flight must not hold thousands of inputs.
    inbox, outbox, fal = FakeInbox(partitions=1), FakeOutbox(), FakeFal()
    inbox.append(0, request("held", "hold"))
    async with running(inbox, outbox, fal):
        await fal.wait_polled("fal-0")
        gc.collect()
        kept = [o for o in gc.get_objects() if isinstance(o, VideoRequest)]
        assert [r.request_id for r in kept] == []
        assert [a["prompt"] for a in fal.submitted] == ["hold"]


def cancel(rid: str) -> bytes:
    return json.dumps({"request_id": rid, "action": "cancel"}).encode()


async def test_cancel_before_submit_means_never_submitted_and_one_cancelled_event() -> None:
    inbox, outbox, fal = FakeInbox(partitions=1), FakeOutbox(), FakeFal()
    inbox.append(0, cancel("early"))
    inbox.append(0, request("early"))  # arrives after its cancel
    async with running(inbox, outbox, fal):
        await outbox.wait_for(results=1)
        await inbox.drained.wait()
    assert [(e.request_id, e.status) for e in outbox.results] == [("early", "cancelled")]
    assert fal.submitted == []
    assert inbox.committed == {0: 2}


async def test_cancel_while_running_cancels_at_fal_and_gives_one_cancelled_event() -> None:
    inbox, outbox, fal = FakeInbox(partitions=1), FakeOutbox(), FakeFal()
    inbox.append(0, request("busy", "hold"))
    async with running(inbox, outbox, fal):
        await fal.wait_submitted(1)
        inbox.append(0, cancel("busy"))
        await outbox.wait_for(results=1)
    (event,) = outbox.results
    assert (event.request_id, event.status, event.fal_request_id) == ("busy", "cancelled", "fal-0")
    assert event.error is not None
    assert event.error.code == "cancelled"
    assert fal.cancelled == ["fal-0"]
    assert inbox.committed == {0: 2}


async def test_a_refused_key_pauses_intake_and_loses_nothing_when_it_works_again() -> None:
    inbox, outbox, fal = FakeInbox(partitions=1), FakeOutbox(), FakeFal()
    fal.refuse_key = True
    inbox.append(0, request("a"))
    inbox.append(0, request("b"))
    async with running(inbox, outbox, fal, limit=4) as relay:
        await fal.key_refused.wait()
        assert relay.fal_key_refused
        fal.refuse_key = False  # the key is fixed
        await outbox.wait_for(results=2)
        assert not relay.fal_key_refused
    assert sorted((e.request_id, e.status) for e in outbox.results) == [
        ("a", "succeeded"),
        ("b", "succeeded"),
    ]


async def test_a_request_past_its_deadline_is_not_submitted() -> None:
    inbox, outbox, fal = FakeInbox(partitions=1), FakeOutbox(), FakeFal()
    inbox.append(0, request("late", options={"deadline": "2020-01-01T00:00:00Z"}))
    inbox.append(
        0, request("soon", options={"priority": "low", "runner_hint": "eu", "start_timeout_s": 30})
    )
    async with running(inbox, outbox, fal):
        await outbox.wait_for(results=2)
    events = {e.request_id: e for e in outbox.results}
    assert events["late"].error is not None
    assert (events["late"].status, events["late"].error.code) == ("failed", "timeout")
    assert events["soon"].status == "succeeded"
    assert len(fal.submitted) == 1
    assert fal.options == [SubmitOptions(priority="low", start_timeout_s=30, runner_hint="eu")]


async def test_stream_mode_watches_through_the_stream_and_falls_back_to_polling() -> None:
    inbox, outbox, fal = FakeInbox(partitions=1), FakeOutbox(), FakeFal()
    inbox.append(0, request("streamed", "polls=3"))
    inbox.append(0, request("dropped", "polls=3 drop-stream"))
    inbox.append(0, request("empty", "polls=3 empty-stream"))
    async with running(inbox, outbox, fal, watch_mode="stream"):
        await outbox.wait_for(results=3)
    assert {e.request_id: e.status for e in outbox.results} == {
        "streamed": "succeeded",
        "dropped": "succeeded",
        "empty": "succeeded",
    }
    # One stream for "streamed"; three that ended at once for "empty" (each a failure, so
    # not reconnected to in a loop), then it was polled.
    assert fal.streams == 1 + 3


async def test_webhook_mode_takes_the_result_from_the_webhook_and_polls_as_a_safety_net() -> None:
    """A delivered webhook carries the output (no result call); a job whose webhook is lost
    is found by the slow safety-net poll."""
    inbox, outbox, fal = FakeInbox(partitions=1), FakeOutbox(), FakeFal()
    inbox.append(0, request("hooked", "hold"))
    async with running(inbox, outbox, fal, watch_mode="webhook", webhook_safety_poll=0.05) as relay:
        await fal.wait_submitted(1)
        relay.webhook_delivered(
            "fal-0",
            FalStatus(FalPhase.COMPLETED),
            FalOutput(video={"url": "https://v/hooked.mp4"}, seed=7),
        )
        await outbox.wait_for(results=1)
        inbox.append(0, request("lost-hook", "polls=2"))
        await outbox.wait_for(results=2)
    events = {e.request_id: e for e in outbox.results}
    assert events["hooked"].video is not None
    assert (events["hooked"].video.url, events["hooked"].seed) == ("https://v/hooked.mp4", 7)
    assert events["lost-hook"].status == "succeeded"
    assert fal.results_fetched == 1  # only the job whose webhook was lost


async def test_progress_events_are_published_but_bounded() -> None:
    """queued (with its position), started, and new log lines, but never more log lines
    than the cap, whatever fal sends."""
    inbox, outbox, fal = FakeInbox(partitions=1), FakeOutbox(), FakeFal()
    inbox.append(0, request("chatty", "chatty polls=30"))
    async with running(
        inbox, outbox, fal, progress=True, progress_min_interval=0.01, progress_max_logs=7
    ):
        await outbox.wait_for(results=1)
    kinds = [e.event for e in outbox.progress_events]
    assert kinds[:2] == ["queued", "started"]
    assert outbox.progress_events[0].queue_position == 3
    logs = [e.log.message for e in outbox.progress_events if e.log is not None]
    assert len(logs) == 7
    assert logs == sorted(set(logs), key=logs.index)  # each line once, in order
    assert {e.fal_request_id for e in outbox.progress_events} == {"fal-0"}


async def test_no_progress_events_unless_asked_for() -> None:
    inbox, outbox, fal = FakeInbox(partitions=1), FakeOutbox(), FakeFal()
    inbox.append(0, request("quiet", "chatty polls=5"))
    async with running(inbox, outbox, fal):
        await outbox.wait_for(results=1)
    assert outbox.progress_events == []


async def test_a_restarted_relay_knows_run_times_from_the_ledger() -> None:
    """Finished entries carry the job's shape and run time, so polling is warm at once."""
    inbox, outbox, fal = FakeInbox(partitions=1), FakeOutbox(), FakeFal()
    inbox.append(0, request("learn", "polls=4"))
    async with running(inbox, outbox, fal):
        await outbox.wait_for(results=1)
    (finished,) = [e for e in outbox.ledger if e.state == "finished"]
    assert finished.shape is not None
    assert finished.run_s is not None
    async with running(
        FakeInbox(), FakeOutbox(), FakeFal(), ledger=outbox.ledger, preloaded=True
    ) as again:
        await again.wait_started()
        assert again.expected_run_time(finished.shape) == finished.run_s


# --- time through the clock: timeouts, deadlines and grace periods on the fake clock ---------


async def test_a_job_that_never_ends_fails_at_the_job_timeout_on_the_fake_clock() -> None:
    """The job timeout counts from the submit; when it passes, the job is cancelled at fal
    and its one event is a retryable timeout. Only fake time passes."""
    inbox, outbox, fal = FakeInbox(partitions=1), FakeOutbox(), FakeFal()
    inbox.append(0, request("forever", "hold"))
    async with running(inbox, outbox, fal, job_timeout=30):
        await outbox.wait_for(results=1)
    (event,) = outbox.results
    assert event.error is not None
    assert (event.status, event.error.code, event.error.retryable) == ("failed", "timeout", True)
    assert "RELAY_JOB_TIMEOUT_S=30s" in event.error.message
    assert fal.cancelled == ["fal-0"]
    assert event.timings.submitted_at is not None
    assert event.timings.completed_at is not None
    waited = event.timings.completed_at - event.timings.submitted_at
    assert timedelta(seconds=30) <= waited < timedelta(seconds=32)
    assert inbox.committed == {0: 1}


async def test_a_deadline_that_passes_while_the_job_runs_cancels_it_on_the_fake_clock() -> None:
    """A request's own deadline is sooner than the job timeout: at the deadline the job is
    cancelled at fal and fails as a timeout that is not worth retrying."""
    inbox, outbox, fal = FakeInbox(partitions=1), FakeOutbox(), FakeFal()
    deadline = T0 + timedelta(seconds=20)  # the fake clock starts at T0
    inbox.append(0, request("hurry", "hold", options={"deadline": deadline.isoformat()}))
    async with running(inbox, outbox, fal, job_timeout=600):
        await outbox.wait_for(results=1)
    (event,) = outbox.results
    assert event.error is not None
    assert (event.status, event.error.code, event.error.retryable) == ("failed", "timeout", False)
    assert "deadline" in event.error.message
    assert fal.cancelled == ["fal-0"]
    assert event.timings.completed_at is not None
    assert deadline <= event.timings.completed_at < deadline + timedelta(seconds=2)


async def test_a_submit_fal_never_answers_is_waited_for_twice_the_grace_then_let_go() -> None:
    """On shutdown a job in mid-submit gets the grace, and then the grace again, to finish
    its submit and ledger write (cancelling it could leave a job at fal that no ledger entry
    names); after that it is cancelled. Driven by the fake clock: no real waiting."""
    clock = FakeClock()
    inbox, outbox, fal = FakeInbox(partitions=1), FakeOutbox(), FakeFal()
    inbox.append(0, request("stuck", "stuck-submit"))
    async with running(inbox, outbox, fal, clock=clock, shutdown_grace=10) as relay:
        await fal.wait_submit_started(1)
        before = clock.elapsed
        clock.timer_armed.clear()
        relay.request_stop()
        for _grace in range(2):
            async with asyncio.timeout(10):
                await clock.timer_armed.wait()
            clock.timer_armed.clear()
            assert relay.in_flight == 1  # still waiting for the submit
            clock.advance(10)
    assert clock.elapsed - before >= 20
    assert relay.in_flight == 0
    assert outbox.results == []
    assert outbox.ledger == []
    assert inbox.committed == {}


async def test_a_submitted_entry_reads_back_equal_to_itself() -> None:
    """The lost-acknowledgement rule compares the entry written with the one read back, so
    every time in it is kept as the codec writes it (to the millisecond), the request's
    deadline included."""
    inbox, outbox, fal = FakeInbox(partitions=1), FakeOutbox(), FakeFal()
    deadline = "2030-01-01T00:00:00.123456Z"
    inbox.append(0, request("precise", options={"deadline": deadline}))
    async with running(inbox, outbox, fal):
        await outbox.wait_for(results=1)
    written = [e for e in outbox.ledger if e.state == "submitted"]
    assert [e.key for e in written] == ["precise"]
    read_back, _writer = decode_entry("precise", encode_entry(written[0], "w"))
    assert read_back == written[0]


# --- the backlog and the scheduler -----------------------------------------------------------


def tenants_of(outbox: FakeOutbox, fal: FakeFal) -> list[str]:
    """The tenants of the submitted jobs, in submit order (prompts name their request)."""
    return [str(a["prompt"]).split("-")[0] for a in fal.submitted]


async def test_a_tenant_behind_anothers_backlog_is_served_in_turn() -> None:
    """One slot; A's 12 requests, then B's 3, all in one partition: once the backlog holds
    both, starts alternate, and B's 3 start before A's last 6."""
    inbox, outbox, fal = FakeInbox(partitions=1), FakeOutbox(), FakeFal()
    for i in range(12):
        inbox.append(0, request(f"a-{i}", f"a-{i} polls=2", tenant="a"))
    for i in range(3):
        inbox.append(0, request(f"b-{i}", f"b-{i} polls=2", tenant="b"))
    async with running(inbox, outbox, fal, limit=1):
        await outbox.wait_for(results=15)
    order = tenants_of(outbox, fal)
    # All were read at once and then waited: received when read, not when started.
    received = sorted(e.timings.received_at for e in outbox.results)
    submitted = sorted(e.timings.submitted_at for e in outbox.results if e.timings.submitted_at)
    assert received[-1] - received[0] < (submitted[-1] - submitted[0]) / 10
    assert order.count("b") == 3
    assert order.index("b") <= 2
    assert max(i for i, t in enumerate(order) if t == "b") < 15 - 6
    assert inbox.committed == {0: 15}


async def test_bodies_beyond_the_budget_are_read_again_at_their_turn() -> None:
    """With no byte budget every waiting request keeps only its index; each is read again
    from Kafka when its turn comes, and all of them succeed."""
    inbox, outbox, fal = FakeInbox(partitions=2), FakeOutbox(), FakeFal()
    for i in range(8):
        inbox.append(i % 2, request(f"r-{i}", f"r-{i} polls=2"))
    async with running(inbox, outbox, fal, limit=2, backlog_body_bytes=0):
        await outbox.wait_for(results=8)
    assert sorted(e.request_id for e in outbox.results) == sorted(f"r-{i}" for i in range(8))
    assert {e.status for e in outbox.results} == {"succeeded"}
    assert inbox.reads >= 4  # the ones that waited (the first two started at once)
    assert inbox.committed == {0: 4, 1: 4}


async def test_a_duplicate_waiting_in_the_backlog_starts_no_second_job() -> None:
    """Two records of one request_id wait together; when the second's turn comes the first
    is held (or done): it is skipped, with one event in all."""
    inbox, outbox, fal = FakeInbox(partitions=1), FakeOutbox(), FakeFal()
    inbox.append(0, request("busy", "busy polls=3"))
    inbox.append(0, request("twin", "twin polls=3"))
    inbox.append(0, request("twin", "twin polls=3"))
    async with running(inbox, outbox, fal, limit=1):
        await outbox.wait_for(results=2)
        await inbox.drained.wait()
    assert sorted(e.request_id for e in outbox.results) == ["busy", "twin"]
    assert len(fal.submitted) == 2
    assert inbox.committed == {0: 3}


async def test_the_fleet_cap_gives_a_replica_its_share_by_partitions() -> None:
    """RELAY_FAL_CONCURRENCY=4 over a topic of 3 partitions: owning one, a replica runs
    ceil(4/3) = 2 jobs at once; owning all three, 4."""
    inbox, outbox, fal = FakeInbox(partitions=3), FakeOutbox(), FakeFal()
    for i in range(12):
        inbox.append(0, request(f"r-{i}", f"r-{i} polls=4"))
    async with running(inbox, outbox, fal, limit=10, fal_concurrency=4) as relay:
        await relay.partitions_assigned({Partition(inbox.topic, 0)})
        await fal.wait_submitted(2)
        assert relay.in_flight <= 2
        await relay.partitions_assigned({Partition(inbox.topic, 1), Partition(inbox.topic, 2)})
        await outbox.wait_for(results=12)
    assert fal.peak_in_flight == 4


async def test_a_partition_revoked_while_a_waiting_body_is_read_starts_nothing() -> None:
    """A waiting request's body is being read again when its partition is revoked: once the
    read returns, the request is not started (the partition is another replica's now)."""
    inbox, outbox, fal = FakeInbox(partitions=1), FakeOutbox(), FakeFal()
    inbox.read_gate = asyncio.Event()
    inbox.append(0, request("first", "first polls=2"))
    inbox.append(0, request("second", "second"))
    async with running(inbox, outbox, fal, limit=1, backlog_body_bytes=0) as relay:
        async with asyncio.timeout(10):
            await inbox.reading.wait()  # "first" is done and "second"'s turn came
        await relay.partitions_revoked({Partition(inbox.topic, 0)})
        inbox.read_gate.set()
        await outbox.wait_for(results=1)
        assert relay.waiting == 0
    assert [e.request_id for e in outbox.results] == ["first"]
    assert [a["prompt"] for a in fal.submitted] == ["first polls=2"]
    assert inbox.committed == {0: 1}


async def test_the_fleet_cap_counts_the_jobs_other_replicas_hold_at_fal() -> None:
    """After a rebalance one replica may hold more than its share (it resumed them): while the
    group's jobs at fal, as the shared ledger shows them, are at the cap, another replica
    starts nothing; as they finish, it starts only what the cap leaves."""
    others = [submitted(f"other-{i}", i, f"fal-other-{i}", partition=2) for i in range(3)]
    clock, inbox, outbox, fal = FakeClock(), FakeInbox(partitions=3), FakeOutbox(), FakeFal()
    for i in range(4):
        inbox.append(0, request(f"r-{i}", f"r-{i}"))
    async with running(
        inbox, outbox, fal, limit=10, fal_concurrency=3, ledger=others, preloaded=True, clock=clock
    ) as relay:
        await relay.partitions_assigned({Partition(inbox.topic, 0)})  # share: ceil(3/3) = 1
        async with asyncio.timeout(10):
            await inbox.drained.wait()
            for _turn in range(2):  # the loop went round after taking the last record
                inbox.fetched.clear()
                await clock.timer_armed.wait()  # intake idles until a slot frees, or time passes
                clock.timer_armed.clear()
                clock.advance(1.0)
                await inbox.fetched.wait()
        assert fal.submitted == []
        assert relay.waiting == 4
        for entry in others[:2]:  # two of the other replica's jobs end
            done = LedgerEntry(
                key=entry.key, state="finished", source=entry.source, at=T0, status="succeeded"
            )
            relay._view.apply(done.key, done)  # what the ledger feed does as it reads them
        await clock.timer_armed.wait()
        clock.advance(1.0)  # time passes: the idle intake looks again
        await outbox.wait_for(results=4)
    assert fal.peak_in_flight == 1


async def test_tenant_gauges_count_by_label_when_scraped() -> None:
    """Waiting and held jobs per tenant label: tenants of the file by name, the rest as
    ``other``; read when /metrics is scraped."""
    metrics = RelayMetrics()
    tenants = Tenants(tenants={"a": TenantPolicy()})
    inbox, outbox, fal = FakeInbox(partitions=1), FakeOutbox(), FakeFal()
    inbox.append(0, request("a-0", "hold", tenant="a"))
    inbox.append(0, request("a-1", "a-1", tenant="a"))
    inbox.append(0, request("z-1", "z-1", tenant="zeta"))
    inbox.append(0, request("z-2", "z-2", tenant="omega"))
    async with running(inbox, outbox, fal, limit=1, metrics=metrics, tenants=tenants) as relay:
        await fal.wait_submitted(1)
        async with asyncio.timeout(10):
            await inbox.drained.wait()
            while relay.waiting < 3:  # taken in the intake turn that drained the inbox
                inbox.fetched.clear()
                await inbox.fetched.wait()

        def sample(name: str, label: str) -> float | None:
            return metrics.registry.get_sample_value(name, {"tenant": label})

        assert sample("lynx_relay_tenant_waiting", "a") == 1
        assert sample("lynx_relay_tenant_waiting", "other") == 2
        assert sample("lynx_relay_tenant_waiting", "default") == 0
        assert sample("lynx_relay_tenant_running", "a") == 1
        assert sample("lynx_relay_tenant_running", "other") == 0
