"""Rate-limited logging: a warning repeated in a loop costs one line per interval, not a disk.

`Throttle(log).warning(msg, *args)` logs the first call at once; later calls with the same
format string within `interval_s` are only counted, and the next line printed after the
interval says how many were held back. Keyed by the format string, not the formatted text,
so a flood whose numbers change (a counter, a sequence number) is still one line a second.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class Throttle:
    """One line per `interval_s` per format string, with a count of those held back."""

    def __init__(
        self,
        logger: logging.Logger,
        interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self._interval_s = interval_s
        self._clock = clock
        self._state: dict[str, tuple[float, int]] = {}  # msg -> (last printed, held back)

    def log(self, level: int, msg: str, *args: object) -> None:
        now = self._clock()
        last, held = self._state.get(msg, (-float("inf"), 0))
        if now - last < self._interval_s:
            self._state[msg] = (last, held + 1)
            return
        self._state[msg] = (now, 0)
        if held:
            msg = f"{msg} (and {held} more like it in the last {now - last:.1f} s)"
        self._log.log(level, msg, *args)

    def warning(self, msg: str, *args: object) -> None:
        self.log(logging.WARNING, msg, *args)
