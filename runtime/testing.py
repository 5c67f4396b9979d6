"""Helpers for testing code built on asyncinf: a manual clock, a wait on a condition, messages.

They use the runtime's vocabulary only (messages), so tests of any layer, and users testing
their own robot or policy adapters, can import them. The fakes that need a transport or a
robot live beside what they fake: `asyncinf.transports.testing.EchoServer`,
`asyncinf.robots.fake.FakeRobot`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import IO, TYPE_CHECKING, Any, TypeVar

from asyncinf.runtime.messages import Handshake, PolicySpec

if TYPE_CHECKING:
    from asyncinf.runtime.summary import RunSummary

T = TypeVar("T")


class ManualClock:
    """A monotonic clock that moves only when told, for deterministic timing tests.

    `clock()` reads it in ns (what `Rate`, `SimRobot` and `SimCamera` take as `clock_ns`),
    `clock.monotonic()` in seconds (what `sdnotify.Watchdog` takes). `sleep(seconds)` moves it
    on and records the request, so a loop paced on it runs at once.
    """

    def __init__(self, start_ns: int = 1_000_000_000) -> None:
        self.now_ns = start_ns
        self.sleeps: list[float] = []

    def __call__(self) -> int:
        return self.now_ns

    def monotonic(self) -> float:
        return self.now_ns / 1e9

    def advance(self, seconds: float) -> None:
        self.now_ns += round(seconds * 1e9)

    def sleep(self, seconds: float, late_ns: int = 0) -> None:
        """Move on by `seconds`, plus `late_ns` for a sleep that wakes late."""
        self.sleeps.append(seconds)
        self.now_ns += round(seconds * 1e9) + late_ns


def wait_until(
    predicate: Callable[[], object],
    timeout_s: float = 10.0,
    what: str = "condition",
    poll_s: float = 0.005,
) -> None:
    """Return once `predicate()` is true; AssertionError naming `what` after `timeout_s`.

    For state that has no event to wait on (a counter another thread bumps, a file another
    process writes): polling the condition with a generous deadline, where a fixed sleep
    would only hope the state has arrived.
    """
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(poll_s)


class LineReader:
    """Collects a child process's text stream (its stderr, say) on a thread, so the child
    never blocks on a full pipe and a test can wait for a line instead of sleeping."""

    def __init__(self, stream: IO[str]) -> None:
        self._lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._lines.append(line)

    def text(self) -> str:
        """Everything read so far."""
        return "".join(self._lines)

    def wait_for(self, needle: str, timeout_s: float = 30.0) -> None:
        """Return once `needle` has appeared in the stream."""
        wait_until(lambda: needle in self.text(), timeout_s, f"{needle!r} in the output")

    def join(self, timeout_s: float = 10.0) -> str:
        """Everything, once the stream has ended (the child exited)."""
        self._thread.join(timeout_s)
        return self.text()


def started(make: Callable[..., T], end: Callable[[T], object]) -> Iterator[Callable[..., T]]:
    """A pytest fixture's body (`yield from started(Server, Server.kill)`): yields `start`,
    which returns `make(*args, **kwargs)`; every one it made gets `end` once the test is done."""
    made: list[T] = []

    def start(*args: Any, **kwargs: Any) -> T:
        made.append(make(*args, **kwargs))
        return made[-1]

    yield start
    for thing in made:
        end(thing)


def hello(
    cameras: dict[str, tuple[int, int, int]] | None = None,
    *,
    joint_names: Iterable[str] = ("a.pos", "b.pos"),
    policy: PolicySpec | None = None,
    fps: float = 30.0,
    **fields: Any,
) -> Handshake:
    """A client's handshake for tests: joints `a.pos` and `b.pos`, the given cameras (none by
    default), the `fake` policy with chunks of 4 actions, 30 fps; `fields` sets the rest."""
    return Handshake(
        joint_names=list(joint_names),
        cameras=dict(cameras or {}),
        policy=policy if policy is not None else PolicySpec(type="fake", actions_per_chunk=4),
        fps=fps,
        **fields,
    )


def run_summary(**counts: Any) -> RunSummary:
    """A client's end-of-run summary for tests: a run at 30 fps with chunks of 50 that
    counted `counts` (ClientStats' fields, e.g. `ticks=10`), no transport counters, no hold."""
    from asyncinf.runtime.client import ClientStats  # noqa: PLC0415
    from asyncinf.runtime.holds import HoldTracker  # noqa: PLC0415
    from asyncinf.transports.counters import NoCounters  # noqa: PLC0415

    return ClientStats(**counts).summary(30.0, 50, NoCounters(), HoldTracker(1).summary())
