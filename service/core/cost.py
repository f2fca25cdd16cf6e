"""What a video costs: fal's billable units times the account's unit price.

fal reports the units it bills on its answers (``X-Fal-Billable-Units``; for Lynx, seconds of
output video) and the account's unit price on its Platform API. Rules, from fal's billing:

- A succeeded job costs its billed units; when fal's answer carried none (a webhook brings the
  output without headers), an estimate from the request's ``num_frames`` and
  ``frames_per_second``, marked as estimated.
- A failed or cancelled job costs what fal billed: a 422 (the model refused the input) may be
  billed; a 5xx, a cancel and time in the queue never are. Nothing billed: no cost (null).
- Before a job is submitted its cost is an estimate (expected units times the price): the
  scheduler's cost and what budgets hold back.

Pure: the shell reads the header and the price; this module only does the arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass

# fal's defaults for Lynx when a request leaves them out (see service.messages).
DEFAULT_NUM_FRAMES = 81
DEFAULT_FRAMES_PER_SECOND = 16


@dataclass(frozen=True, slots=True)
class Price:
    """The account's price for the endpoint's unit."""

    unit_price: float
    unit: str = "second"
    currency: str = "USD"
    from_fal: bool = False  # False: the RELAY_PRICE_PER_VIDEO_SECOND fallback


@dataclass(frozen=True, slots=True)
class Cost:
    units: float
    unit: str
    unit_price: float
    amount: float
    currency: str
    estimated: bool


def expected_units(num_frames: int | None, frames_per_second: int | None) -> float:
    """Seconds of video a request asks for: what fal will bill if it succeeds."""
    frames = num_frames if num_frames is not None else DEFAULT_NUM_FRAMES
    fps = frames_per_second if frames_per_second is not None else DEFAULT_FRAMES_PER_SECOND
    return frames / fps


def estimate(units: float, price: Price) -> float:
    """The amount ``units`` would cost."""
    return units * price.unit_price


def cost_of(
    status: str, billed_units: float | None, expected: float | None, price: Price
) -> Cost | None:
    """A job's cost once it ended with ``status``, given the units fal billed (None: fal's
    answer said nothing) and the units the request was expected to bill."""
    if billed_units is not None:
        units, estimated = billed_units, False
    elif status == "succeeded" and expected is not None:
        units, estimated = expected, True
    else:
        return None  # failed or cancelled with nothing billed
    if units <= 0:
        return None
    return Cost(
        units=units,
        unit=price.unit,
        unit_price=price.unit_price,
        amount=round(units * price.unit_price, 6),
        currency=price.currency,
        estimated=estimated,
    )
