"""The emulator's settings: one frozen dataclass and its command-line form.

This module owns what can be tuned about the simulated fal queue (run and queue times, concurrency,
failure share, auth key, result retention, seed, served endpoints, injected faults, webhook
delivery, which jobs the request history lists, the unit price, whether refused inputs are
billed and the size of the output files) and how those knobs are spelled on the command line
(the fault vocabulary itself lives in ``faults``).
``cli`` adds the arguments and calls ``config_from_arguments``; nothing here reads argv
or the environment by itself.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from fal_emulator.faults import (
    DEFAULT_FAULT_KINDS,
    DEFAULT_RETRY_AFTER,
    DEFAULT_SLOW,
    NO_FAULTS,
    FaultKind,
    Faults,
    FaultSpec,
    parse_fault_spec,
    parse_kinds,
)
from fal_emulator.media import MIN_OUTPUT_SIZE

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8470
# fal retries a webhook 10 times over 2 hours; locally the same ten retries take about 4 minutes.
DEFAULT_WEBHOOK_RETRY_DELAYS = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0)
DEFAULT_WEBHOOK_USER_ID = "emulator-user"
DEFAULT_WEBHOOK_TIMEOUT = 15.0
# Which jobs the Platform API's request history lists: every job from its submission on (while
# queued or running with ``ended_at`` null), or only jobs that have ended. fal's own behaviour is
# unconfirmed, so a client must work with both.
HistoryLists = Literal["all", "ended"]
HISTORY_LISTS: tuple[HistoryLists, ...] = get_args(HistoryLists)
# What the emulator bills in: Lynx on fal costs $0.60 per second of output video, and the
# Platform API's pricing names the unit "second" (see ``fal-queue-protocol.md``). One price for
# every endpoint served, as ``fal-ai/lynx`` and ``bytedance/lynx`` are the same model.
BILLING_UNIT = "second"
CURRENCY = "USD"
DEFAULT_UNIT_PRICE = 0.60
# First path segments the emulator serves itself, so no endpoint id may start with them.
RESERVED_OWNERS = ("_emulator", "v1")
# The output file's size (``media``): small by default, so that tests that fetch it stay fast; a
# copy test or benchmark asks for 100-200 MB. Capped so that a typo cannot ask for a petabyte.
DEFAULT_OUTPUT_BYTES = 16 * 1024
MAX_OUTPUT_BYTES = 64 * 1024**3


@dataclass(frozen=True, slots=True)
class EmulatorConfig:
    """How the emulated fal queue behaves. Times are seconds; ranges are uniform ``(lo, hi)``."""

    run_time: tuple[float, float] = (0.2, 0.5)
    queue_wait: tuple[float, float] = (0.0, 0.0)
    max_concurrent: int | None = None
    failure_rate: float = 0.0
    # Kept out of repr so that logging or printing a config can never leak the key.
    fal_key: str | None = field(default=None, repr=False)
    result_ttl: float = 3600.0
    seed: int | None = None
    endpoints: tuple[str, ...] = ("fal-ai/lynx", "bytedance/lynx")
    # Injected faults at start; ``FalEmulator.reconfigure`` can change them while it runs.
    faults: Faults = NO_FAULTS
    # Webhooks (``?fal_webhook=``): the user id they are signed for; the seed of the Ed25519
    # signing key (None: a fresh random key each start); the waits before each retry (their
    # number is the number of retries); each attempt's timeout; and the share of webhooks
    # "lost" outright (``reconfigure`` can change it while running).
    webhook_user_id: str = DEFAULT_WEBHOOK_USER_ID
    webhook_key_seed: str | None = field(default=None, repr=False)
    webhook_retry_delays: tuple[float, ...] = DEFAULT_WEBHOOK_RETRY_DELAYS
    webhook_timeout: float = DEFAULT_WEBHOOK_TIMEOUT
    webhook_drop_rate: float = 0.0
    # Request history (Platform API): see ``HistoryLists``; ``reconfigure`` can change it.
    history_lists: HistoryLists = "all"
    # Billing: USD per billable unit (a second of output video), as the pricing endpoint serves
    # it; ``reconfigure`` can change it, so a test can watch a client pick up a new price. And
    # the units a job whose input the model refused (its 422) is billed: fal says a 422 *may*
    # be billed, so a client must handle both; 0 (the default) bills it nothing.
    unit_price: float = DEFAULT_UNIT_PRICE
    bill_user_errors: float = 0.0
    # Bytes of each succeeded job's output file (its result's ``video.file_size``): a valid MP4
    # padded to this size (``media``), streamed. A prompt's ``[emulator:output-bytes=N]`` sets
    # one job's.
    output_bytes: int = DEFAULT_OUTPUT_BYTES

    def __post_init__(self) -> None:
        for name in ("run_time", "queue_wait"):
            lo, hi = getattr(self, name)
            if not (_finite(lo) and _finite(hi) and 0 <= lo <= hi):
                raise ValueError(f"{name} must be 0 <= lo <= hi, got ({lo}, {hi})")
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise ValueError(f"max_concurrent must be at least 1, got {self.max_concurrent}")
        if not (_finite(self.failure_rate) and 0.0 <= self.failure_rate <= 1.0):
            raise ValueError(f"failure_rate must be within [0, 1], got {self.failure_rate}")
        if self.fal_key is not None and not self.fal_key:
            raise ValueError("fal_key must be non-empty when set")
        if not (self.result_ttl > 0):
            raise ValueError(f"result_ttl must be positive, got {self.result_ttl}")
        if not self.endpoints:
            raise ValueError("endpoints must name at least one endpoint id")
        for endpoint in self.endpoints:
            parts = [part for part in endpoint.split("/") if part]
            if len(parts) < 2:
                raise ValueError(f"endpoint id {endpoint!r} is not of the form owner/alias")
            if parts[0] in RESERVED_OWNERS:
                raise ValueError(f"endpoint id {endpoint!r} would hide the emulator's own routes")
        check_history_lists(self.history_lists)
        check_unit_price(self.unit_price)
        if not (_finite(self.bill_user_errors) and self.bill_user_errors >= 0):
            raise ValueError(f"bill_user_errors must be 0 or more, got {self.bill_user_errors}")
        check_output_bytes(self.output_bytes)
        self._check_webhooks()

    def _check_webhooks(self) -> None:
        if not self.webhook_user_id or any(c in self.webhook_user_id for c in "\r\n"):
            raise ValueError("webhook_user_id must be non-empty and on one line")
        if self.webhook_key_seed is not None and not self.webhook_key_seed:
            raise ValueError("webhook_key_seed must be non-empty when set")
        if not all(_finite(delay) and delay >= 0 for delay in self.webhook_retry_delays):
            raise ValueError(
                f"webhook_retry_delays must be finite and >= 0, got {self.webhook_retry_delays}"
            )
        if not (_finite(self.webhook_timeout) and self.webhook_timeout > 0):
            raise ValueError(f"webhook_timeout must be positive, got {self.webhook_timeout}")
        check_drop_rate(self.webhook_drop_rate)


def check_drop_rate(rate: object) -> float:
    """``rate`` as a webhook drop share within [0, 1]. Raises ``ValueError``."""
    if (
        isinstance(rate, int | float)
        and not isinstance(rate, bool)
        and math.isfinite(rate)
        and 0.0 <= rate <= 1.0
    ):
        return float(rate)
    raise ValueError(f"webhook_drop_rate must be a number within [0, 1], got {rate!r}")


def check_history_lists(value: object) -> HistoryLists:
    """``value`` as a history mode, ``"all"`` or ``"ended"``. Raises ``ValueError``."""
    for mode in HISTORY_LISTS:
        if value == mode:
            return mode
    raise ValueError(f"history_lists must be one of {', '.join(HISTORY_LISTS)}, got {value!r}")


def check_unit_price(price: object) -> float:
    """``price`` as a unit price: a finite number, 0 or more. Raises ``ValueError``."""
    if (
        isinstance(price, int | float)
        and not isinstance(price, bool)
        and math.isfinite(price)
        and price >= 0
    ):
        return float(price)
    raise ValueError(f"unit_price must be a number, 0 or more, got {price!r}")


def check_output_bytes(size: object) -> int:
    """``size`` as an output file size: an integer within [``MIN_OUTPUT_SIZE``,
    ``MAX_OUTPUT_BYTES``]. Raises ``ValueError``."""
    if (
        isinstance(size, int)
        and not isinstance(size, bool)
        and MIN_OUTPUT_SIZE <= size <= MAX_OUTPUT_BYTES
    ):
        return size
    raise ValueError(
        f"output_bytes must be an integer within [{MIN_OUTPUT_SIZE}, {MAX_OUTPUT_BYTES}], "
        f"got {size!r}"
    )


_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def parse_size(text: str) -> int:
    """``"4096"`` -> 4096; ``"256K"``, ``"100M"``, ``"1G"`` (also ``KiB``/``MiB``/``GiB``, any
    case): binary multiples. Raises ``ValueError``."""
    spelled = text.strip().lower().removesuffix("ib").removesuffix("b")
    number, unit = spelled, ""
    if spelled and spelled[-1] in _SIZE_UNITS:
        number, unit = spelled[:-1], spelled[-1]
    if not (number.isascii() and number.isdigit() and len(number) <= 15):
        raise ValueError(f"{text!r} is not a size in bytes (like 4096, 256K, 100M, 1G)")
    return check_output_bytes(int(number) * _SIZE_UNITS[unit])


def _size_argument(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _finite(value: float) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def parse_range(text: str) -> tuple[float, float]:
    """``"0.2"`` -> ``(0.2, 0.2)``; ``"0.2-0.5"`` -> ``(0.2, 0.5)``. Raises ``ValueError``."""
    try:
        # A plain number first, so that "1e-3" is not split at its exponent's minus sign.
        lo = hi = float(text)
    except ValueError:
        lo_text, sep, hi_text = text.strip().partition("-")
        try:
            lo = float(lo_text)
            hi = float(hi_text) if sep else lo
        except ValueError:
            raise ValueError(f"{text!r} is not SECONDS or LO-HI") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 <= lo <= hi):
        raise ValueError(f"{text!r} must satisfy 0 <= LO <= HI")
    return (lo, hi)


def _range_argument(text: str) -> tuple[float, float]:
    try:
        return parse_range(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_int_or_none(text: str) -> int | None:
    # 0 spells "unlimited" so a deployment can switch the limit off without removing the flag.
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 (unlimited) or positive")
    return value or None


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise argparse.ArgumentTypeError(f"{text!r} must be within [0, 1]")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    return value


_FAULTS_HELP = (
    "Each queue call (submit, status, result, cancel) can get a fault instead of its answer, "
    "drawn from a seeded RNG of its own. SPEC is comma-separated ENDPOINT=RATE[:KIND+KIND...], "
    "e.g. 'status=0.2,result=0.1:503-model+429,submit=0.05:lost-answer'; an endpoint that names "
    "no kinds picks uniformly from --fault-kinds (those that apply to it). Kinds: 429 (with "
    "Retry-After), 502/503/504 (the gateway's HTML page, no x-fal-request-id), reset (the "
    "connection is dropped without an answer), slow (a normal answer after --fault-slow); "
    "submit only, never in --fault-kinds' default: lost-answer (the job is created, then the "
    "connection dropped) and lost-answer-502 (the job is created, then the gateway's 502 page, "
    "no x-fal-request-id), counted as 'submits_created_then_lost' in the stats; result only: "
    "500-model/503-model (with x-fal-request-id: the model failed; decided once per job at "
    "submit, every result GET of that job then answers it, and the job's outcome is "
    "model_error; the result RATE is shared equally among the listed kinds). A faulted submit "
    "creates no job (except the lost answers and slow); a faulted status, result or cancel "
    "never changes the job. Counts are in GET /_emulator/stats under 'faults' (per job with "
    "?jobs=1); POST /_emulator/config changes the faults and the key at runtime."
)


def _fault_spec(text: str) -> FaultSpec:
    try:
        return parse_fault_spec(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _fault_kinds(text: str) -> tuple[FaultKind, ...]:
    try:
        return parse_kinds(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more")
    return value


def parse_delays(text: str) -> tuple[float, ...]:
    """``"0.1,0.5,2"`` -> ``(0.1, 0.5, 2.0)``; ``""`` or ``"none"`` -> no retries."""
    if text.strip().lower() in ("", "none"):
        return ()
    delays: list[float] = []
    for part in text.split(","):
        try:
            delay = float(part)
        except ValueError:
            raise ValueError(f"{part.strip()!r} is not a number of seconds") from None
        if not (math.isfinite(delay) and delay >= 0):
            raise ValueError(f"{part.strip()!r} must be 0 or more")
        delays.append(delay)
    return tuple(delays)


def _delays_argument(text: str) -> tuple[float, ...]:
    try:
        return parse_delays(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _non_empty(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


_WEBHOOKS_HELP = (
    "A submit with ?fal_webhook=URL gets a POST to URL when its job completes (succeeded, "
    "failed or cancelled), signed as fal signs it: headers X-Fal-Webhook-Request-Id, "
    "-User-Id, -Timestamp and -Signature (hex Ed25519 over request_id, user_id, timestamp and "
    "sha256_hex(body), newline-separated). The public keys are served at GET "
    "/_emulator/jwks.json (also /.well-known/jwks.json); POST /_emulator/jwks/rotate adds a "
    "key that signs from then on. A non-2xx answer or a connection error is retried after each "
    "of --webhook-retry-delays in turn, then given up. Hosts under example.com/.net/.org, "
    ".example and .invalid are never contacted (every attempt fails). Counts are in GET "
    "/_emulator/stats under 'webhooks' (attempts per job with ?jobs=1)."
)


_PLATFORM_HELP = (
    "fal's Platform API is served under /v1 (FalEmulator.api_url, the value for FAL_API_URL): "
    "GET /v1/models/requests/by-endpoint?endpoint_id=...[&start=&end=&status=&request_id=&limit="
    "&cursor=&sort_by=&expand=payloads] lists the emulator's jobs (request history), DELETE "
    "/v1/models/requests/{request_id}/payloads forgets a job's input and output, GET "
    "/v1/models/pricing?endpoint_id=...[&endpoint_id=...] answers each endpoint's --unit-price. "
    "All want the same key as the queue."
)


_BILLING_HELP = (
    "Lynx is billed per second of output video: a job that succeeded is billed num_frames / "
    "frames_per_second of its input (fal's defaults 81 and 16: 5.0625 units), and its result "
    "answer (GET .../requests/{id}, every time it is fetched) carries the header "
    "'X-Fal-Billable-Units: 5.0625'. A refused input (the model's 422) is billed "
    "--bill-user-errors-units; server errors (5xx, the 500-model/503-model fates, gateway "
    "faults), start timeouts and cancelled jobs never are, and their answers carry no such "
    "header. Queue time never counts. The bill is in GET /_emulator/stats under 'billing' "
    "(billed_units per job with ?jobs=1): a job is billed once, when it ends, fetched or not."
)


_OUTPUT_HELP = (
    "A job that succeeded has one output file, GET /_emulator/files/{request_id}/output.mp4 "
    "(its result's video.url; no key needed): a valid MP4 (ftyp, moov with one video track of "
    "the job's frame size and no samples, then an mdat box of padding up to the size), the same "
    "bytes for the same request id and size (fal_emulator.media.output_bytes), streamed in "
    "256 KiB chunks with its Content-Length, so a file of hundreds of MB costs no memory. Its "
    "size is the result's video.file_size: --output-bytes, or a prompt's "
    "[emulator:output-bytes=N] for one job."
)


def faults_from_arguments(args: argparse.Namespace) -> Faults:
    """The ``Faults`` that ``--faults``, ``--fault-kinds``, ``--fault-retry-after`` and
    ``--fault-slow`` describe. Raises ``ValueError`` when named kinds apply to no endpoint."""
    spec: FaultSpec = args.faults or {}
    return Faults.build(
        spec, kinds=args.fault_kinds, retry_after=args.fault_retry_after, slow=args.fault_slow
    )


class _CheckedFaults(argparse.Action):
    """Stores the value, then checks the fault options together so that a spec and a kinds
    list that do not fit are a usage error, not a traceback later."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, values)
        try:
            faults_from_arguments(namespace)
        except ValueError as exc:
            parser.error(str(exc))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``fal-emulator serve`` options; defaults mirror ``EmulatorConfig``."""
    defaults = EmulatorConfig()
    parser.add_argument("--host", default=DEFAULT_HOST, help="address to listen on")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (0 picks a free one)")
    parser.add_argument(
        "--run-time",
        type=_range_argument,
        default=defaults.run_time,
        metavar="SECONDS|LO-HI",
        help="how long a job runs once started (default: %(default)s)",
    )
    parser.add_argument(
        "--queue-wait",
        type=_range_argument,
        default=defaults.queue_wait,
        metavar="SECONDS|LO-HI",
        help="extra time a job waits IN_QUEUE before it may start (default: %(default)s)",
    )
    parser.add_argument(
        "--max-concurrent",
        type=_positive_int_or_none,
        default=defaults.max_concurrent,
        metavar="N",
        help="jobs running at once; the rest wait IN_QUEUE (default: unlimited; 0 = unlimited)",
    )
    parser.add_argument(
        "--failure-rate",
        type=_rate,
        default=defaults.failure_rate,
        metavar="SHARE",
        help="share of jobs that fail while running with runner_disconnected (default: 0)",
    )
    parser.add_argument(
        "--fal-key",
        default=defaults.fal_key,
        metavar="KEY",
        help="accept only 'Authorization: Key KEY' (default: any non-empty key)",
    )
    parser.add_argument(
        "--result-ttl",
        type=_positive_float,
        default=defaults.result_ttl,
        metavar="SECONDS",
        help="how long a result is kept after completion (default: %(default)s)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=defaults.seed,
        help="seed for run times, failures, seeds and fault draws",
    )
    faults = parser.add_argument_group("fault injection", description=_FAULTS_HELP)
    faults.add_argument(
        "--faults",
        type=_fault_spec,
        action=_CheckedFaults,
        default=None,
        metavar="SPEC",
        help="per-endpoint fault rates and kinds (default: none)",
    )
    faults.add_argument(
        "--fault-kinds",
        type=_fault_kinds,
        action=_CheckedFaults,
        default=DEFAULT_FAULT_KINDS,
        metavar="KIND,...",
        help="kinds for endpoints whose SPEC names none (default: "
        + ",".join(kind.value for kind in DEFAULT_FAULT_KINDS)
        + ")",
    )
    faults.add_argument(
        "--fault-retry-after",
        type=_non_negative_float,
        default=DEFAULT_RETRY_AFTER,
        metavar="SECONDS",
        help="Retry-After of an injected 429, fractions allowed (default: %(default)s)",
    )
    faults.add_argument(
        "--fault-slow",
        type=_range_argument,
        default=DEFAULT_SLOW,
        metavar="SECONDS|LO-HI",
        help="delay of a slow answer (default: %(default)s)",
    )
    webhooks = parser.add_argument_group("webhooks", description=_WEBHOOKS_HELP)
    webhooks.add_argument(
        "--webhook-user-id",
        type=_non_empty,
        default=defaults.webhook_user_id,
        metavar="ID",
        help="the X-Fal-Webhook-User-Id that webhooks are signed for (default: %(default)s)",
    )
    webhooks.add_argument(
        "--webhook-key-seed",
        type=_non_empty,
        default=defaults.webhook_key_seed,
        metavar="TEXT",
        help="derive the signing keys from TEXT, for the same JWKS every start "
        "(default: a random key per start)",
    )
    webhooks.add_argument(
        "--webhook-retry-delays",
        type=_delays_argument,
        default=defaults.webhook_retry_delays,
        metavar="SECONDS,...",
        help="waits before each retry of a failed delivery; '' or 'none' for no retries "
        "(default: " + ",".join(f"{d:g}" for d in defaults.webhook_retry_delays) + ")",
    )
    webhooks.add_argument(
        "--webhook-timeout",
        type=_positive_float,
        default=defaults.webhook_timeout,
        metavar="SECONDS",
        help="timeout of one delivery attempt (default: %(default)s)",
    )
    webhooks.add_argument(
        "--webhook-drop-rate",
        type=_rate,
        default=defaults.webhook_drop_rate,
        metavar="SHARE",
        help="share of webhooks lost outright: never sent, counted as dropped; POST "
        "/_emulator/config {'webhook_drop_rate': SHARE} changes it at runtime (default: 0)",
    )
    platform = parser.add_argument_group("platform API", description=_PLATFORM_HELP)
    platform.add_argument(
        "--history-lists",
        choices=HISTORY_LISTS,
        default=defaults.history_lists,
        help="which jobs the request history lists: 'all' from their submission on (ended_at "
        "null while queued or running) or only those that have 'ended' (fal's behaviour is "
        "unconfirmed); POST /_emulator/config {'history_lists': ...} changes it at runtime "
        "(default: %(default)s)",
    )
    billing = parser.add_argument_group("billing", description=_BILLING_HELP)
    billing.add_argument(
        "--unit-price",
        type=_non_negative_float,
        default=defaults.unit_price,
        metavar="USD",
        help="price of one billable unit (a second of video), served by GET "
        "/v1/models/pricing; POST /_emulator/config {'unit_price': USD} changes it at runtime, "
        "and a job is charged the price in force when it ends (default: %(default)s)",
    )
    billing.add_argument(
        "--bill-user-errors-units",
        type=_non_negative_float,
        default=defaults.bill_user_errors,
        metavar="UNITS",
        help="units billed for a job whose input the model refused (its 422), carried on that "
        "422 result answer; 0 bills nothing and sends no header (default: %(default)s)",
    )
    output = parser.add_argument_group("output files", description=_OUTPUT_HELP)
    output.add_argument(
        "--output-bytes",
        type=_size_argument,
        default=defaults.output_bytes,
        metavar="SIZE",
        help=f"size of each output file in bytes, or with a K/M/G suffix (binary: 100M is "
        f"104857600); at least {MIN_OUTPUT_SIZE} (default: %(default)s)",
    )


def config_from_arguments(args: argparse.Namespace) -> EmulatorConfig:
    """The config the parsed ``add_arguments`` options describe (host and port are not config)."""
    return EmulatorConfig(
        run_time=args.run_time,
        queue_wait=args.queue_wait,
        max_concurrent=args.max_concurrent,
        failure_rate=args.failure_rate,
        fal_key=args.fal_key,
        result_ttl=args.result_ttl,
        seed=args.seed,
        faults=faults_from_arguments(args),
        webhook_user_id=args.webhook_user_id,
        webhook_key_seed=args.webhook_key_seed,
        webhook_retry_delays=args.webhook_retry_delays,
        webhook_timeout=args.webhook_timeout,
        webhook_drop_rate=args.webhook_drop_rate,
        history_lists=args.history_lists,
        unit_price=args.unit_price,
        bill_user_errors=args.bill_user_errors_units,
        output_bytes=args.output_bytes,
    )
