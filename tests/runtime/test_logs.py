"""The warning throttle: one line per interval per format string, and a count of the rest."""

from __future__ import annotations

import logging

from asyncinf.runtime.logs import Throttle


def test_a_flood_is_one_line_per_second_with_a_count(caplog) -> None:
    now = [0.0]
    throttle = Throttle(logging.getLogger("test.flood"), 1.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, "test.flood"):
        for i in range(10_000):  # 10 s of a warning every millisecond
            now[0] = i / 1000
            throttle.warning("ring %s full (%d)", "up", i)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 10
    assert lines[0] == "ring up full (0)"
    assert lines[1] == "ring up full (1000) (and 999 more like it in the last 1.0 s)"


def test_different_messages_are_throttled_apart(caplog) -> None:
    throttle = Throttle(logging.getLogger("test.apart"), 1.0, clock=lambda: 5.0)
    with caplog.at_level(logging.WARNING, "test.apart"):
        for _ in range(3):
            throttle.warning("a %d", 1)
            throttle.warning("b %d", 2)
    assert [r.getMessage() for r in caplog.records] == ["a 1", "b 2"]
