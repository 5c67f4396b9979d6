"""Percentile summaries of samples, the way every report in asyncinf states them.

A run records a sample every control tick and every chunk, for days: those go into a
`LogHistogram`, whose size is fixed when it is made. Benchmarks, which hold a bounded number
of samples anyway, summarise the exact samples with `percentiles`.

Why not the `hdrhistogram` package: its code needs nothing at run time, but its metadata
requires `setuptools>=83` (0.10.8; `>=78.1.1` in 0.10.7) and `pbr`, while LeRobot requires
`setuptools<81` (0.4.4) or `<82` (0.6.1), so asyncinf could no longer be installed beside
LeRobot; and it ships a C extension with x86-64 wheels only, which a Jetson builds from source.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

KEYS = ("p50", "p99", "max")


@dataclass(frozen=True)
class Percentiles:
    """A `LogHistogram`'s summary, in the unit its key names (`_ms`), or robot units."""

    p50: float
    p99: float
    max: float


def percentiles(samples, scale: float = 1.0, keys=KEYS) -> dict[str, float]:
    """`{"p50": …, "p99": …, "max": …}` of `samples` × `scale`; zeros when there are none."""
    if len(samples) == 0:
        return dict.fromkeys(keys, 0.0)
    arr = np.asarray(samples, dtype=np.float64) * scale
    out = {}
    for key in keys:
        out[key] = float(arr.max() if key == "max" else np.percentile(arr, float(key[1:])))
    return out


class LogHistogram:
    """Counts of samples in logarithmic buckets: fixed memory, percentiles of known error.

    Bucket i (i ≥ 1) holds the values in (lowest·γ^(i-1), lowest·γ^i], γ = (1+α)/(1-α), and
    reports them as 2·lowest·γ^i/(γ+1), which lies within relative error α of every value in
    the bucket. So `percentile(q)` is within α (relative) of the nearest-rank q-th percentile
    of the samples recorded (the ⌈q·n/100⌉-th smallest), for values in [lowest, highest].
    Values below `lowest` (zero, for integer nanoseconds) count in bucket 0 and read as 0;
    values above `highest` count in the last bucket and read as the exact max. `max` and
    `min` are kept exactly, and every percentile is clamped into [min, max].

    The defaults (α = 0.5 %, 1 ns … 1 h) make 2,894 buckets: 23 KB per histogram.
    """

    def __init__(self, alpha: float = 0.005, lowest: float = 1.0, highest: float = 3.6e12):
        if not 0 < alpha < 1 or not 0 < lowest < highest:
            raise ValueError(f"alpha={alpha} must be in (0, 1), 0 < lowest={lowest} < {highest}")
        self.alpha = alpha
        self.lowest = lowest
        self._gamma = (1 + alpha) / (1 - alpha)
        self._log_gamma = math.log(self._gamma)
        self._buckets = 1 + math.ceil(math.log(highest / lowest) / self._log_gamma)
        self.counts = np.zeros(self._buckets + 1, dtype=np.int64)
        self.count = 0
        self.min = math.inf
        self.max = -math.inf
        self.last = 0.0  # the latest value recorded

    def record(self, value: float) -> None:
        if value < self.lowest:
            index = 0
        else:
            # ceil(log_γ(value/lowest)) is bucket i ≥ 0 for value in (lowest·γ^(i-1), lowest·γ^i];
            # + 1 moves it past the bucket of values below `lowest`.
            index = min(
                1 + math.ceil(math.log(value / self.lowest) / self._log_gamma), self._buckets
            )
        self.counts[index] += 1
        self.count += 1
        self.last = value
        self.min = min(self.min, value)
        self.max = max(self.max, value)

    def percentile(self, q: float) -> float:
        """The q-th percentile (0 < q ≤ 100), within `alpha` of the exact one; 0 when empty."""
        if self.count == 0:
            return 0.0
        rank = max(1, math.ceil(q / 100 * self.count))
        index = int(np.searchsorted(np.cumsum(self.counts), rank))
        if rank == self.count or index == self._buckets:  # the largest, or beyond `highest`
            return self.max
        value = (
            0.0 if index == 0 else 2 * self.lowest * self._gamma ** (index - 1) / (self._gamma + 1)
        )
        return min(max(value, self.min), self.max)

    def summary(self, scale: float = 1.0) -> Percentiles:
        """p50, p99 and max × `scale`; zeros when empty."""
        if self.count == 0:
            return Percentiles(0.0, 0.0, 0.0)
        return Percentiles(
            float(self.percentile(50.0) * scale),
            float(self.percentile(99.0) * scale),
            float(self.max * scale),
        )
