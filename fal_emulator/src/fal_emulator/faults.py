"""Fault injection: which calls fail and how, as configuration plus a seeded draw.

This module owns the vocabulary of injected faults (``FaultKind``), which kinds apply to which
queue endpoint, the frozen ``Faults`` settings with their command-line and JSON spellings, and
``FaultInjector``, the seeded draw the server asks once per queue call. It knows no HTTP: the
answers themselves are built in ``wire`` and delivered (or dropped) by ``server``.

Semantics, so that a test can know the truth of every job:

- Each endpoint (submit, status, result, cancel) has a probability and a list of kinds; a call
  that draws a fault gets a kind chosen uniformly from the list instead of its normal answer.
- ``429`` (with ``Retry-After``), ``502``/``503``/``504`` (the gateway's nginx HTML page, no
  ``x-fal-request-id``) and ``reset`` (the connection is dropped without an answer) happen
  *before* the call is handled: a faulted submit creates no job, and a faulted status, result or
  cancel leaves its job exactly as it was.
- ``slow`` answers normally after a delay (drawn from ``slow``); the call is handled after the
  delay, so a slow submit creates its job then, even if the client has given up waiting.
- ``lost-answer`` and ``lost-answer-502`` (submit only): the job *is* created (it runs, it is in
  the request history, it counts in the stats), then the answer is lost: the connection is
  dropped (``lost-answer``), or the gateway answers its 502 page without ``x-fal-request-id``
  (``lost-answer-502``), which a client cannot tell from a 502 that created nothing. The dangerous
  case, where a client that retries the submit pays for a duplicate; the server counts these
  submits as ``submits_created_then_lost``. A body that creates no job (not JSON, a bad start
  timeout) loses its answer the same way, and is not counted there.
- ``500-model`` and ``503-model`` (result only) carry ``x-fal-request-id``, which per the
  protocol means the *model* failed: that is final, not a transient fault, so it is injected as a
  real fate of the job rather than per call. It is decided once, when the job is submitted (only
  jobs that would otherwise succeed are turned), and from then on every result GET of that job
  answers that status with ``x-fal-request-id`` and the job's outcome is ``model_error``.
  The result probability is shared equally among the listed kinds: with
  ``result=0.2:503-model+429``, 10 % of jobs get the model fate and 10 % of result calls a 429.
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

FAULT_ENDPOINTS = ("submit", "status", "result", "cancel")


class FaultKind(enum.Enum):
    """One way a call can go wrong; the value is how it is spelled in specs and stats."""

    RATE_LIMITED = "429"
    BAD_GATEWAY = "502"
    UNAVAILABLE = "503"
    GATEWAY_TIMEOUT = "504"
    MODEL_500 = "500-model"
    MODEL_503 = "503-model"
    RESET = "reset"
    SLOW = "slow"
    LOST_ANSWER = "lost-answer"
    LOST_ANSWER_502 = "lost-answer-502"

    @property
    def is_model_fate(self) -> bool:
        """A fault of the job itself (decided at submit), not of one call."""
        return self in (FaultKind.MODEL_500, FaultKind.MODEL_503)

    @property
    def loses_answer(self) -> bool:
        """A submit fault that creates the job first and only then loses the answer."""
        return self in (FaultKind.LOST_ANSWER, FaultKind.LOST_ANSWER_502)

    @property
    def gateway_status(self) -> int | None:
        """The HTTP status of a gateway error page, or None for the other kinds."""
        return _GATEWAY_STATUS.get(self)

    @property
    def model_status(self) -> int | None:
        return {FaultKind.MODEL_500: 500, FaultKind.MODEL_503: 503}.get(self)


_GATEWAY_STATUS = {
    FaultKind.BAD_GATEWAY: 502,
    FaultKind.UNAVAILABLE: 503,
    FaultKind.GATEWAY_TIMEOUT: 504,
}

_TRANSIENT = (
    FaultKind.RATE_LIMITED,
    FaultKind.BAD_GATEWAY,
    FaultKind.UNAVAILABLE,
    FaultKind.GATEWAY_TIMEOUT,
    FaultKind.RESET,
    FaultKind.SLOW,
)

APPLICABLE_KINDS: dict[str, tuple[FaultKind, ...]] = {
    "submit": (*_TRANSIENT, FaultKind.LOST_ANSWER, FaultKind.LOST_ANSWER_502),
    "status": _TRANSIENT,
    "result": (*_TRANSIENT, FaultKind.MODEL_500, FaultKind.MODEL_503),
    "cancel": _TRANSIENT,
}

# Used where an endpoint's kinds are not named: every kind that is safe to retry. The lost answers
# and the model fates change what a correct client ends with, so they are only ever asked for by
# name.
DEFAULT_FAULT_KINDS = _TRANSIENT
DEFAULT_RETRY_AFTER = 0.5
DEFAULT_SLOW = (0.5, 0.5)


def parse_kind(text: str) -> FaultKind:
    try:
        return FaultKind(text.strip().lower())
    except ValueError:
        known = ", ".join(kind.value for kind in FaultKind)
        raise ValueError(f"unknown fault kind {text.strip()!r} (known: {known})") from None


def parse_kinds(text: str) -> tuple[FaultKind, ...]:
    """``"429,503,reset"`` -> kinds, in order, without repeats. Raises ``ValueError``."""
    kinds = [parse_kind(part) for part in text.split(",") if part.strip()]
    if not kinds:
        raise ValueError("name at least one fault kind")
    return tuple(dict.fromkeys(kinds))


@dataclass(frozen=True, slots=True)
class EndpointFaults:
    """One endpoint's faults: the probability per call and the kinds to choose from.

    Empty ``kinds`` means ``DEFAULT_FAULT_KINDS`` (those that apply to the endpoint).
    """

    rate: float = 0.0
    kinds: tuple[FaultKind, ...] = ()


# One endpoint's spec as read from text: rate and the named kinds (None: not named).
FaultSpec = dict[str, tuple[float, tuple[FaultKind, ...] | None]]


def parse_fault_spec(text: str) -> FaultSpec:
    """``"status=0.2,result=0.1:503-model+429"`` -> per endpoint (rate, kinds or None).

    Raises ``ValueError`` on unknown endpoints or kinds, repeats and rates outside [0, 1].
    """
    spec: FaultSpec = {}
    for part in (part.strip() for part in text.split(",")):
        if not part:
            continue
        name, sep, rest = part.partition("=")
        name = name.strip().lower()
        if not sep or name not in FAULT_ENDPOINTS:
            raise ValueError(
                f"{part!r} is not ENDPOINT=RATE[:KIND+KIND...] with ENDPOINT one of "
                + ", ".join(FAULT_ENDPOINTS)
            )
        if name in spec:
            raise ValueError(f"{name} is given twice")
        rate_text, colon, kinds_text = rest.partition(":")
        try:
            rate = float(rate_text)
        except ValueError:
            raise ValueError(f"{rate_text.strip()!r} is not a probability") from None
        _check_rate(name, rate)
        kinds = parse_kinds(kinds_text.replace("+", ",")) if colon else None
        spec[name] = (rate, kinds)
    return spec


def _check_rate(name: str, rate: float) -> None:
    if not (math.isfinite(rate) and 0.0 <= rate <= 1.0):
        raise ValueError(f"the {name} fault rate must be within [0, 1], got {rate}")


@dataclass(frozen=True, slots=True)
class Faults:
    """Fault injection for the four queue endpoints. The default injects nothing.

    ``retry_after`` is the ``Retry-After`` of a 429 (seconds, may be fractional); ``slow`` the
    uniform ``(lo, hi)`` range of a slow answer's delay.
    """

    submit: EndpointFaults = EndpointFaults()
    status: EndpointFaults = EndpointFaults()
    result: EndpointFaults = EndpointFaults()
    cancel: EndpointFaults = EndpointFaults()
    retry_after: float = DEFAULT_RETRY_AFTER
    slow: tuple[float, float] = DEFAULT_SLOW

    def __post_init__(self) -> None:
        for name in FAULT_ENDPOINTS:
            faults: EndpointFaults = getattr(self, name)
            _check_rate(name, faults.rate)
            applicable = APPLICABLE_KINDS[name]
            if not faults.kinds:
                kinds = tuple(kind for kind in DEFAULT_FAULT_KINDS if kind in applicable)
                object.__setattr__(self, name, EndpointFaults(faults.rate, kinds))
                continue
            for kind in faults.kinds:
                if kind not in applicable:
                    raise ValueError(
                        f"fault kind {kind.value!r} does not apply to {name} (it takes "
                        + ", ".join(k.value for k in applicable)
                        + ")"
                    )
            if len(set(faults.kinds)) != len(faults.kinds):
                raise ValueError(f"the {name} fault kinds repeat a kind")
        if not (math.isfinite(self.retry_after) and self.retry_after >= 0):
            raise ValueError(f"retry_after must be >= 0, got {self.retry_after}")
        lo, hi = self.slow
        if not (math.isfinite(lo) and math.isfinite(hi) and 0 <= lo <= hi):
            raise ValueError(f"slow must be 0 <= lo <= hi, got ({lo}, {hi})")

    def for_endpoint(self, name: str) -> EndpointFaults:
        faults: EndpointFaults = getattr(self, name)
        return faults

    @property
    def active(self) -> bool:
        return any(self.for_endpoint(name).rate > 0 for name in FAULT_ENDPOINTS)

    # --- spellings ---

    @classmethod
    def build(
        cls,
        spec: Mapping[str, tuple[float, tuple[FaultKind, ...] | None]],
        *,
        kinds: Iterable[FaultKind] | None = None,
        retry_after: float = DEFAULT_RETRY_AFTER,
        slow: tuple[float, float] = DEFAULT_SLOW,
    ) -> Faults:
        """From a parsed spec. ``kinds`` serves endpoints whose kinds are not named; each uses
        those that apply to it, and an endpoint with a rate but none that apply is an error."""
        defaults = DEFAULT_FAULT_KINDS if kinds is None else tuple(kinds)
        endpoints: dict[str, EndpointFaults] = {}
        for name, (rate, named) in spec.items():
            if name not in FAULT_ENDPOINTS:
                raise ValueError(f"unknown endpoint {name!r}")
            chosen = named
            if chosen is None:
                chosen = tuple(kind for kind in defaults if kind in APPLICABLE_KINDS[name])
                if not chosen and rate > 0:
                    raise ValueError(
                        f"none of the fault kinds {', '.join(k.value for k in defaults)} "
                        f"applies to {name}"
                    )
            endpoints[name] = EndpointFaults(rate, chosen)
        return cls(**endpoints, retry_after=retry_after, slow=slow)

    @classmethod
    def parse(
        cls,
        text: str,
        *,
        kinds: Iterable[FaultKind] | str | None = None,
        retry_after: float = DEFAULT_RETRY_AFTER,
        slow: tuple[float, float] | float = DEFAULT_SLOW,
    ) -> Faults:
        """The command-line spelling, e.g. ``Faults.parse("status=1:429", retry_after=0.05)``."""
        if isinstance(kinds, str):
            kinds = parse_kinds(kinds)
        slow_range = (float(slow), float(slow)) if isinstance(slow, int | float) else slow
        return cls.build(
            parse_fault_spec(text), kinds=kinds, retry_after=retry_after, slow=slow_range
        )

    def spec(self) -> str:
        """The command-line spelling of the endpoints with a rate (empty when none)."""
        return ",".join(
            f"{name}={faults.rate:g}:" + "+".join(kind.value for kind in faults.kinds)
            for name in FAULT_ENDPOINTS
            if (faults := self.for_endpoint(name)).rate > 0
        )

    def to_json(self) -> dict[str, Any]:
        """``{"submit": {"rate", "kinds"}, ..., "retry_after": s, "slow": [lo, hi]}``."""
        body: dict[str, Any] = {
            name: {
                "rate": self.for_endpoint(name).rate,
                "kinds": [kind.value for kind in self.for_endpoint(name).kinds],
            }
            for name in FAULT_ENDPOINTS
        }
        body["retry_after"] = self.retry_after
        body["slow"] = list(self.slow)
        return body

    @classmethod
    def from_json(cls, value: object) -> Faults:
        """The JSON form: ``to_json``'s shape, where each endpoint may also be a bare rate and
        any key may be left out; ``"kinds"`` at the top serves endpoints that name none (like
        ``--fault-kinds``); ``"slow"`` may be one number. A string is the command-line spec;
        null is no faults. Raises ``ValueError``."""
        if value is None:
            return cls()
        if isinstance(value, str):
            return cls.parse(value)
        if not isinstance(value, dict):
            # ValueError, not TypeError: callers turn any bad setting into one usage error.
            raise ValueError("faults must be an object, a spec string or null")  # noqa: TRY004
        unknown = set(value) - {*FAULT_ENDPOINTS, "kinds", "retry_after", "slow"}
        if unknown:
            raise ValueError(f"unknown faults keys: {', '.join(sorted(unknown))}")
        spec: FaultSpec = {}
        for name in FAULT_ENDPOINTS:
            if name in value:
                spec[name] = _endpoint_from_json(name, value[name])
        kinds = None if value.get("kinds") is None else _kinds_from_json(value["kinds"])
        retry_after = value.get("retry_after", DEFAULT_RETRY_AFTER)
        if not _is_number(retry_after):
            raise ValueError("retry_after must be a number")
        slow = value.get("slow", list(DEFAULT_SLOW))
        if _is_number(slow):
            slow = [slow, slow]
        if not (isinstance(slow, list) and len(slow) == 2 and all(map(_is_number, slow))):
            raise ValueError("slow must be a number or [lo, hi]")
        return cls.build(
            spec, kinds=kinds, retry_after=float(retry_after), slow=(float(slow[0]), float(slow[1]))
        )


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _kinds_from_json(value: object) -> tuple[FaultKind, ...]:
    if isinstance(value, str):
        return parse_kinds(value)
    if not (isinstance(value, list) and value and all(isinstance(v, str) for v in value)):
        raise ValueError("kinds must be a non-empty list of kind names")
    return tuple(dict.fromkeys(parse_kind(v) for v in value))


def _endpoint_from_json(name: str, value: object) -> tuple[float, tuple[FaultKind, ...] | None]:
    if _is_number(value):
        assert isinstance(value, int | float)
        _check_rate(name, float(value))
        return (float(value), None)
    if not isinstance(value, dict) or set(value) - {"rate", "kinds"}:
        raise ValueError(f"{name} faults must be a rate or {{'rate': r, 'kinds': [...]}}")
    rate = value.get("rate", 0.0)
    if not _is_number(rate):
        raise ValueError(f"the {name} fault rate must be a number")
    _check_rate(name, float(rate))
    kinds = value.get("kinds")
    return (float(rate), None if kinds is None else _kinds_from_json(kinds))


NO_FAULTS = Faults()


class FaultInjector:
    """The per-call and per-job draws, from the injector's own seeded RNG.

    The RNG is separate from the simulation's, so turning faults on does not change any job's
    run time, failure or seed; and a rate of 0 draws nothing. ``faults`` may be replaced at any
    time (runtime reconfiguration); the RNG stream carries on.
    """

    def __init__(self, faults: Faults, rng: random.Random) -> None:
        self.faults = faults
        self._rng = rng

    def draw(self, endpoint: str) -> FaultKind | None:
        """The fault for one call to ``endpoint`` (never a model fate), or None."""
        if endpoint not in FAULT_ENDPOINTS:
            return None
        faults = self.faults.for_endpoint(endpoint)
        per_call = [kind for kind in faults.kinds if not kind.is_model_fate]
        return self._choose(faults, per_call)

    def model_fate(self) -> FaultKind | None:
        """For a job being submitted: a model-error fate (``500-model``/``503-model``), or None."""
        faults = self.faults.result
        return self._choose(faults, [kind for kind in faults.kinds if kind.is_model_fate])

    def slow_delay(self) -> float:
        return self._rng.uniform(*self.faults.slow)

    def _choose(self, faults: EndpointFaults, kinds: list[FaultKind]) -> FaultKind | None:
        if not kinds or faults.rate <= 0:
            return None
        rate = faults.rate * len(kinds) / len(faults.kinds)
        if self._rng.random() >= rate:
            return None
        return kinds[0] if len(kinds) == 1 else self._rng.choice(kinds)
