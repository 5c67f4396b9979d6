"""Liveness: each end stamps its pid and a heartbeat in the header; the other end reads them.

The heartbeat words are the only shared words touched without a lock. That is safe because
they carry no ordering: a stale read only delays the verdict by one interval, and an aligned
8-byte store or load is never torn on x86-64 or aarch64.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from asyncinf.transports.shm.layout import W_CLIENT_HB, W_CLIENT_PID, W_SERVER_HB, W_SERVER_PID
from asyncinf.transports.shm.names import pid_alive

WORDS = {"client": (W_CLIENT_PID, W_CLIENT_HB), "server": (W_SERVER_PID, W_SERVER_HB)}


@dataclass(frozen=True)
class PeerStatus:
    """One side as the header shows it."""

    side: str
    pid: int  # 0: no process attached on that side
    heartbeat_ns: int  # CLOCK_MONOTONIC of its last beat (0: never)
    age_s: float  # seconds since that beat, as of reading
    alive: bool  # attached, pid exists, and the beat is younger than peer_timeout_s


def read_peer_status(words: memoryview, side: str, peer_timeout_ns: int) -> PeerStatus:
    pid_w, hb_w = WORDS[side]
    pid, beat = words[pid_w], words[hb_w]
    age_ns = time.monotonic_ns() - beat
    alive = pid > 0 and pid_alive(pid) and age_ns <= peer_timeout_ns
    return PeerStatus(side, pid, beat, age_ns / 1e9 if beat else float("inf"), alive)


class HeartbeatStamper:
    """A daemon thread stamping `side`'s heartbeat word every `interval_s`."""

    def __init__(self, words: memoryview, side: str, interval_s: float) -> None:
        self._words = words
        self._word = WORDS[side][1]
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"shm-{side}-heartbeat", daemon=True)

    def beat(self) -> None:
        self._words[self._word] = time.monotonic_ns()

    def start(self) -> None:
        self.beat()
        self._thread.start()

    def _run(self) -> None:
        # Event.wait is the pacing, and close() wakes it at once.
        while not self._stop.wait(self._interval_s):
            self.beat()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5 * self._interval_s + 1.0)
