"""The pacing helper on a manual clock: absolute deadlines, overruns, the optional spin."""

from asyncinf.runtime.rate import Rate
from asyncinf.runtime.testing import ManualClock


def test_deadlines_are_absolute_so_lateness_never_accumulates():
    clock = ManualClock()
    rate = Rate(100, clock_ns=clock, sleep=lambda s: clock.sleep(s, late_ns=300_000))
    start = clock.now_ns
    starts = []
    for _ in range(50):
        rate.sleep()
        starts.append(rate.last_tick_ns)
        clock.now_ns += 2_000_000  # the tick's work
    for k, t in enumerate(starts):
        assert t - (start + k * 10_000_000) == (0 if k == 0 else 300_000)  # never drifts
    assert rate.overruns == 0


def test_an_overrun_skips_missed_deadlines_and_counts_them():
    clock = ManualClock()
    rate = Rate(100, clock_ns=clock, sleep=clock.sleep)
    start = clock.now_ns
    rate.sleep()
    clock.now_ns += 35_000_000  # a tick that took 3.5 periods
    late = rate.sleep()
    assert rate.overruns == 2  # the deadlines at +10 and +20 ms were skipped
    assert late == 5_000_000  # +30 ms is kept, half a period late
    rate.sleep()
    assert rate.last_tick_ns == start + 40_000_000  # back on the grid, no burst


def test_a_sleep_that_returns_early_is_called_again_until_the_deadline():
    clock = ManualClock()
    calls = []

    def wait(seconds):  # e.g. a transport wait woken by a chunk halfway (at least 1 ms in)
        calls.append(seconds)
        clock.now_ns += max(round(seconds * 1e9 / 2), 1_000_000)

    rate = Rate(100, clock_ns=clock, sleep=wait)
    rate.sleep()
    rate.sleep()
    assert len(calls) > 2 and rate.last_tick_ns >= 1_000_000_000 + 10_000_000 - 1


def test_spin_sleeps_until_the_margin_then_busy_waits_to_the_deadline():
    clock = ManualClock()
    spins = []

    def clock_ns():
        if clock.sleeps and len(spins) < 1000:
            spins.append(clock.now_ns)
            clock.now_ns += 100_000  # each busy-wait poll costs 0.1 ms
        return clock.now_ns

    rate = Rate(100, clock_ns=clock_ns, sleep=clock.sleep, spin_s=0.002)
    rate.sleep()
    rate.sleep()
    assert clock.sleeps[-1] == 0.008  # slept to 2 ms before the deadline
    assert rate.last_tick_ns >= 1_000_000_000 + 10_000_000
