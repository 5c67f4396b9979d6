"""Percentile summaries of samples, the way every report in asyncinf states them."""

from __future__ import annotations

import numpy as np


def percentiles(samples, scale: float = 1.0, keys=("p50", "p99", "max")) -> dict[str, float]:
    """`{"p50": …, "p99": …, "max": …}` of `samples` × `scale`; zeros when there are none."""
    if len(samples) == 0:
        return dict.fromkeys(keys, 0.0)
    arr = np.asarray(samples, dtype=np.float64) * scale
    out = {}
    for key in keys:
        out[key] = float(arr.max() if key == "max" else np.percentile(arr, float(key[1:])))
    return out
