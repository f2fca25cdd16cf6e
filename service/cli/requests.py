"""``lynx-relay requests show ID``: what the job ledger and the results topic know of one
request: its state, its fal job, its times, its cost, and every result event published."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from pydantic import ValidationError

from service.adapters.kafka_tools import TopicMissing, read_topic
from service.app import StartupError, read_ledger
from service.cli.common import Refused, settings
from service.config import Settings
from service.core.ledger import LedgerEntry, WholeEntries
from service.logs import configure_logging
from service.messages import ResultEvent

# What a ledger state means to someone asking about their request.
_MEANING = {
    "intent": "being submitted to fal (or its answer was lost and is being looked up)",
    "submitted": "at fal: queued or running",
    "finished": "finished: its result event is published",
}


def _ledger(entry: LedgerEntry | None) -> dict[str, Any] | None:
    if entry is None:
        return None
    return {
        "state": entry.state,
        "meaning": _MEANING.get(entry.state, entry.state),
        "status": entry.status,
        "fal_request_id": entry.fal_id,
        "tenant": entry.tenant,
        "received_at": entry.received_at.isoformat() if entry.received_at else None,
        "at": entry.at.isoformat(),
        "units": entry.units,
        "amount": entry.amount,
        "source": f"{entry.source.topic}/{entry.source.partition}@{entry.source.offset}",
    }


async def _show(config: Settings, request_id: str) -> dict[str, Any]:
    try:
        view = await read_ledger(config, "lynx-relay requests show", WholeEntries([request_id]))
    except StartupError as exc:
        raise Refused(str(exc)) from None
    results: list[dict[str, Any]] = []
    try:
        async for record in read_topic(config, config.relay_results_topic, key=request_id.encode()):
            try:
                event = ResultEvent.model_validate_json(record.value or b"")
            except ValidationError:
                continue  # not one of ours: the topic is shared with nothing, but be safe
            results.append(
                {
                    "partition": record.partition,
                    "offset": record.offset,
                    "published_at": record.timestamp.isoformat(),
                    "event": event.model_dump(mode="json"),
                }
            )
    except TopicMissing:
        pass  # no result was ever published
    return {
        "request_id": request_id,
        "ledger": _ledger(view.get(request_id)),
        "results": results,
    }


def _print(found: dict[str, Any]) -> None:
    print(f"request {found['request_id']}")
    entry = found["ledger"]
    if entry is None:
        print("  ledger:  nothing (never accepted, or finished longer ago than the retention)")
    else:
        print(f"  ledger:  {entry['state']}: {entry['meaning']}")
        for name in ("status", "fal_request_id", "tenant", "received_at", "at", "source"):
            if entry[name] is not None:
                print(f"    {name + ':':<16}{entry[name]}")
        if entry["amount"] is not None:
            print(f"    {'cost:':<16}{entry['units']} units, {entry['amount']:.4f}")
    if not found["results"]:
        print("  results: none published")
    for result in found["results"]:
        event = result["event"]
        print(
            f"  result:  {event['status']} at {result['published_at']} "
            f"(partition {result['partition']}, offset {result['offset']})"
        )
        if event.get("error"):
            print(f"    {'error:':<16}{event['error']['code']}: {event['error']['message']}")
        if event.get("video"):
            print(f"    {'video:':<16}{event['video']['url']}")
        if event.get("fal_request_id"):
            print(f"    {'fal_request_id:':<16}{event['fal_request_id']}")


def cmd_show(args: argparse.Namespace) -> int:
    config = settings()
    configure_logging("warning")
    found = asyncio.run(_show(config, args.request_id))
    if args.json:
        print(json.dumps(found, indent=2))
    else:
        _print(found)
    # Known to either: 0; known to neither: 1, so a script can tell.
    return 0 if found["ledger"] is not None or found["results"] else 1


def register(sub: Any) -> None:
    requests = sub.add_parser("requests", help="what the relay knows of a request")
    verbs = requests.add_subparsers(dest="verb", required=True, metavar="VERB")
    show = verbs.add_parser(
        "show",
        help="its ledger state, fal id, times and cost, and its result events "
        "(exit 1 if neither knows it)",
    )
    show.add_argument("request_id")
    show.add_argument("--json", action="store_true", help="one JSON object instead of lines")
    show.set_defaults(func=cmd_show)
