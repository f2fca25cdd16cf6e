"""``lynx-relay submit``: one request from flags or a JSON file, published to the requests
topic; then its progress and its result event, as the relay publishes them.

stdout carries only the result event (one JSON object), so a script can read it; the progress
display goes to stderr: one line redrawn in place on a terminal, one line per event
otherwise. Exit 0 when the request succeeded, 1 when it failed, was cancelled, or no result
came within ``--timeout``; 2 for a request the relay would refuse (checked here first).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import mimetypes
import sys
import time
import uuid
from pathlib import Path
from typing import Any, TextIO

from service.adapters.kafka_tools import Follower, TopicMissing, follow, publisher
from service.cli.common import Refused, settings
from service.config import Settings
from service.decoding import InputPolicy, Rejection, decode_request
from service.messages import ProgressEvent, ResultEvent, VideoRequest


def image_url(text: str) -> str:
    """An https URL (or a data URI) as given; a local file becomes a base64 data URI."""
    if text.startswith(("https://", "http://", "data:")):
        return text
    path = Path(text).expanduser()
    if not path.is_file():
        raise Refused(f"--image: no such file, and not a URL: {text}")
    mime = mimetypes.guess_type(path.name)[0]
    if mime is None or not mime.startswith("image/"):
        raise Refused(f"--image: {path.name} is not an image file by its name ({mime})")
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"


def _value(text: str) -> Any:
    """``--input k=v``: v as JSON when it is JSON (numbers, true, null), else the string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def build_request(args: argparse.Namespace, policy: InputPolicy) -> VideoRequest:
    """The request from ``--file`` (if any), with the flags laid over it, checked as the relay
    checks it (the schema, and the input policy of the settings in the environment)."""
    body: dict[str, Any] = {}
    if args.file:
        try:
            loaded = json.loads(Path(args.file).read_text())
        except (OSError, ValueError) as exc:
            raise Refused(f"--file: {exc}") from None
        if not isinstance(loaded, dict):
            raise Refused("--file: the JSON is not an object")
        body = loaded
    inputs: dict[str, Any] = dict(body.get("input") or {})
    flags = {
        "image_url": image_url(args.image) if args.image else None,
        "prompt": args.prompt,
        "num_frames": args.num_frames,
        "resolution": args.resolution,
    }
    inputs.update({name: value for name, value in flags.items() if value is not None})
    for pair in args.input or []:
        name, sep, raw = pair.partition("=")
        if not sep:
            raise Refused(f"--input {pair!r}: expected NAME=VALUE")
        inputs[name] = _value(raw)
    body["input"] = inputs
    if args.request_id:
        body["request_id"] = args.request_id
    body.setdefault("request_id", f"cli-{uuid.uuid4()}")
    if args.tenant:
        body["tenant"] = args.tenant
    if args.priority:
        body["options"] = {**(body.get("options") or {}), "priority": args.priority}
    decoded = decode_request(json.dumps(body).encode(), policy)
    if isinstance(decoded, Rejection):
        raise Refused(f"the relay would refuse this request ({decoded.reason}): {decoded.message}")
    if not isinstance(decoded, VideoRequest):
        raise Refused("--file holds a cancel, not a request")
    return decoded


class Display:
    """The progress of one request on stderr."""

    def __init__(self, out: TextIO, started: float) -> None:
        self._out = out
        self._live = out.isatty()
        self._started = started
        self._status = "published, waiting for the relay"

    def _elapsed(self) -> str:
        return f"{time.monotonic() - self._started:6.1f} s"

    def status(self, text: str) -> None:
        self._status = text
        if self._live:
            self.tick()
        else:
            print(f"[{self._elapsed()}] {text}", file=self._out, flush=True)

    def line(self, text: str) -> None:
        """A line that stays (a log line of fal's): printed above the live status."""
        if self._live:
            self._out.write("\r\033[K")
        print(f"[{self._elapsed()}] {text}", file=self._out, flush=True)
        if self._live:
            self.tick()

    def tick(self) -> None:
        if self._live:
            self._out.write(f"\r\033[K[{self._elapsed()}] {self._status}")
            self._out.flush()

    def done(self) -> None:
        if self._live:
            self._out.write("\r\033[K")
            self._out.flush()

    def progress(self, event: ProgressEvent) -> None:
        if event.event == "queued":
            where = "" if event.queue_position is None else f", position {event.queue_position}"
            self.status(f"queued at fal{where}")
        elif event.event == "started":
            self.status(f"running at fal ({event.fal_request_id})")
        elif event.log is not None:
            self.line(f"fal: {event.log.message}")


async def _submit_and_watch(
    config: Settings, request: VideoRequest, *, wait: bool, timeout_s: float | None
) -> int:
    key = request.request_id.encode()
    value = request.model_dump_json(exclude_unset=True).encode()
    if not wait:
        async with publisher(config) as out:
            partition, offset = await out.send(config.relay_requests_topic, key, value)
        print(
            json.dumps(
                {
                    "request_id": request.request_id,
                    "topic": config.relay_requests_topic,
                    "partition": partition,
                    "offset": offset,
                }
            )
        )
        return 0
    topics = [config.relay_results_topic]
    if config.relay_progress_topic:
        topics.append(config.relay_progress_topic)
    try:
        async with follow(config, topics) as follower:
            # Followed first, published second: no answer can come before we listen.
            async with publisher(config) as out:
                await out.send(config.relay_requests_topic, key, value)
            return await _watch(config, follower, request.request_id, timeout_s)
    except TopicMissing as exc:
        raise Refused(f"{exc}: start the relay once (it creates its topics), then submit") from None


async def _watch(
    config: Settings, follower: Follower, request_id: str, timeout_s: float | None
) -> int:
    key = request_id.encode()
    display = Display(sys.stderr, time.monotonic())
    display.status(f"{request_id} published, waiting for the relay")
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while deadline is None or time.monotonic() < deadline:
        for record in await follower.records(timeout_s=0.5):
            if record.key != key or record.value is None:
                continue
            if record.topic == config.relay_results_topic:
                display.done()
                result = ResultEvent.model_validate_json(record.value)
                print(json.dumps(json.loads(record.value), indent=2))
                return 0 if result.status == "succeeded" else 1
            display.progress(ProgressEvent.model_validate_json(record.value))
        display.tick()
    display.done()
    print(
        f"lynx-relay: no result for {request_id} within {timeout_s} s; the request goes on "
        f"(lynx-relay requests show {request_id})",
        file=sys.stderr,
    )
    return 1


def cmd_submit(args: argparse.Namespace) -> int:
    config = settings()
    request = build_request(args, config.input_policy)
    return asyncio.run(
        _submit_and_watch(config, request, wait=not args.no_wait, timeout_s=args.timeout)
    )


def register(sub: Any) -> None:
    submit = sub.add_parser(
        "submit",
        help="publish one request (flags or a JSON file), show its progress, print its result",
        description="Publish one video request to the requests topic (KAFKA_* and RELAY_*_TOPIC "
        "settings as for `run`), then show its progress and print its result event. "
        "Exit 0 on success, 1 on failure or --timeout, 2 if the request is invalid.",
    )
    submit.add_argument("--file", help="a request as JSON; the flags below are laid over it")
    submit.add_argument("--image", help="the subject image: an https URL or a local file")
    submit.add_argument("--prompt", help="the text prompt")
    submit.add_argument("--num-frames", type=int, help="9 to 81 (fal's default: 81)")
    submit.add_argument("--resolution", choices=["480p", "580p", "720p"])
    submit.add_argument(
        "--input",
        action="append",
        metavar="NAME=VALUE",
        help="any other input field (VALUE read as JSON when it is JSON); repeatable",
    )
    submit.add_argument("--request-id", help="default: cli-<a new UUID>")
    submit.add_argument("--tenant")
    submit.add_argument("--priority", choices=["high", "normal", "low"])
    submit.add_argument(
        "--no-wait", action="store_true", help="publish, print where to, and exit at once"
    )
    submit.add_argument(
        "--timeout", type=float, default=None, help="stop waiting after this many seconds"
    )
    submit.set_defaults(func=cmd_submit)
