"""The one pacing helper: absolute monotonic deadlines, overruns counted, no drift."""

from __future__ import annotations

import time


class Rate:
    """Ticks at `hz` on deadlines `start + k·period`, so lateness never accumulates.

    A tick that starts more than a whole period late is an overrun: the missed deadlines are
    skipped (not replayed in a burst) and counted.
    """

    def __init__(
        self, hz: float, clock_ns=time.monotonic_ns, sleep=time.sleep, spin_s: float = 0.0
    ) -> None:
        """`sleep(seconds)` may return early (e.g. a wait on a transport); it is called
        again for the rest of the time, so the deadline holds either way. With `spin_s`,
        the last `spin_s` before each deadline are busy-waited: a sleeping core can wake
        milliseconds late (seen on VMs), a spinning one cannot — at that much CPU per tick."""
        if hz <= 0:
            raise ValueError(f"rate must be > 0 Hz, got {hz}")
        self.period_ns = round(1e9 / hz)
        self._clock_ns = clock_ns
        self._sleep = sleep
        self._next_ns = clock_ns()
        self._spin_ns = round(spin_s * 1e9)
        self.overruns = 0
        self.last_tick_ns = 0

    def sleep(self) -> int:
        """Wait for the next deadline; returns how late this tick starts, in ns (≥ 0)."""
        now = self._clock_ns()
        wake_ns = self._next_ns - self._spin_ns
        while now < wake_ns:
            self._sleep((wake_ns - now) / 1e9)
            now = self._clock_ns()
        while now < self._next_ns:
            now = self._clock_ns()
        late_ns = now - self._next_ns
        if late_ns >= self.period_ns:
            missed = late_ns // self.period_ns
            self.overruns += missed
            self._next_ns += missed * self.period_ns
            late_ns -= missed * self.period_ns
        self._next_ns += self.period_ns
        self.last_tick_ns = now
        return max(0, late_ns)
