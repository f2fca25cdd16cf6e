"""Settling ambiguous submits against fal's request history: digest, window, matching by
count, and when to give up. Pure: values in, decisions out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

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

T0 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
SKEW = timedelta(seconds=30)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_the_digest_is_the_same_for_the_body_sent_and_the_body_fal_returns() -> None:
    """Key order, spacing and escaping do not change the digest; any value does."""
    sent = {"prompt": "ein Kürbis", "image_url": "https://x/i.png", "num_frames": 81}
    returned = {"num_frames": 81, "image_url": "https://x/i.png", "prompt": "ein Kürbis"}
    assert body_digest(sent) == body_digest(returned)
    assert body_digest(sent) != body_digest({**sent, "num_frames": 80})
    assert body_digest({"seed": 1}) != body_digest({"seed": 1.5})


def test_the_window_spans_the_oldest_intent_to_now_with_the_skew_margin() -> None:
    """Read from the oldest open intent less the skew, to now plus the skew; nothing open,
    nothing to read."""
    intents = [Intent("r1", "d", at(10)), Intent("r2", "d", at(5))]
    assert history_window(intents, at(100), SKEW) == (at(5) - SKEW, at(100) + SKEW)
    assert history_window([], at(100), SKEW) is None


@pytest.mark.parametrize(
    ("intents", "seen", "adopted", "expected"),
    [
        pytest.param(
            [Intent("r1", "A", at(0))],
            [Seen("f1", "A", at(1))],
            set(),
            {"r1": "f1"},
            id="one-intent-one-item",
        ),
        pytest.param(
            [Intent("r1", "A", at(0))],
            [Seen("f1", "B", at(1))],
            set(),
            {},
            id="another-body-is-no-match",
        ),
        pytest.param(
            [Intent("r1", "A", at(0))],
            [Seen("f1", "A", at(1))],
            {"f1"},
            {},
            id="an-item-adopted-before-never-matches-again",
        ),
        pytest.param(
            [Intent("r1", "A", at(100))],
            [Seen("f1", "A", at(10))],
            set(),
            {},
            id="an-item-sent-long-before-the-intent-is-another-job",
        ),
        pytest.param(
            [Intent("r1", "A", at(100))],
            [Seen("f1", "A", at(80))],
            set(),
            {"r1": "f1"},
            id="within-the-skew-margin-it-matches",
        ),
        pytest.param(
            [Intent("r1", "A", at(0)), Intent("r2", "A", at(5))],
            [Seen("f1", "A", at(1))],
            set(),
            {"r1": "f1"},
            id="two-identical-intents-one-item-the-older-adopts",
        ),
        pytest.param(
            [Intent("r1", "A", at(0)), Intent("r2", "A", at(5))],
            [Seen("f2", "A", at(6)), Seen("f1", "A", at(1)), Seen("f3", "A", at(7))],
            set(),
            {"r1": "f1", "r2": "f2"},
            id="by-count-k-intents-adopt-at-most-k-items-in-time-order",
        ),
        pytest.param(
            [Intent("r1", "A", at(0)), Intent("r2", "B", at(0))],
            [Seen("f1", "A", at(1)), Seen("f2", "B", at(2))],
            set(),
            {"r1": "f1", "r2": "f2"},
            id="different-bodies-match-apart",
        ),
        pytest.param(
            [Intent("r1", "A", at(60)), Intent("r2", "A", at(0))],
            [Seen("f1", "A", at(61))],
            set(),
            {"r2": "f1"},
            id="the-oldest-intent-takes-the-first-item-it-may",
        ),
    ],
)
def test_matching_by_digest_and_by_count(
    intents: list[Intent], seen: list[Seen], adopted: set[str], expected: dict[str, str]
) -> None:
    """Each fal request is adopted once at most; identical bodies pair up in time order."""
    assert match(intents, seen, adopted, SKEW) == expected


def test_no_item_is_adopted_twice_whatever_the_input() -> None:
    """However many intents share a body, the adopted fal ids are distinct."""
    intents = [Intent(f"r{i}", "A", at(i)) for i in range(10)]
    seen = [Seen(f"f{i}", "A", at(i + 0.5)) for i in range(4)]
    got = match(intents, seen, set(), SKEW)
    assert len(got) == 4
    assert len(set(got.values())) == 4


@pytest.mark.parametrize(
    ("age_s", "verdict"),
    [
        pytest.param(10, Verdict.KEEP_LOOKING, id="young-keep-looking"),
        pytest.param(600, Verdict.KEEP_LOOKING, id="at-the-bound-keep-looking"),
        pytest.param(601, Verdict.SUBMIT_AGAIN, id="past-the-bound-submit-again"),
    ],
)
def test_an_unmatched_intent_is_submitted_again_only_past_the_bound(
    age_s: float, verdict: Verdict
) -> None:
    """The history may list a job only once it ended: no match is "not yet" until the bound."""
    intent = Intent("r1", "A", at(0))
    assert unmatched(intent, at(age_s), timedelta(seconds=600)) is verdict


@pytest.mark.parametrize(
    ("lists_unended", "give_up_after", "skew", "bound"),
    [
        pytest.param(False, 600, 30, 600, id="ended-only-history->the-setting"),
        pytest.param(False, 10, 300, 10, id="ended-only-history->the-setting-even-if-short"),
        pytest.param(True, 600, 30, 60, id="live-history->twice-the-skew"),
        pytest.param(True, 600, 10, 60, id="live-history->at-least-a-minute"),
        pytest.param(True, 600, 0, 60, id="live-history-no-skew->a-minute"),
        pytest.param(True, 600, 90, 180, id="live-history-large-skew->twice-the-skew"),
        pytest.param(True, 100, 90, 100, id="live-history->never-past-the-setting"),
        pytest.param(True, 30, 0, 30, id="live-history->setting-below-a-minute-wins"),
    ],
)
def test_how_long_an_intent_is_looked_for(
    lists_unended: bool, give_up_after: float, skew: float, bound: float
) -> None:
    """A history that lists unended jobs would show the job from its submit on: look for it
    min(setting, max(1 min, 2 x skew)); one that lists only ended jobs: the setting. Seconds."""
    got = give_up_bound(lists_unended, timedelta(seconds=give_up_after), timedelta(seconds=skew))
    assert got == timedelta(seconds=bound)
