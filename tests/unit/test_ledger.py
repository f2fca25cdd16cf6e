"""The ledger view's decision (new, resume, reconcile, duplicate or done), what it counts and
indexes as entries come, and the ledger's wire format."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from service.adapters.ledger_codec import decode_entry, encode_entry
from service.core.ledger import EntryState, FalRef, Intake, LedgerEntry, LedgerView, Source

T0 = datetime(2026, 11, 24, tzinfo=UTC)
HERE = Source("req", 0, 5)
ELSEWHERE = Source("req", 1, 9)
FAL = FalRef("f-1", "s", "r", "c")


def entry(
    state: EntryState,
    source: Source = HERE,
    at: datetime = T0,
    key: str = "r1",
    *,
    fal_id: str = "f-1",
    fal_request_id: str | None = None,
    digest: str | None = None,
) -> LedgerEntry:
    """A submitted entry names its fal job by ``fal_id``; a finished one by ``fal_request_id``."""
    fal = FalRef(fal_id, "s", "r", "c") if state == "submitted" else None
    return LedgerEntry(
        key=key,
        state=state,
        source=source,
        at=at,
        fal=fal,
        fal_request_id=fal_request_id,
        digest=digest,
    )


def view(*entries: LedgerEntry, days: float = 7) -> LedgerView:
    v = LedgerView(timedelta(days=days))
    for e in entries:
        v.apply(e.key, e)
    return v


def test_unknown_ids_are_new() -> None:
    assert view().decide("r1", HERE, T0) is Intake.NEW


def test_a_job_at_fal_is_resumed_from_its_own_record_and_duplicated_by_any_other() -> None:
    v = view(entry("submitted"))
    assert v.decide("r1", HERE, T0) is Intake.RESUME
    assert v.decide("r1", ELSEWHERE, T0) is Intake.DUPLICATE


def test_a_finished_job_is_done_for_its_record_and_a_duplicate_for_others_until_retention() -> None:
    v = view(entry("finished"), days=1)
    assert v.decide("r1", HERE, T0 + timedelta(hours=1)) is Intake.DONE
    assert v.decide("r1", ELSEWHERE, T0 + timedelta(hours=23)) is Intake.DUPLICATE
    assert v.decide("r1", ELSEWHERE, T0 + timedelta(days=2)) is Intake.NEW


def test_entries_never_go_backwards_when_read_back_late() -> None:
    """The relay applies its own writes at once and the feed reads them back later: an older
    'submitted' must not undo a newer 'finished'."""
    v = view(entry("submitted"), entry("finished", at=T0 + timedelta(seconds=3)))
    v.apply("r1", entry("submitted"))
    assert v.decide("r1", HERE, T0) is Intake.DONE
    v.apply("r1", None)  # a tombstone removes
    assert v.decide("r1", HERE, T0) is Intake.NEW


def test_rejections_are_keyed_by_source_and_expire_but_running_jobs_do_not() -> None:
    rejected = entry("rejected", key=HERE.key)
    v = view(rejected, entry("submitted", key="old-but-running"), days=1)
    assert v.rejected_before(HERE)
    assert not v.rejected_before(ELSEWHERE)
    assert v.expire(T0 + timedelta(days=2)) == 1
    assert not v.rejected_before(HERE)
    assert v.counts() == {"intent": 0, "submitted": 1, "finished": 0, "rejected": 0}
    assert [e.key for e in v.submitted()] == ["old-but-running"]


@pytest.mark.parametrize(
    "original",
    [
        LedgerEntry(
            key="r1",
            state="submitted",
            source=HERE,
            at=T0,
            fal=FAL,
            received_at=T0,
            metadata={"tenant": "acme"},
            deadline=T0 + timedelta(hours=1),
        ),
        LedgerEntry(
            key="r1",
            state="finished",
            source=HERE,
            at=T0,
            status="succeeded",
            shape="720p|16:9|81|None",
            run_s=184.25,
        ),
        LedgerEntry(
            key="r1",
            state="intent",
            source=HERE,
            at=T0,
            received_at=T0 - timedelta(seconds=2),
            metadata={"trace": "t-1"},
            deadline=T0 + timedelta(hours=1),
            tenant="acme",
            digest="9f" * 32,
        ),
        LedgerEntry(
            key="r1",
            state="finished",
            source=HERE,
            at=T0,
            status="succeeded",
            fal_request_id="f-1",
        ),
    ],
    ids=["submitted", "finished", "intent-with-digest", "finished-with-fal-request-id"],
)
def test_the_wire_format_round_trips(original: LedgerEntry) -> None:
    decoded, writer = decode_entry("r1", encode_entry(original, "w-1"))
    assert (decoded, writer) == (original, "w-1")


def test_finished_run_times_come_back_oldest_first() -> None:
    later = T0 + timedelta(seconds=5)
    v = view(
        LedgerEntry(key="b", state="finished", source=HERE, at=later, shape="s", run_s=20.0),
        LedgerEntry(key="a", state="finished", source=ELSEWHERE, at=T0, shape="s", run_s=10.0),
        entry("submitted", key="c"),
    )
    assert v.run_times() == [("s", 10.0), ("s", 20.0)]


def test_an_end_beats_its_submit_whatever_the_writers_clocks_say() -> None:
    """A replica whose clock runs behind finishes a job another replica submitted: the
    finished entry still wins, so the job is never resumed (and published) again."""
    submitted = entry("submitted", at=T0 + timedelta(seconds=30))
    finished = entry("finished", at=T0)  # written later, by a clock 30 s behind
    v = view(submitted)
    v.apply("r1", finished)
    assert v.decide("r1", HERE, T0 + timedelta(seconds=31)) is Intake.DONE
    v.apply("r1", submitted)  # read back late: still done
    assert v.decide("r1", HERE, T0 + timedelta(seconds=31)) is Intake.DONE


def test_the_count_of_jobs_at_fal_follows_every_change() -> None:
    """``at_fal`` (what the fleet cap reads) counts submitted entries as they come, end,
    are read back late, are tombstoned and expire."""
    v = view(entry("submitted", key="a"), entry("submitted", key="b", source=ELSEWHERE))
    assert v.at_fal == 2
    v.apply("a", entry("submitted", key="a"))  # our own write read back
    assert v.at_fal == 2
    v.apply("a", entry("finished", key="a", at=T0 + timedelta(seconds=5)))
    assert v.at_fal == 1
    v.apply("a", entry("submitted", key="a"))  # a late copy of the submit changes nothing
    assert v.at_fal == 1
    v.apply("b", None)
    assert v.at_fal == 0
    v.apply("c", entry("submitted", key="c"))
    assert v.expire(T0 + timedelta(days=30)) == 1  # "a" ended long ago; "c" is still at fal
    assert v.at_fal == 1
    assert v.at_fal == v.counts()["submitted"]


# --- intents: the wire format --------------------------------------------------------------


def test_digest_and_fal_request_id_are_written_only_when_set() -> None:
    """An entry without them carries neither key (no two nulls on every finished entry); an
    entry with them carries their values."""
    plain = json.loads(encode_entry(entry("finished"), "w-1"))
    assert "digest" not in plain
    assert "fal_request_id" not in plain
    intent = json.loads(encode_entry(entry("intent", digest="ab" * 32), "w-1"))
    assert (intent["state"], intent["digest"]) == ("intent", "ab" * 32)
    assert "fal_request_id" not in intent
    done = json.loads(encode_entry(entry("finished", fal_request_id="f-9"), "w-1"))
    assert done["fal_request_id"] == "f-9"
    assert "digest" not in done


OLD_SUBMITTED = (
    b'{"v":1,"state":"submitted","writer":"w-old",'
    b'"source":{"topic":"req","partition":0,"offset":5},"at":"2026-11-24T00:00:00Z",'
    b'"fal":{"request_id":"f-1","status_url":"s","response_url":"r","cancel_url":"c"},'
    b'"received_at":null,"metadata":null,"deadline":null,"status":null,"shape":null,'
    b'"run_s":null,"tenant":null}'
)
OLD_FINISHED = (
    b'{"v":1,"state":"finished","writer":"w-old",'
    b'"source":{"topic":"req","partition":0,"offset":5},"at":"2026-11-24T00:00:00Z",'
    b'"fal":null,"received_at":null,"metadata":null,"deadline":null,"status":"succeeded",'
    b'"shape":null,"run_s":null,"tenant":null}'
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(OLD_SUBMITTED, entry("submitted"), id="old-submitted"),
        pytest.param(
            OLD_FINISHED,
            LedgerEntry(key="r1", state="finished", source=HERE, at=T0, status="succeeded"),
            id="old-finished",
        ),
    ],
)
def test_records_written_before_intents_existed_still_decode(
    raw: bytes, expected: LedgerEntry
) -> None:
    """A record without ``digest`` and ``fal_request_id`` reads with both None."""
    decoded, writer = decode_entry("r1", raw)
    assert (decoded, writer) == (expected, "w-old")
    assert (decoded.digest, decoded.fal_request_id) == (None, None)


def test_an_unknown_state_is_refused() -> None:
    raw = OLD_FINISHED.replace(b'"state":"finished"', b'"state":"queued"')
    with pytest.raises(ValueError, match="unknown ledger state 'queued'"):
        decode_entry("r1", raw)


# --- intents: what an entry names -----------------------------------------------------------


@pytest.mark.parametrize(
    ("e", "fal_id", "is_open"),
    [
        pytest.param(entry("intent", digest="d"), None, True, id="intent-names-no-job-but-open"),
        pytest.param(entry("submitted", fal_id="f-7"), "f-7", True, id="submitted"),
        pytest.param(
            entry("finished", fal_request_id="f-7"), "f-7", False, id="finished-with-its-job"
        ),
        pytest.param(entry("finished"), None, False, id="finished-without-a-job"),
        pytest.param(entry("rejected", key=HERE.key), None, False, id="rejected"),
    ],
)
def test_the_fal_job_an_entry_names_and_whether_it_is_open(
    e: LedgerEntry, fal_id: str | None, is_open: bool
) -> None:
    """Submitted entries name their job by their FalRef, finished ones by fal_request_id;
    intent and submitted entries are open (the job is, or may be, at fal)."""
    assert (e.fal_id, e.open) == (fal_id, is_open)


# --- intents: which entry wins --------------------------------------------------------------

LATER = T0 + timedelta(seconds=30)
INTENT_EARLY = entry("intent", digest="d")
INTENT_LATE = entry("intent", at=LATER, digest="d")
SUBMITTED_EARLY = entry("submitted")
SUBMITTED_LATE = entry("submitted", at=LATER)
FINISHED_EARLY = entry("finished", fal_request_id="f-1")
INTENT_OTHER_RECORD = entry("intent", source=ELSEWHERE, at=LATER, digest="d")


@pytest.mark.parametrize(
    ("first", "second", "held"),
    [
        pytest.param(INTENT_EARLY, SUBMITTED_EARLY, SUBMITTED_EARLY, id="submitted-beats-intent"),
        pytest.param(
            INTENT_LATE, SUBMITTED_EARLY, SUBMITTED_EARLY, id="submitted-beats-intent-clock-behind"
        ),
        pytest.param(
            SUBMITTED_EARLY, INTENT_LATE, SUBMITTED_EARLY, id="intent-read-back-late-loses"
        ),
        pytest.param(
            INTENT_LATE, FINISHED_EARLY, FINISHED_EARLY, id="finished-beats-intent-clock-behind"
        ),
        pytest.param(FINISHED_EARLY, INTENT_LATE, FINISHED_EARLY, id="finished-stays-over-intent"),
        pytest.param(INTENT_EARLY, INTENT_LATE, INTENT_LATE, id="later-intent-of-record-wins"),
        pytest.param(INTENT_LATE, INTENT_EARLY, INTENT_LATE, id="earlier-intent-read-back-loses"),
        pytest.param(INTENT_LATE, INTENT_LATE, INTENT_LATE, id="same-intent-applied-twice"),
        pytest.param(
            SUBMITTED_LATE, INTENT_OTHER_RECORD, INTENT_OTHER_RECORD, id="other-record-same-time"
        ),
        pytest.param(
            INTENT_OTHER_RECORD, SUBMITTED_EARLY, INTENT_OTHER_RECORD, id="other-record-earlier"
        ),
    ],
)
def test_for_one_record_intent_then_submitted_then_finished_whatever_the_clocks(
    first: LedgerEntry, second: LedgerEntry, held: LedgerEntry
) -> None:
    """For one source record an intent yields to its submit and its end, even when the
    replica writing those has a clock behind; between two intents of one record the later
    wins. Between different records the later ``at`` wins."""
    v = view(first)
    v.apply("r1", second)
    assert v.get("r1") == held


# --- intents: decide, expire, intents() -----------------------------------------------------


@pytest.mark.parametrize(
    ("source", "now", "intake"),
    [
        pytest.param(HERE, T0, Intake.RECONCILE, id="own-record->RECONCILE"),
        pytest.param(ELSEWHERE, T0, Intake.DUPLICATE, id="other-record->DUPLICATE"),
        pytest.param(
            HERE, T0 + timedelta(days=30), Intake.RECONCILE, id="own-record-past-retention"
        ),
        pytest.param(
            ELSEWHERE, T0 + timedelta(days=30), Intake.DUPLICATE, id="other-past-retention"
        ),
    ],
)
def test_an_intent_is_reconciled_from_its_own_record_and_duplicated_by_any_other(
    source: Source, now: datetime, intake: Intake
) -> None:
    """A submit whose outcome is unknown is never submitted again from intake, however old."""
    assert view(entry("intent", digest="d"), days=1).decide("r1", source, now) is intake


def test_expire_keeps_old_intents_and_submits_but_forgets_old_ends() -> None:
    """Intents may be jobs at fal: like submitted entries, they outlive the retention."""
    v = view(
        entry("intent", key="i", digest="d"),
        entry("submitted", key="s", source=ELSEWHERE),
        entry("finished", key="f", fal_request_id="f-9"),
        entry("rejected", key=HERE.key),
        days=1,
    )
    assert v.expire(T0 + timedelta(days=30)) == 2
    assert [e.key for e in v.intents()] == ["i"]
    assert [e.key for e in v.submitted()] == ["s"]
    assert v.counts() == {"intent": 1, "submitted": 1, "finished": 0, "rejected": 0}
    assert v.decide("i", HERE, T0 + timedelta(days=30)) is Intake.RECONCILE
    assert v.fal_ids() == {"f-1"}


AT_FAL_STEPS: list[tuple[str, LedgerEntry | None, int]] = [
    ("a", entry("intent", key="a", digest="d"), 1),
    ("a", entry("intent", key="a", digest="d"), 1),  # our own write read back
    ("a", entry("submitted", key="a", at=T0 + timedelta(seconds=1)), 1),  # replaces it
    ("a", entry("intent", key="a", digest="d"), 1),  # a late copy of the intent
    ("b", entry("intent", key="b", source=ELSEWHERE, digest="e"), 2),
    ("b", entry("intent", key="b", source=ELSEWHERE, at=LATER, digest="e"), 2),  # sent again
    ("a", entry("finished", key="a", at=T0 + timedelta(seconds=9), fal_request_id="f-1"), 1),
    ("a", entry("submitted", key="a", at=T0 + timedelta(seconds=1)), 1),  # late: nothing
    ("b", None, 0),  # tombstone of an intent
    ("b", None, 0),  # a tombstone for nothing held
    ("c", entry("submitted", key="c", fal_id="f-c"), 1),
    ("c", None, 0),  # tombstone of a submit
    ("d", entry("intent", key="d", digest="d"), 1),
]


def test_the_count_of_jobs_at_fal_includes_intents_through_every_change() -> None:
    """``at_fal`` counts intents and submits as they come, are replaced by a submit or an end,
    are read back late and are tombstoned; it always equals intents plus submits held."""
    v = view()
    seen = []
    for key, e, _expected in AT_FAL_STEPS:
        v.apply(key, e)
        counts = v.counts()
        assert v.at_fal == counts["intent"] + counts["submitted"]
        seen.append(v.at_fal)
    assert seen == [expected for _k, _e, expected in AT_FAL_STEPS]
    assert v.expire(T0 + timedelta(days=30)) == 1  # "a" ended long ago; "d" may be at fal
    assert v.at_fal == 1


# --- the index of fal request ids -----------------------------------------------------------

REUSED = Source("req", 2, 40)  # the same request_id again, after the retention
FAL_ID_STEPS: list[tuple[str, LedgerEntry | None, set[str]]] = [
    ("a", entry("intent", key="a", digest="d"), set()),  # an intent names no job yet
    ("a", entry("submitted", key="a", fal_id="f-a"), {"f-a"}),
    ("b", entry("submitted", key="b", source=ELSEWHERE, fal_id="f-b"), {"f-a", "f-b"}),
    ("a", entry("finished", key="a", at=LATER, fal_request_id="f-a"), {"f-a", "f-b"}),
    ("a", entry("submitted", key="a", fal_id="f-a"), {"f-a", "f-b"}),  # read back late
    ("b", None, {"f-a"}),  # tombstone
    ("c", entry("submitted", key="c", fal_id="f-c1"), {"f-a", "f-c1"}),
    # the request_id used again by another record: its new job replaces the old one
    ("c", entry("submitted", key="c", source=REUSED, at=LATER, fal_id="f-c2"), {"f-a", "f-c2"}),
    ("d", entry("finished", key="d", at=LATER), {"f-a", "f-c2"}),  # cancelled before submit
    ("e", entry("submitted", key="e", source=ELSEWHERE, fal_id="f-e"), {"f-a", "f-c2", "f-e"}),
    # an end that names no fal job (written by an older relay) no longer names f-e
    ("e", entry("finished", key="e", source=ELSEWHERE, at=LATER), {"f-a", "f-c2"}),
    ("f", entry("finished", key="f", fal_request_id="f-f"), {"f-a", "f-c2", "f-f"}),
]
ALL_FAL_IDS = ["f-a", "f-b", "f-c1", "f-c2", "f-e", "f-f"]


def test_the_fal_ids_named_follow_every_change() -> None:
    """Every fal request id the held entries name is indexed, and no other: through
    replacements, late read-backs and tombstones."""
    v = view()
    for key, e, expected in FAL_ID_STEPS:
        v.apply(key, e)
        assert v.fal_ids() == expected, (key, e)
        held = {x.fal_id for k in "abcdef" if (x := v.get(k)) is not None} - {None}
        assert held == expected
        assert [i for i in ALL_FAL_IDS if v.names_fal_job(i)] == sorted(expected)


def test_expiry_drops_the_fal_ids_of_forgotten_ends_only() -> None:
    """An end past the retention no longer names its job; a submit or an intent stays."""
    v = view(
        entry("finished", key="old", fal_request_id="f-old"),
        entry("finished", key="new", at=T0 + timedelta(days=6), fal_request_id="f-new"),
        entry("submitted", key="run", source=ELSEWHERE, fal_id="f-run"),
        entry("intent", key="maybe", source=REUSED, digest="d"),
        days=1,
    )
    assert v.fal_ids() == {"f-old", "f-new", "f-run"}
    assert v.expire(T0 + timedelta(days=2)) == 1
    assert v.fal_ids() == {"f-new", "f-run"}
    assert not v.names_fal_job("f-old")
    v.fal_ids().add("f-old")  # a copy: the caller cannot change the index
    assert not v.names_fal_job("f-old")
