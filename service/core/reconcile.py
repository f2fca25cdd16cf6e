"""Does fal have this job? Reconciling an ambiguous submit with fal's request history.

fal's submit has no idempotency key. When a submit's answer is lost (a reset after sending, a
timeout, a gateway 5xx) or a process dies between fal's answer and the ledger's, the relay
cannot tell from its own records whether fal created the job. So before each submit it records
an *intent*: the request_id, a digest of the exact body sent, and the time. An intent without
its ``submitted`` entry is then settled against fal's request history, which lists the
account's requests with their inputs:

- **Match by digest, by count.** Each history item is adopted at most once. If k open
  intents carry the same body (two requests with identical inputs), at most k items with that
  body are adopted: the oldest intent takes the oldest item sent at or after its own time
  (less a clock-skew margin), and so on. Items adopted before never match again.
- **No match means "keep looking"** while the intent is young: the history may list a job
  only once it has ended, minutes later. Only an intent older than a bound (a setting; the
  queue wait plus run time one expects) is submitted again. That bound is what a lost answer
  costs in waiting; a too-short one costs a second payment.

Pure: the shell reads the history (``service.adapters.fal_history``) and writes the ledger.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any


def body_digest(body: Mapping[str, Any]) -> str:
    """A digest of a submit's JSON body, the same for the body we sent and the one fal's
    history returns parsed (canonical JSON: sorted keys, no spaces, UTF-8)."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Intent:
    request_id: str
    digest: str
    at: datetime  # when the submit was about to be sent


@dataclass(frozen=True, slots=True)
class Seen:
    """One request in fal's history."""

    fal_request_id: str
    digest: str
    sent_at: datetime


def history_window(
    intents: Iterable[Intent], now: datetime, skew: timedelta
) -> tuple[datetime, datetime] | None:
    """The span of fal's history to read for ``intents``: from the oldest intent (less the
    skew margin) to now (plus it); None when there is nothing to settle."""
    oldest = min((i.at for i in intents), default=None)
    if oldest is None:
        return None
    return oldest - skew, now + skew


def match(
    intents: Iterable[Intent],
    seen: Iterable[Seen],
    adopted: Set[str],
    skew: timedelta,
) -> dict[str, str]:
    """request_id -> the fal request id it adopts. Each item at most once; per digest, open
    intents in time order take the oldest unadopted items sent no earlier than their own time
    less ``skew``."""
    waiting: dict[str, list[Intent]] = defaultdict(list)
    for intent in intents:
        waiting[intent.digest].append(intent)
    candidates: dict[str, list[Seen]] = defaultdict(list)
    for item in seen:
        if item.fal_request_id not in adopted and item.digest in waiting:
            candidates[item.digest].append(item)
    matched: dict[str, str] = {}
    taken: set[str] = set()
    for digest, group in waiting.items():
        items = sorted(candidates[digest], key=lambda s: (s.sent_at, s.fal_request_id))
        for intent in sorted(group, key=lambda i: (i.at, i.request_id)):
            for item in items:
                if item.fal_request_id in taken or item.sent_at < intent.at - skew:
                    continue
                matched[intent.request_id] = item.fal_request_id
                taken.add(item.fal_request_id)
                break
    return matched


class Verdict(enum.Enum):
    KEEP_LOOKING = "keep_looking"  # fal may list it later (when it ends)
    SUBMIT_AGAIN = "submit_again"  # old enough that fal surely would have listed it


def unmatched(intent: Intent, now: datetime, give_up_after: timedelta) -> Verdict:
    """What to do with an intent no history item matched (yet)."""
    if now - intent.at > give_up_after:
        return Verdict.SUBMIT_AGAIN
    return Verdict.KEEP_LOOKING


def give_up_bound(lists_unended: bool, give_up_after: timedelta, skew: timedelta) -> timedelta:
    """How long an intent is looked for before it is submitted again. A history seen to list
    jobs that have not ended (queued or running) would list this one from its submit on, so
    there absence soon means "not created": the skew margin twice, at least a minute. Otherwise
    fal may list it only once it ended: the setting (the queue wait plus run time expected)."""
    if lists_unended:
        return min(give_up_after, max(timedelta(minutes=1), 2 * skew))
    return give_up_after
