"""How long the robot held (executed no action) and why: for the summary, the status and the
supervisor's progress watch.

Time is attributed per control tick, from the monotonic clock: the interval since the
previous tick goes to the reason that tick held for, or to nothing when it executed an
action. A gap of more than `STALL_PERIODS` periods between two ticks means the control loop
itself was not running: the robot held meanwhile, whatever the tick after it did, so the gap
beyond one period goes to the hold already in progress (e.g. a blocking re-handshake after the
server was lost) or, when the robot was moving, to "control loop stalled" (a paused process,
a swapped-out page).
The set of reasons is small and fixed, so the structure stays the same size for weeks.
"""

from __future__ import annotations

from dataclasses import dataclass

STALLED = "control loop stalled"
SERVER_LOST = "server lost"  # the client detached: the session is gone
LINK_DOWN = "link down"  # a self-healing transport is reconnecting
NO_CHUNK = "waiting for a chunk"  # attached, but the queue ran dry
STALL_PERIODS = 3


@dataclass(frozen=True)
class HeldTime:
    """How long the robot executed no action, and why."""

    total_s: float
    fraction: float  # of the run's time
    reasons_s: dict[str, float]


class HoldTracker:
    """Accumulates hold time by reason; `current_s` is the hold in progress."""

    def __init__(self, period_ns: int) -> None:
        self._period_ns = period_ns
        self._prev_ns = 0
        self._since_ns = 0  # start of the hold in progress; 0: not holding
        self.reason = ""  # of the hold in progress
        self.total_ns: dict[str, int] = {}
        self.elapsed_ns = 0  # from the first tick to the last

    def tick(self, now_ns: int, reason: str | None) -> None:
        """Record a tick that held for `reason`, or executed an action (None)."""
        if self._prev_ns:
            gap = now_ns - self._prev_ns
            self.elapsed_ns += gap
            if gap > STALL_PERIODS * self._period_ns:
                self._add(self.reason or STALLED, gap - self._period_ns)
                if not self._since_ns:
                    self._since_ns = self._prev_ns
                gap = self._period_ns
            if reason is not None:
                self._add(reason, gap)
        if reason is None:
            self._since_ns, self.reason = 0, ""
        else:
            if not self._since_ns:
                self._since_ns = now_ns
            self.reason = reason
        self._prev_ns = now_ns

    def _add(self, reason: str, ns: int) -> None:
        self.total_ns[reason] = self.total_ns.get(reason, 0) + ns

    def current_s(self, now_ns: int) -> float:
        return (now_ns - self._since_ns) / 1e9 if self._since_ns else 0.0

    @property
    def held_s(self) -> float:
        return sum(self.total_ns.values()) / 1e9

    def summary(self) -> HeldTime:
        elapsed = self.elapsed_ns / 1e9
        return HeldTime(
            total_s=round(self.held_s, 3),
            fraction=round(self.held_s / elapsed, 4) if elapsed else 0.0,
            reasons_s={k: round(v / 1e9, 3) for k, v in sorted(self.total_ns.items())},
        )
