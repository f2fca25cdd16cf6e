"""Output storage over fakes: the key, the checks of a copy, the retry decision (pure), and
the relay copying a finished job's video before its result, retrying, giving up as
``storage_failed`` or keeping fal's URL, and deleting fal's copies after a verified copy.
The same runs against real Kafka, the emulator and S3Proxy in
tests/integration/test_output_storage.py."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest

from service.core.storage import CopyCheck, object_key, retry_delay, template_problems
from service.metrics import RelayMetrics
from service.relay.storage import KeepConfig
from tests.fakes import (
    FakeClock,
    FakeFal,
    FakeInbox,
    FakeOutbox,
    FakeOutputStore,
    FakeVideoFiles,
    video_bytes,
)
from tests.unit.test_relay import request, running

DAY = datetime(2026, 11, 30, 12, tzinfo=UTC)


# --- pure: keys, checks, retries ---------------------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "template", "expected"),
    [
        ("", "{tenant}/{request_id}.mp4", "acme/r-1.mp4"),
        ("/videos/", "{tenant}/{request_id}.mp4", "videos/acme/r-1.mp4"),
        ("/v", "{date}/{fal_request_id}-{request_id}.mp4", "v/2026-11-30/f-9-r-1.mp4"),
    ],
)
def test_the_object_key_is_the_prefix_and_the_template(
    prefix: str, template: str, expected: str
) -> None:
    key = object_key(
        prefix, template, tenant="acme", request_id="r-1", fal_request_id="f-9", day=DAY
    )
    assert key == expected


def test_a_request_id_cannot_climb_out_of_the_prefix() -> None:
    key = object_key(
        "/out", "{request_id}.mp4", tenant="t", request_id="../../etc/x", fal_request_id="", day=DAY
    )
    assert key == "out/etc/x.mp4"


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("{tenant}/{request_id}.mp4", None),
        ("{tenant}.mp4", "must contain {request_id}"),
        ("{request_id}/{bucket}.mp4", "unknown field"),
        ("/{request_id}.mp4", "must not start with /"),
        ("{request_id", "not a template"),
    ],
)
def test_key_templates_are_checked(template: str, problem: str | None) -> None:
    found = template_problems(template)
    assert (found is None) if problem is None else (found is not None and problem in found)


@pytest.mark.parametrize("part_size", [7, 100, 1_000, 10_000])
@pytest.mark.parametrize("cuts", [[1], [3, 5], [1000]])
def test_a_copy_check_knows_the_s3_etags_however_the_bytes_are_cut(
    part_size: int, cuts: list[int]
) -> None:
    body = video_bytes("https://v/x.mp4", 2_345)
    check = CopyCheck(part_size)
    i, n = 0, 0
    while i < len(body):
        step = cuts[n % len(cuts)]
        check.feed(body[i : i + step])
        i, n = i + step, n + 1
    parts = [body[j : j + part_size] for j in range(0, len(body), part_size)]
    multipart = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest()  # noqa: S324
    assert check.etags() == {hashlib.md5(body).hexdigest(), f"{multipart}-{len(parts)}"}  # noqa: S324
    assert check.sha256 == hashlib.sha256(body).hexdigest()
    assert check.size == len(body)
    assert check.etag_problem(f"{multipart}-{len(parts)}") is None
    assert check.etag_problem(hashlib.md5(body + b"x").hexdigest()) is not None  # noqa: S324
    assert check.etag_problem("not-an-md5-tag") is None  # SSE-KMS and others: size only


def test_a_store_that_always_uploads_in_parts_is_checked_without_the_whole_md5() -> None:
    body = video_bytes("https://v/y.mp4", 1_000)
    check = CopyCheck(4_096, whole_md5=False)
    check.feed(body)
    part = hashlib.md5(body).digest()  # noqa: S324
    one_part = f"{hashlib.md5(part).hexdigest()}-1"  # noqa: S324
    assert check.etags() == {one_part}
    assert check.etag_problem(one_part) is None
    assert check.etag_problem(hashlib.md5(body).hexdigest()) is not None  # noqa: S324


async def test_a_single_put_store_is_checked_by_the_whole_md5() -> None:
    inbox, outbox, fal = FakeInbox(partitions=1), FakeOutbox(), FakeFal()
    files, store = FakeVideoFiles(size=1_000), FakeOutputStore(multipart=False)
    inbox.append(0, request("v-1", "polls=1"))
    async with running(inbox, outbox, fal, store=store, files=files, output=keep()):
        await outbox.wait_for(results=1)
    assert outbox.results[0].status == "succeeded"


def test_a_copy_check_names_every_size_that_does_not_match() -> None:
    check = CopyCheck(100)
    check.feed(b"x" * 50)
    assert check.problems(50, 50, 50) == []
    assert len(check.problems(60, 70, 40)) == 3
    assert check.problems(50, None, None) == ["the store has no such object after the upload"]


def test_a_failed_copy_is_retried_while_it_may_pass_and_inside_the_window() -> None:
    assert retry_delay(retryable=True, elapsed_s=10, delay_s=5, window_s=600) == 5
    assert retry_delay(retryable=True, elapsed_s=598, delay_s=5, window_s=600) is None
    assert retry_delay(retryable=False, elapsed_s=0, delay_s=1, window_s=600) is None


# --- the relay, over fakes ---------------------------------------------------------------


def keep(**fields: object) -> KeepConfig:
    base: dict[str, object] = {"prefix": "/out", "retry_backoff": (1.0, 4.0)}
    return KeepConfig(**{**base, **fields})  # type: ignore[arg-type]


async def test_a_finished_video_is_stored_and_its_event_names_the_copy_and_fal_url() -> None:
    inbox, outbox, fal = FakeInbox(partitions=1), FakeOutbox(), FakeFal()
    files, store = FakeVideoFiles(size=10_000, chunk=999), FakeOutputStore(part_size=4_096)
    inbox.append(0, request("v-1", "polls=2"))
    async with running(inbox, outbox, fal, store=store, files=files, output=keep()):
        await outbox.wait_for(results=1)
    (event,) = outbox.results
    assert event.status == "succeeded"
    assert event.video is not None
    fal_url = "https://v/fal-0.mp4"
    body = video_bytes(fal_url, 10_000)
    assert store.objects == {"out/default/v-1.mp4": body}
    assert event.video.url == "s3://bucket/out/default/v-1.mp4"
    assert event.video.fal_url == fal_url
    assert event.video.sha256 == hashlib.sha256(body).hexdigest()
    assert event.video.file_size == 10_000
    assert store.peak_held < 4_096 + 999  # one part and one chunk, never the whole video
    # The copy is made before the finished entry: the ledger's last word names the job.
    assert [e.state for e in outbox.ledger][-1] == "finished"
    assert inbox.committed == {0: 1}


async def test_a_store_that_fails_for_a_while_is_retried_and_nothing_is_lost() -> None:
    inbox, outbox, fal = FakeInbox(partitions=1), FakeOutbox(), FakeFal()
    clock, metrics = FakeClock(), RelayMetrics()
    files, store = FakeVideoFiles(), FakeOutputStore()
    store.fail_puts = 3
    files.fail_downloads = 1
    inbox.append(0, request("v-1", "polls=1"))
    async with running(
        inbox, outbox, fal, clock=clock, metrics=metrics, store=store, files=files, output=keep()
    ):
        await outbox.wait_for(results=1)
    assert outbox.results[0].status == "succeeded"
    assert list(store.objects) == ["out/default/v-1.mp4"]
    assert metrics.output_copies.labels("retried")._value.get() == 4
    assert metrics.output_copies.labels("stored")._value.get() == 1
    assert len(fal.submitted) == 1  # the job was never submitted again


async def test_a_copy_that_cannot_be_made_fails_as_storage_failed_with_fal_url_and_cost() -> None:
    inbox, outbox, fal = FakeInbox(partitions=1), FakeOutbox(), FakeFal()
    files, store = FakeVideoFiles(), FakeOutputStore()
    store.refuse = True  # credentials refused: not worth retrying
    fal.billed["fal-0"] = 5.0
    inbox.append(0, request("v-1", "polls=1"))
    async with running(inbox, outbox, fal, store=store, files=files, output=keep()):
        await outbox.wait_for(results=1)
    (event,) = outbox.results
    assert event.status == "failed"
    assert event.error is not None
    assert (event.error.code, event.error.retryable) == ("storage_failed", True)
    assert event.error.details["fal_url"] == "https://v/fal-0.mp4"
    assert event.cost is not None
    assert event.cost.units == 5.0  # paid at fal all the same: the cost is kept
    assert outbox.ledger[-1].state == "finished"


async def test_past_the_retry_window_a_short_copy_fails_or_keeps_fal_url_by_setting() -> None:
    for on_failure, status in (("fail", "failed"), ("fal_url", "succeeded")):
        inbox, outbox, fal = FakeInbox(partitions=1), FakeOutbox(), FakeFal()
        files, store = FakeVideoFiles(), FakeOutputStore()
        files.short.add("https://v/fal-0.mp4")  # every attempt reads half the announced bytes
        inbox.append(0, request("v-1", "polls=1"))
        config = keep(retry_window_s=10.0, on_failure=on_failure)
        async with running(inbox, outbox, fal, store=store, files=files, output=config):
            await outbox.wait_for(results=1)
        (event,) = outbox.results
        assert event.status == status
        assert len(files.downloads) > 1  # it was retried before giving up
        if status == "succeeded":
            assert event.video is not None
            assert (event.video.url, event.video.fal_url) == ("https://v/fal-0.mp4", None)
        else:
            assert event.error is not None
            assert "did not verify" in event.error.message


async def test_fal_copies_are_deleted_only_after_a_verified_copy() -> None:
    inbox, outbox, fal = FakeInbox(partitions=1), FakeOutbox(), FakeFal()
    files, store = FakeVideoFiles(), FakeOutputStore()
    for i in range(3):
        inbox.append(0, request(f"v-{i}", "polls=1"))
    files.gone.add("https://v/fal-2.mp4")  # expired at fal: nothing copied, nothing deleted
    async with running(
        inbox, outbox, fal, store=store, files=files, output=keep(delete_at_fal=True)
    ):
        await outbox.wait_for(results=3)
    assert sorted(files.deleted) == ["fal-0", "fal-1"]
    for fal_id in files.deleted:
        url = f"https://v/{fal_id}.mp4"
        assert files.events.index(("download", url)) < files.events.index(("delete", fal_id))
    statuses = {e.request_id: e.status for e in outbox.results}
    assert statuses == {"v-0": "succeeded", "v-1": "succeeded", "v-2": "failed"}


async def test_a_presigned_url_can_be_published_instead_of_the_object_url() -> None:
    inbox, outbox, fal = FakeInbox(partitions=1), FakeOutbox(), FakeFal()
    files, store = FakeVideoFiles(), FakeOutputStore()
    inbox.append(0, request("v-1", "polls=1"))
    config = keep(event_url="presigned", presign_ttl_s=3600)
    async with running(inbox, outbox, fal, store=store, files=files, output=config):
        await outbox.wait_for(results=1)
    (event,) = outbox.results
    assert event.video is not None
    assert event.video.url == "https://bucket.example/out/default/v-1.mp4?ttl=3600"


async def test_a_copy_made_before_fals_files_were_deleted_is_found_again() -> None:
    """A replica copied the video and had fal delete its files, then died before the result:
    the next owner finds fal's file gone and the object in the store, and publishes it."""
    inbox, outbox, fal = FakeInbox(partitions=1), FakeOutbox(), FakeFal()
    files, store = FakeVideoFiles(), FakeOutputStore()
    files.gone.add("https://v/fal-0.mp4")
    store.objects["out/default/v-1.mp4"] = b"copied before"
    inbox.append(0, request("v-1", "polls=1"))
    async with running(inbox, outbox, fal, store=store, files=files, output=keep()):
        await outbox.wait_for(results=1)
    (event,) = outbox.results
    assert event.status == "succeeded"
    assert event.video is not None
    assert (event.video.url, event.video.file_size) == ("s3://bucket/out/default/v-1.mp4", 13)
    assert event.video.sha256 is None  # not read again: the store's copy is taken as it is
