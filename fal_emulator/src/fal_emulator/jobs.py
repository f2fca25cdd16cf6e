"""The simulated fal queue: what each job will do, its lifecycle table, and the scheduler.

Theory of operation. A submit turns the request body into a ``Plan`` at once: the run time, the
extra queue wait and the output seed are drawn from the emulator's RNG in a fixed order, the input
is validated the way the Lynx app would, and the prompt's ``[emulator:...]`` directives are read.
The plan fixes the job's fate; time only decides *when* it happens.

A job is IN_QUEUE until its queue wait is over and a run slot is free (``max_concurrent``), then
IN_PROGRESS for its run time, then COMPLETED with an ``Outcome``. Cancelling moves a queued or
running job straight to COMPLETED (``client_cancelled``). ``result_ttl`` after completion it is
EXPIRED: the queue answers 404 for it, as fal forgets results.

A start timeout (the submit's ``X-Fal-Request-Timeout`` or ``X-Fal-Request-Start-Timeout``, read
by ``wire.start_timeout``) is a deadline to *start*: a job still IN_QUEUE ``start_timeout``
seconds after its submit (queue wait not over, or no free slot) never runs. It goes straight to
COMPLETED with the outcome ``start_timeout`` (fal's ``request_timeout``, a 504 answered as the
user's own timeout), leaves the queue and, having never held a slot, frees none. A job that
starts exactly at its deadline has started in time: at equal times a finish and a queue wait's
end (and the starts they allow) come before a deadline. A job that started is never affected.

``Simulation`` is a discrete-event simulation with no I/O and no clock of its own: every method
takes ``now`` (monotonic seconds). ``advance(now)`` replays the events due up to ``now`` in time
order, each at its own time, so the state is the same whether it is called once late or many
times on time; the server calls it before answering and from one driver task that sleeps until
``next_wakeup()``. Heaps keep 10,000 jobs in flight cheap; entries made stale by a cancel are
skipped when they reach the top rather than searched for.

Start order: normal-priority jobs before low-priority ones, then submission order; a job whose
queue wait is not over yet is skipped, not waited for. ``queue_position`` counts the queued jobs
that sort before a job in that order (exact when ``queue_wait`` is fixed, approximate otherwise,
as fal's own position is).

Billing. A job is billed once, at the moment it completes, whether or not its result is ever
fetched, as fal's invoice would be: ``billable_units`` decides how much from its outcome (a
success: seconds of output video, ``num_frames / frames_per_second`` of its input; a refused
input: ``bill_user_errors``; anything else, server errors, start timeouts and cancels: nothing),
and it is charged ``Simulation.unit_price``, the price in force then (the server changes it at
runtime), so a later price change never re-prices a job already billed. Queue time never counts.
The job keeps ``billed_units`` and ``billed_amount`` (``wire`` puts the units on its result
answer) and ``Counters`` the totals.
"""

from __future__ import annotations

import enum
import heapq
import math
import random
import re
from bisect import bisect_left
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from pydantic import ValidationError

from fal_emulator.config import MAX_OUTPUT_BYTES, EmulatorConfig
from fal_emulator.lynx import LynxInput, download_error
from fal_emulator.media import MIN_OUTPUT_SIZE

# --- the lifecycle table ---------------------------------------------------------------------


class Phase(enum.Enum):
    """Where a job is. The first three are fal's status words; EXPIRED is the forgotten job."""

    IN_QUEUE = "IN_QUEUE"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    EXPIRED = "EXPIRED"


class Event(enum.Enum):
    START = "start"
    FINISH = "finish"
    CANCEL = "cancel"
    START_TIMEOUT = "start_timeout"  # still queued at the submit's start deadline
    EXPIRE = "expire"


TRANSITIONS: dict[tuple[Phase, Event], Phase] = {
    (Phase.IN_QUEUE, Event.START): Phase.IN_PROGRESS,
    (Phase.IN_QUEUE, Event.CANCEL): Phase.COMPLETED,
    (Phase.IN_QUEUE, Event.START_TIMEOUT): Phase.COMPLETED,
    (Phase.IN_PROGRESS, Event.FINISH): Phase.COMPLETED,
    (Phase.IN_PROGRESS, Event.CANCEL): Phase.COMPLETED,
    (Phase.COMPLETED, Event.EXPIRE): Phase.EXPIRED,
}


class IllegalTransition(Exception):
    """An event the job's phase does not allow: a bug in the simulation, never client input."""

    def __init__(self, phase: Phase, event: Event) -> None:
        super().__init__(f"{event.value} is not allowed in {phase.value}")
        self.phase = phase
        self.event = event


def next_phase(phase: Phase, event: Event) -> Phase:
    try:
        return TRANSITIONS[(phase, event)]
    except KeyError:
        raise IllegalTransition(phase, event) from None


class Outcome(enum.Enum):
    """How a completed job ended; decides its status fields and its result response."""

    SUCCEEDED = "succeeded"
    INVALID_INPUT = "invalid_input"  # the app's own 422, like FastAPI's validation error
    JOB_ERROR = "job_error"  # runner_disconnected: fal's infrastructure failed the job
    MODEL_ERROR = "model_error"  # the app answered 500 without an error in the status
    CANCELLED = "cancelled"
    START_TIMEOUT = "start_timeout"  # request_timeout: not started by the submit's deadline

    @property
    def failed(self) -> bool:
        return self in (
            Outcome.INVALID_INPUT,
            Outcome.JOB_ERROR,
            Outcome.MODEL_ERROR,
            Outcome.START_TIMEOUT,
        )


# --- what a submit decides -------------------------------------------------------------------

# A succeeded job's one output file; its bytes are ``media.output_chunks`` of its request id, its
# ``file_size`` and its frame size.
OUTPUT_FILE_NAME = "output.mp4"

# A plan's frame count, frame rate and steps when its input was refused (fal's defaults, as in
# ``lynx``).
DEFAULT_NUM_FRAMES = 81
DEFAULT_FPS = 16
DEFAULT_STEPS = 50

_SHORT_SIDE = {"480p": 480, "580p": 580, "720p": 720}
_SEED_LIMIT = 2**31

_DIRECTIVE_RE = re.compile(r"\[emulator:([a-z0-9-]+)(?:=([^\]]*))?\]")
# ASCII digits, few enough for ``int`` (a prompt may hold any number of them).
_SIZE_RE = re.compile(r"[0-9]{1,15}")


@dataclass(frozen=True, slots=True)
class Directives:
    """Test switches read from the prompt, so one request can ask for one fate."""

    job_error: bool = False
    result_500: bool = False
    result_503: bool = False
    run_time: float | None = None
    # The model refuses an input its schema accepts (Lynx finds no face to keep): a 422.
    refuse_input: bool = False
    # This job's output file size instead of the config's ``output_bytes``.
    output_bytes: int | None = None


def parse_directives(prompt: object) -> Directives:
    """``[emulator:job-error]``, ``[emulator:result-500]``, ``[emulator:result-503]``,
    ``[emulator:run=SECONDS]``, ``[emulator:refuse-input]``, ``[emulator:output-bytes=N]``.

    Unknown directives, unreadable run times and sizes out of the config's bounds are ignored:
    a prompt is free text.
    """
    if not isinstance(prompt, str):
        return Directives()
    job_error = result_500 = result_503 = refuse_input = False
    run_time: float | None = None
    output_bytes: int | None = None
    for name, value in _DIRECTIVE_RE.findall(prompt):
        if name == "job-error":
            job_error = True
        elif name == "refuse-input":
            refuse_input = True
        elif name == "result-500":
            result_500 = True
        elif name == "result-503":
            result_503 = True
        elif name == "run":
            try:
                seconds = float(value)
            except ValueError:
                continue
            if 0 <= seconds < float("inf"):
                run_time = seconds
        elif (
            name == "output-bytes"
            and _SIZE_RE.fullmatch(value)
            and MIN_OUTPUT_SIZE <= int(value) <= MAX_OUTPUT_BYTES
        ):
            output_bytes = int(value)
    return Directives(
        job_error=job_error,
        result_500=result_500,
        result_503=result_503,
        run_time=run_time,
        refuse_input=refuse_input,
        output_bytes=output_bytes,
    )


def video_dimensions(resolution: str, aspect_ratio: str) -> tuple[int, int]:
    """(width, height): the short side is the resolution's number, 16:9 rounded to even pixels.

    fal does not publish Lynx's exact frame sizes; these are plausible, not confirmed.
    """
    short = _SHORT_SIDE[resolution]
    long = 2 * round(short * 16 / 9 / 2)
    if aspect_ratio == "9:16":
        return (short, long)
    if aspect_ratio == "1:1":
        return (short, short)
    return (long, short)


def validate_input(body: Mapping[str, Any]) -> tuple[LynxInput | None, list[dict[str, Any]]]:
    """The Lynx app's verdict on a body: the input, or FastAPI-shaped ``detail`` entries.

    The schema is fal's own (``lynx.LynxInput``): unknown keys are ignored and validation is lax
    (``"81"`` is a fine ``num_frames``), as FastAPI's is. An image the app could not download
    (``lynx.download_error``) fails as its download would.
    """
    try:
        model = LynxInput.model_validate(dict(body), strict=False)
    except ValidationError as exc:
        return None, [
            {"loc": ["body", *error["loc"]], "msg": error["msg"], "type": error["type"]}
            for error in exc.errors(include_url=False, include_input=False)
        ]
    failed = download_error(model.image_url)
    if failed is not None:
        return None, [{"loc": ["body", "image_url"], "msg": failed, "type": "file_download_error"}]
    return model, []


def lynx_output(model: LynxInput, seed: int, file_size: int) -> dict[str, Any]:
    """The Lynx result without the video URL, which depends on the address it is fetched from;
    its file is ``file_size`` bytes."""
    width, height = video_dimensions(model.resolution, model.aspect_ratio)
    fps = model.frames_per_second
    return {
        "video": {
            "content_type": "video/mp4",
            "file_name": OUTPUT_FILE_NAME,
            "file_size": file_size,
            "width": width,
            "height": height,
            "fps": fps,
            "duration": model.num_frames / fps,
            "num_frames": model.num_frames,
        },
        "seed": model.seed if model.seed is not None else seed,
    }


@dataclass(frozen=True, slots=True)
class Plan:
    """A job's fate, fixed at submit: how long it waits and runs, how it ends unless cancelled."""

    outcome: Outcome
    run_time: float
    queue_wait: float
    output: dict[str, Any] | None = None
    validation_errors: list[dict[str, Any]] = field(default_factory=list)
    num_frames: int = DEFAULT_NUM_FRAMES
    # Seconds of output video, num_frames / frames_per_second: what a success is billed.
    video_seconds: float = DEFAULT_NUM_FRAMES / DEFAULT_FPS
    steps: int = DEFAULT_STEPS
    frame_size: tuple[int, int] = (1280, 720)
    # MODEL_ERROR only: the status the app's result answers with (500 or 503), and whether that
    # fate was injected (a ``500-model``/``503-model`` fault) rather than asked for by directive.
    model_status: int = 500
    model_fault: bool = False


def plan_job(body: Mapping[str, Any], config: EmulatorConfig, rng: random.Random) -> Plan:
    """Decide a job's fate. Draws run time, queue wait, failure and seed in that order, always,
    so a seeded emulator gives the n-th submission the same fate whatever the bodies were."""
    run_draw = rng.uniform(*config.run_time)
    wait_draw = rng.uniform(*config.queue_wait)
    fail_draw = rng.random()
    seed_draw = rng.randrange(_SEED_LIMIT)

    model, errors = validate_input(body)
    if model is None:
        # The app rejects the input as soon as it runs, so the run is over at once.
        return Plan(Outcome.INVALID_INPUT, 0.0, wait_draw, validation_errors=errors)
    directives = parse_directives(model.prompt)
    if directives.refuse_input:
        refused = [
            {
                "loc": ["body", "image_url"],
                "msg": "no face found in the reference image",
                "type": "value_error",
            }
        ]
        return Plan(Outcome.INVALID_INPUT, 0.0, wait_draw, validation_errors=refused)
    run_time = directives.run_time if directives.run_time is not None else run_draw
    if directives.job_error or fail_draw < config.failure_rate:
        outcome = Outcome.JOB_ERROR
    elif directives.result_500 or directives.result_503:
        outcome = Outcome.MODEL_ERROR
    else:
        outcome = Outcome.SUCCEEDED
    file_size = (
        directives.output_bytes if directives.output_bytes is not None else config.output_bytes
    )
    output = lynx_output(model, seed_draw, file_size)
    video = output["video"]
    return Plan(
        outcome,
        run_time,
        wait_draw,
        output=output if outcome is Outcome.SUCCEEDED else None,
        num_frames=video["num_frames"],
        video_seconds=video["duration"],
        steps=model.num_inference_steps,
        frame_size=(video["width"], video["height"]),
        model_status=503 if directives.result_503 and not directives.result_500 else 500,
    )


def with_model_fault(plan: Plan, status: int) -> Plan:
    """``plan`` turned into an injected model error answering ``status``, if it would succeed."""
    if plan.outcome is not Outcome.SUCCEEDED:
        return plan
    return replace(
        plan, outcome=Outcome.MODEL_ERROR, output=None, model_status=status, model_fault=True
    )


def billable_units(outcome: Outcome, plan: Plan, user_error_units: float) -> float:
    """What a job that ended with ``outcome`` is billed, in seconds of output video.

    Only what fal bills: a success is billed its video's length; a refused input (the model's
    422, a user error) ``user_error_units``, which fal may or may not bill; a server error (a
    job or model error), a start timeout and a cancel nothing.
    """
    if outcome is Outcome.SUCCEEDED:
        return plan.video_seconds
    if outcome is Outcome.INVALID_INPUT:
        return user_error_units
    return 0.0


# --- jobs and the scheduler ------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class Job:
    """One submission and where it is. Times are monotonic seconds, as passed to the simulation."""

    request_id: str
    gateway_request_id: str
    endpoint: str  # [ns/]owner/alias, the part status, result and cancel URLs use
    subpath: str | None
    input: dict[str, Any]
    headers_recorded: dict[str, str]
    webhook: str | None
    low_priority: bool
    seq: int
    submitted_at: float
    submitted_wall: float  # epoch seconds at submit, to turn monotonic times into timestamps
    plan: Plan
    eligible_at: float
    # Seconds after submit by which the job must have started (None: no deadline), and when.
    start_timeout: float | None = None
    start_deadline: float | None = None
    phase: Phase = Phase.IN_QUEUE
    outcome: Outcome | None = None
    started_at: float | None = None
    completed_at: float | None = None
    in_flight: bool = True  # from submit until the result is fetched after completion, or cancel
    # Faults injected into calls about this job: {endpoint: {kind: count}} (filled by the server).
    faults: dict[str, dict[str, int]] = field(default_factory=dict)
    # The Platform API deleted its stored payloads and output file: the request history shows
    # no input or output and the file is gone. ``input`` stays, as the emulator's own record.
    payloads_deleted: bool = False
    # What it was billed when it completed (0 until then, and for what is never billed), and
    # the amount at the unit price in force then.
    billed_units: float = 0.0
    billed_amount: float = 0.0

    def wall(self, t: float) -> float:
        """Epoch seconds of monotonic time ``t``."""
        return self.submitted_wall + (t - self.submitted_at)


class CancelOutcome(enum.Enum):
    REQUESTED = "CANCELLATION_REQUESTED"
    ALREADY_COMPLETED = "ALREADY_COMPLETED"
    NOT_FOUND = "NOT_FOUND"


@dataclass(slots=True)
class Counters:
    """Running totals, kept incrementally so that reading them is O(1)."""

    submissions: int = 0
    submissions_by_endpoint: dict[str, int] = field(default_factory=dict)
    in_flight: int = 0
    peak_in_flight: int = 0
    running: int = 0
    peak_running: int = 0
    completed: int = 0
    outcomes: dict[Outcome, int] = field(default_factory=lambda: dict.fromkeys(Outcome, 0))
    # The bill: jobs billed, their units and amounts (each at the price when it ended).
    jobs_billed: int = 0
    units_billed: float = 0.0
    amount_billed: float = 0.0


_NORMAL, _LOW = 0, 1
# The kinds of timed event ``advance`` replays, in the order they take at equal times.
_FINISH, _ELIGIBLE, _DEADLINE = 0, 1, 2
_Key = TypeVar("_Key", int, float)


class Simulation:
    """The queue of one emulator: submit, cancel, and ``advance(now)``; no I/O, no clock."""

    def __init__(self, config: EmulatorConfig, rng: random.Random) -> None:
        self._config = config
        self._rng = rng
        self._jobs: dict[str, Job] = {}
        self._seq = 0
        # Heaps of (time or rank, seq, job); seq is unique, so jobs are never compared.
        self._waiting: list[tuple[float, int, Job]] = []  # queued, queue wait not over yet
        self._ready: list[tuple[int, int, Job]] = []  # queued, may start when a slot frees
        self._running: list[tuple[float, int, Job]] = []  # by finish time
        self._deadlines: list[tuple[float, int, Job]] = []  # queued with a start timeout
        self._expiring: list[tuple[float, int, Job]] = []  # completed, by end of retention
        # Sorted seqs of the queued jobs of each priority, for queue positions by bisection.
        self._queued: tuple[list[int], list[int]] = ([], [])
        # Jobs with a webhook that completed since the last ``drain_completed`` (only those, so
        # that a simulation nobody drains does not grow).
        self._completed_with_webhook: list[Job] = []
        self.counters = Counters()
        # The unit price in force: a job is charged it when it completes. Not a config field
        # read each time, because the server changes it at runtime (``reconfigure``).
        self.unit_price = config.unit_price

    # --- commands ---

    def submit(
        self,
        *,
        now: float,
        wall: float,
        request_id: str,
        gateway_request_id: str,
        endpoint: str,
        subpath: str | None,
        body: dict[str, Any],
        headers_recorded: dict[str, str],
        webhook: str | None,
        low_priority: bool,
        model_error_status: int | None = None,
        start_timeout: float | None = None,
    ) -> tuple[Job, int]:
        """Enqueue a job; returns it and its queue position at submission.

        ``model_error_status`` (500 or 503) injects a model error into a job that would
        otherwise succeed; the plan's draws are the same either way. ``start_timeout``
        (positive seconds) is the deadline to start, after which a still queued job completes
        as ``start_timeout`` without running. Raises ``ValueError`` for a bad ``start_timeout``.
        """
        if start_timeout is not None and not (math.isfinite(start_timeout) and start_timeout > 0):
            raise ValueError(f"start_timeout must be positive seconds, got {start_timeout!r}")
        plan = plan_job(body, self._config, self._rng)
        if model_error_status is not None:
            plan = with_model_fault(plan, model_error_status)
        self._seq += 1
        job = Job(
            request_id=request_id,
            gateway_request_id=gateway_request_id,
            endpoint=endpoint,
            subpath=subpath,
            input=body,
            headers_recorded=headers_recorded,
            webhook=webhook,
            low_priority=low_priority,
            seq=self._seq,
            submitted_at=now,
            submitted_wall=wall,
            plan=plan,
            eligible_at=now + plan.queue_wait,
            start_timeout=start_timeout,
            start_deadline=None if start_timeout is None else now + start_timeout,
        )
        self._jobs[request_id] = job
        self._queued[self._rank(job)].append(job.seq)  # seqs grow, so appending keeps it sorted
        heapq.heappush(self._waiting, (job.eligible_at, job.seq, job))
        if job.start_deadline is not None:
            heapq.heappush(self._deadlines, (job.start_deadline, job.seq, job))
        counters = self.counters
        counters.submissions += 1
        counters.submissions_by_endpoint[endpoint] = (
            counters.submissions_by_endpoint.get(endpoint, 0) + 1
        )
        counters.in_flight += 1
        counters.peak_in_flight = max(counters.peak_in_flight, counters.in_flight)
        position = self.queue_position(job)
        self.advance(now)
        return job, position

    def cancel(self, request_id: str, now: float) -> CancelOutcome:
        """Cancel a queued or running job now; its slot goes to the next job at once."""
        self.advance(now)
        job = self._jobs.get(request_id)
        if job is None or job.phase is Phase.EXPIRED:
            return CancelOutcome.NOT_FOUND
        if job.phase is Phase.COMPLETED:
            return CancelOutcome.ALREADY_COMPLETED
        if job.phase is Phase.IN_QUEUE:
            self._unqueue(job)
        else:
            self.counters.running -= 1
        self._complete(job, Event.CANCEL, Outcome.CANCELLED, now)
        self._end_in_flight(job)
        self._fill(now)
        self.advance(now)  # a job started just now may already be due (zero run time)
        return CancelOutcome.REQUESTED

    def drain_completed(self) -> list[Job]:
        """The jobs with a webhook that completed since the last call, in completion order."""
        drained, self._completed_with_webhook = self._completed_with_webhook, []
        return drained

    def record_result_fetch(self, job: Job) -> None:
        """A result GET for a finished job ends its in-flight window, whatever it answered."""
        if job.phase in (Phase.COMPLETED, Phase.EXPIRED):
            self._end_in_flight(job)

    def advance(self, now: float) -> list[Job]:
        """Replay every event due by ``now`` at its own time; returns the jobs that changed.

        At equal times a finish comes first, then a queue wait's end, then a start deadline, so
        a job that can start at its deadline does.
        """
        changed: list[Job] = []
        while True:
            due = [
                (at, order)
                for order, at in enumerate(
                    (
                        self._peek(self._running, Phase.IN_PROGRESS),
                        self._peek(self._waiting, Phase.IN_QUEUE),
                        self._peek(self._deadlines, Phase.IN_QUEUE),
                    )
                )
                if at is not None
            ]
            if not due:
                break
            at, order = min(due)
            if at > now:
                break
            if order == _FINISH:
                _, _, job = heapq.heappop(self._running)
                self.counters.running -= 1
                self._complete(job, Event.FINISH, job.plan.outcome, at)
                changed.append(job)
            elif order == _ELIGIBLE:
                _, _, job = heapq.heappop(self._waiting)
                heapq.heappush(self._ready, (self._rank(job), job.seq, job))
            else:
                assert order == _DEADLINE
                # Never started, so it holds no slot: it only leaves the queue.
                _, _, job = heapq.heappop(self._deadlines)
                self._unqueue(job)
                self._complete(job, Event.START_TIMEOUT, Outcome.START_TIMEOUT, at)
                changed.append(job)
                continue
            changed.extend(self._fill(at))
        while self._expiring and self._expiring[0][0] <= now:
            _, _, job = heapq.heappop(self._expiring)
            if job.phase is Phase.COMPLETED:
                job.phase = next_phase(job.phase, Event.EXPIRE)
                changed.append(job)
        return changed

    # --- queries ---

    def lookup(self, request_id: str) -> Job | None:
        """The job, including an EXPIRED one (the server answers 404 for it but counts the GET)."""
        return self._jobs.get(request_id)

    def jobs(self) -> Iterator[Job]:
        """Every submission so far, in submission order."""
        return iter(self._jobs.values())

    def queue_position(self, job: Job) -> int:
        """Queued jobs that would start before ``job`` (0 = next); 0 once it left the queue."""
        if job.phase is not Phase.IN_QUEUE:
            return 0
        normal, low = self._queued
        if job.low_priority:
            return len(normal) + bisect_left(low, job.seq)
        return bisect_left(normal, job.seq)

    @property
    def queued(self) -> int:
        return len(self._queued[_NORMAL]) + len(self._queued[_LOW])

    def next_wakeup(self) -> float | None:
        """When the next event is due (monotonic seconds), or None when nothing is pending."""
        times = [
            t
            for t in (
                self._peek(self._running, Phase.IN_PROGRESS),
                self._peek(self._waiting, Phase.IN_QUEUE),
                self._peek(self._deadlines, Phase.IN_QUEUE),
                self._peek(self._expiring, Phase.COMPLETED),
            )
            if t is not None
        ]
        return min(times, default=None)

    # --- internals ---

    @staticmethod
    def _rank(job: Job) -> int:
        return _LOW if job.low_priority else _NORMAL

    @staticmethod
    def _peek(heap: list[tuple[_Key, int, Job]], phase: Phase) -> _Key | None:
        """The top key of ``heap`` after dropping entries whose job is no longer in ``phase``."""
        while heap and heap[0][2].phase is not phase:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def _fill(self, at: float) -> list[Job]:
        limit = self._config.max_concurrent
        started: list[Job] = []
        while limit is None or self.counters.running < limit:
            if self._peek(self._ready, Phase.IN_QUEUE) is None:
                break
            _, _, job = heapq.heappop(self._ready)
            self._unqueue(job)
            job.phase = next_phase(job.phase, Event.START)
            job.started_at = at
            counters = self.counters
            counters.running += 1
            counters.peak_running = max(counters.peak_running, counters.running)
            heapq.heappush(self._running, (at + job.plan.run_time, job.seq, job))
            started.append(job)
        return started

    def _unqueue(self, job: Job) -> None:
        seqs = self._queued[self._rank(job)]
        index = bisect_left(seqs, job.seq)
        if index < len(seqs) and seqs[index] == job.seq:
            del seqs[index]

    def _complete(self, job: Job, event: Event, outcome: Outcome, at: float) -> None:
        job.phase = next_phase(job.phase, event)
        job.outcome = outcome
        job.completed_at = at
        self.counters.completed += 1
        self.counters.outcomes[outcome] += 1
        self._bill(job)
        heapq.heappush(self._expiring, (at + self._config.result_ttl, job.seq, job))
        if job.webhook:
            self._completed_with_webhook.append(job)

    def _bill(self, job: Job) -> None:
        """Charge a job that just completed, once: only completion calls this."""
        assert job.outcome is not None
        units = billable_units(job.outcome, job.plan, self._config.bill_user_errors)
        if units <= 0:
            return
        job.billed_units = units
        job.billed_amount = units * self.unit_price
        counters = self.counters
        counters.jobs_billed += 1
        counters.units_billed += units
        counters.amount_billed += job.billed_amount

    def _end_in_flight(self, job: Job) -> None:
        if job.in_flight:
            job.in_flight = False
            self.counters.in_flight -= 1
