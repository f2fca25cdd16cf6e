"""``lynx-relay dlq list | redrive``: the dead letters, and sending them back once fixed.

A dead letter is the refused record's own key, value and headers, with ``x-relay-*`` headers
that say why (code, message) and where it came from (topic, partition, offset).

``redrive`` republishes the original key, value and headers to the topic the letter came
from, after the fix (usually a setting: an allowed image host, a size limit). It is safe to
run twice: it sends only letters whose request the ledger does not know yet and that the
input checks of the current settings now accept, and a second copy that still reaches the
relay is dropped there as a duplicate of the same request_id. Letters with no readable
request_id are never sent back: nothing could tell their copies apart, and the same bytes
would only be refused again.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from service.adapters.kafka_tools import TopicMissing, TopicRecord, publisher, read_topic
from service.app import StartupError, read_ledger
from service.cli.common import Refused, moment, settings
from service.config import Settings
from service.core.ledger import LedgerView
from service.decoding import Rejection, decode_request
from service.logs import configure_logging

_OURS = "x-relay-"
REDRIVEN_FROM = "x-relay-redriven-from"


@dataclass(frozen=True, slots=True)
class Letter:
    record: TopicRecord
    code: str
    message: str
    source_topic: str | None
    request_id: str | None

    @property
    def position(self) -> str:
        return f"{self.record.topic}/{self.record.partition}@{self.record.offset}"

    def as_json(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "at": self.record.timestamp.isoformat(),
            "code": self.code,
            "message": self.message,
            "request_id": self.request_id,
            "source": "{}/{}@{}".format(
                self.source_topic,
                self.record.header("x-relay-source-partition"),
                self.record.header("x-relay-source-offset"),
            ),
            "value_omitted": self.record.header("x-relay-value-omitted"),
        }


def _request_id(value: bytes | None) -> str | None:
    """The request_id a refused value names, if it is JSON with one; the relay's own rules
    decide whether it is a valid one."""
    if value is None:
        return None
    try:
        body = json.loads(value)
    except ValueError:
        return None
    rid = body.get("request_id") if isinstance(body, dict) else None
    return rid if isinstance(rid, str) else None


def letter(record: TopicRecord) -> Letter:
    return Letter(
        record=record,
        code=record.header("x-relay-error-code") or "unknown",
        message=record.header("x-relay-error-message") or "",
        source_topic=record.header("x-relay-source-topic"),
        request_id=_request_id(record.value),
    )


async def letters(
    config: Settings, codes: list[str], since: datetime | None, until: datetime | None
) -> list[Letter]:
    found = []
    try:
        async for record in read_topic(config, config.relay_dead_letter_topic, since=since):
            one = letter(record)
            if codes and one.code not in codes:
                continue
            if until is not None and record.timestamp >= until:
                continue
            found.append(one)
    except TopicMissing:
        return []
    return found


def _filters(args: argparse.Namespace) -> tuple[list[str], datetime | None, datetime | None]:
    return (
        list(args.code or []),
        moment(args.since) if args.since else None,
        moment(args.until) if args.until else None,
    )


def cmd_list(args: argparse.Namespace) -> int:
    config = settings()
    configure_logging("warning")
    found = asyncio.run(letters(config, *_filters(args)))
    if args.json:
        print(json.dumps([one.as_json() for one in found], indent=2))
        return 0
    for one in found:
        print(
            f"{one.position}  {one.record.timestamp.isoformat(timespec='seconds')}  "
            f"{one.code:<18} {one.request_id or '-'}  {one.message}"
        )
    print(f"{len(found)} dead letter(s) in {config.relay_dead_letter_topic}")
    return 0


def why_not(one: Letter, config: Settings, known: set[str], sending: set[str]) -> str | None:
    """Why this letter is not sent back; None if it is."""
    if one.record.value is None:
        return f"its value was not kept ({one.record.header('x-relay-value-omitted')})"
    if one.request_id is None:
        return "it has no readable request_id (fix it and publish it as a new request)"
    if one.request_id in known:
        return "the relay has accepted this request_id since (sent back before?)"
    if one.request_id in sending:
        return "an earlier letter of this request_id is being sent back"
    decoded = decode_request(one.record.value, config.input_policy)
    if isinstance(decoded, Rejection):
        return f"still refused with these settings ({decoded.reason}): {decoded.message}"
    return None


async def _redrive(config: Settings, args: argparse.Namespace) -> tuple[int, int]:
    found = await letters(config, *_filters(args))
    try:
        view = await read_ledger(
            config,
            "lynx-relay dlq redrive",
            LedgerView(timedelta(seconds=config.relay_dedupe_retention_s)),
        )
    except StartupError as exc:
        raise Refused(str(exc)) from None
    known = {one.request_id for one in found if one.request_id and view.get(one.request_id)}
    chosen: list[tuple[Letter, str]] = []
    sending: set[str] = set()
    for one in found:
        reason = why_not(one, config, known, sending)
        if reason is not None:
            print(f"skip  {one.position}  {one.request_id or '-'}: {reason}")
            continue
        assert one.request_id is not None
        sending.add(one.request_id)
        chosen.append((one, args.to or one.source_topic or config.relay_requests_topic))
    async with publisher(config) as out:
        for one, topic in chosen:
            verb = "would send" if args.dry_run else "sent"
            if not args.dry_run:
                kept = [(k, v) for k, v in one.record.headers if not k.startswith(_OURS)]
                headers = (*kept, (REDRIVEN_FROM, one.position.encode()))
                await out.send(topic, one.record.key, one.record.value, headers)
            print(f"{verb}  {one.position}  {one.request_id} -> {topic}")
    return len(chosen), len(found) - len(chosen)


def cmd_redrive(args: argparse.Namespace) -> int:
    config = settings()
    configure_logging("warning")
    sent, skipped = asyncio.run(_redrive(config, args))
    what = "would send back" if args.dry_run else "sent back"
    print(f"{what} {sent}, skipped {skipped}")
    return 0


def _add_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--code",
        action="append",
        help="only letters with this error code (x-relay-error-code: schema, policy, "
        "too_large, not_json, ...); repeatable",
    )
    parser.add_argument("--since", help="only letters dead-lettered at or after this time")
    parser.add_argument("--until", help="only letters dead-lettered before this time")


def register(sub: Any) -> None:
    dlq = sub.add_parser("dlq", help="list the dead letters, or send them back once fixed")
    verbs = dlq.add_subparsers(dest="verb", required=True, metavar="VERB")
    listing = verbs.add_parser("list", help="the dead letters, with why each was refused")
    _add_filters(listing)
    listing.add_argument("--json", action="store_true", help="a JSON array instead of lines")
    listing.set_defaults(func=cmd_list)
    redrive = verbs.add_parser(
        "redrive",
        help="republish letters (original key, value, headers) to the topic they came from; "
        "safe to run twice",
    )
    _add_filters(redrive)
    redrive.add_argument("--to", help="publish to this topic instead of the letter's source")
    redrive.add_argument(
        "--dry-run", action="store_true", help="say what would be sent, send nothing"
    )
    redrive.set_defaults(func=cmd_redrive)
