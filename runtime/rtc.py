"""Real-time chunking's two numbers that are not the model's: the inference delay the client
announces, and the prefix weights a policy blends the previous chunk's tail with.

The delay `d` is in control ticks: how many actions the client executes between handing an
observation to the transport and folding in its chunk. The client counts it exactly for
every chunk, and announces for the next observation a high percentile of the recent counts.
Not a running maximum: one slow first call (a cold cache, a JIT) would inflate every later
estimate for the rest of the run (LeRobot PR #4223). The first chunks of a session are its
warm-up and are not counted; nor is a chunk the client waited for with an empty queue, whose
count stops when the queue runs dry and so understates the delay.

The estimate only tells the policy how much of the tail to follow; the client merges every
chunk by the true count (`ActionQueue.replace`), so an estimate that is off never skips or
repeats an action.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from asyncinf.runtime.messages import RTC_SCHEDULES
from asyncinf.runtime.stats import LogHistogram, Percentiles


@dataclass(frozen=True)
class InferenceDelay:
    """`DelayEstimator.summary`: the measured delay and how often the announced one was off."""

    chunks: int  # steady-state chunks, after the warm-up
    measured_ticks: Percentiles
    exact: int
    one_above: int
    too_low: int
    too_high: int


class DelayEstimator:
    """The next delay from the measured ones: the `percentile` of the last `window`
    steady-state counts, after `warmup` chunks; how often the announced one was off."""

    def __init__(self, window: int = 100, percentile: float = 95.0, warmup: int = 3) -> None:
        if window < 1 or not 0 < percentile <= 100 or warmup < 0:
            raise ValueError(f"window={window} >= 1, percentile={percentile} in (0, 100]")
        self.percentile = percentile
        self.warmup = warmup
        self._window: deque[int] = deque(maxlen=window)
        self._seen = 0  # chunks measured since the last restart()
        self._latest = 0  # ticks the latest chunk took: the estimate before steady state
        self.measured = LogHistogram(lowest=1.0, highest=1e6)  # steady-state counts
        self.exact = 0
        self.one_above = 0
        self.too_low = 0  # announced fewer than ran: the policy re-planned executed actions
        self.too_high = 0  # announced more than one above: followed the old tail too long

    def restart(self) -> None:
        """A new session (handshake): its first chunks are a warm-up again."""
        self._seen = 0

    def estimate(self) -> int:
        """The delay to announce with the next observation, in ticks."""
        if not self._window:
            return self._latest
        ranked = sorted(self._window)
        return ranked[max(1, math.ceil(self.percentile / 100 * len(ranked))) - 1]

    def record(self, measured: int, ticks: int, announced: int, steady: bool) -> None:
        """One chunk folded in: `measured` actions ran in the `ticks` since its observation,
        which announced `announced`. `steady`: the queue never ran dry meanwhile (then the
        two are equal; from standstill only `ticks` says how long the chunk took)."""
        self._seen += 1
        self._latest = ticks
        if not steady or self._seen <= self.warmup:
            return
        self._window.append(measured)
        self.measured.record(measured)
        if announced < measured:
            self.too_low += 1
        elif announced == measured:
            self.exact += 1
        elif announced == measured + 1:
            self.one_above += 1
        else:
            self.too_high += 1

    def summary(self) -> InferenceDelay:
        return InferenceDelay(
            chunks=self.exact + self.one_above + self.too_low + self.too_high,
            measured_ticks=self.measured.summary(),
            exact=self.exact,
            one_above=self.one_above,
            too_low=self.too_low,
            too_high=self.too_high,
        )


def prefix_weights(delay: int, horizon: int, total: int, schedule: str = "LINEAR") -> np.ndarray:
    """How much action i (of `total`) of a new chunk follows the previous tail: LeRobot's
    schedules. LINEAR: 1 for the first `delay`, then falling linearly to 0 at `horizon`
    (d = 4, horizon 10: 1, 1, 1, 1, 6/7, 5/7, …, 1/7, then 0); EXP bends that ramp;
    ONES: 1 up to `horizon`; ZEROS: 1 for the first `delay` only. float64 [total]."""
    if schedule not in RTC_SCHEDULES:
        raise ValueError(f"schedule {schedule!r}: one of {RTC_SCHEDULES}")
    horizon = min(horizon, total)
    delay = min(delay, horizon)
    w = np.zeros(total)
    if schedule == "ONES":
        w[:horizon] = 1.0
        return w
    w[:delay] = 1.0
    if schedule == "ZEROS":
        return w
    ramp = np.linspace(1.0, 0.0, horizon - delay + 2)[1:-1]
    if schedule == "EXP":
        ramp = ramp * np.expm1(ramp) / (math.e - 1)
    w[delay:horizon] = ramp
    return w
