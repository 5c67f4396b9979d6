"""LogHistogram: percentiles within the stated relative error, in memory that does not grow."""

import numpy as np
import pytest

from asyncinf.runtime.stats import LogHistogram, Percentiles

QS = (1, 10, 50, 90, 99, 99.9, 100)


def _samples(name: str, rng: np.random.Generator, n: int) -> np.ndarray:
    """Latency-like distributions in integer nanoseconds."""
    if name == "uniform":
        return rng.integers(1_000, 50_000_000, n)
    if name == "lognormal":  # a round trip: ~2 ms with a long tail
        return np.rint(rng.lognormal(np.log(2e6), 0.8, n)).astype(np.int64)
    if name == "exponential":  # period errors: mostly small, some large
        return np.rint(rng.exponential(30_000, n)).astype(np.int64)
    if name == "bimodal":  # fast chunks and the odd slow one
        return np.concatenate([rng.integers(900_000, 1_100_000, n - n // 50),
                               rng.integers(80_000_000, 120_000_000, n // 50)])  # fmt: skip
    return np.full(n, 12_345_678)  # constant


@pytest.mark.parametrize("name", ["uniform", "lognormal", "exponential", "bimodal", "constant"])
@pytest.mark.parametrize("alpha", [0.005, 0.02])
def test_percentiles_within_the_stated_relative_error(name, alpha):
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    samples = _samples(name, rng, 20_000)
    h = LogHistogram(alpha=alpha)
    for v in samples.tolist():
        h.record(v)
    assert h.count == len(samples)
    for q in QS:
        exact = float(np.percentile(samples, q, method="inverted_cdf"))  # nearest rank
        got = h.percentile(q)
        assert abs(got - exact) <= alpha * exact * (1 + 1e-9), (q, got, exact)
    assert h.max == samples.max()
    assert h.summary(1e-6).max == pytest.approx(samples.max() * 1e-6)


def test_zero_and_values_out_of_range():
    h = LogHistogram(lowest=1, highest=1e6)
    for v in (0, 0, 0, 5e9):  # zeros (a perfectly timed tick), one beyond `highest`
        h.record(v)
    assert h.percentile(50) == 0.0  # below `lowest` reads as 0, exactly for integer ns
    assert h.percentile(100) == 5e9  # clamped to the exact max, not the last bucket's value
    assert h.last == 5e9


def test_memory_is_fixed_when_made():
    h = LogHistogram()
    size = h.counts.nbytes
    rng = np.random.default_rng(1)
    for v in rng.integers(0, 10**13, 100_000).tolist():
        h.record(v)
    assert h.counts.nbytes == size < 32_000
    assert int(h.counts.sum()) == h.count == 100_000


def test_empty_summary_is_zeros_and_bad_parameters_are_refused():
    assert LogHistogram().summary() == Percentiles(0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="alpha"):
        LogHistogram(alpha=1.5)
