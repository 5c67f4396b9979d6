"""The benchmarks' echo peers: each runs in a spawned child (a fresh interpreter, as a real
server would be), is asked to leave its own way and is terminated if it does not. And the
bounded spin the raw rings wait with, as the shm transport's ends do before they block."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

log = logging.getLogger(__name__)

STOP_S = 5.0  # how long a peer that was asked to leave may take

T = TypeVar("T")


def stop_child(child: mp.process.BaseProcess) -> None:
    """Wait for `child` to leave; terminate it if it has not within STOP_S."""
    child.join(STOP_S)
    if child.is_alive():
        log.warning("%s did not stop: terminating it", child.name)
        child.terminate()
        child.join(STOP_S)


@contextlib.contextmanager
def spawned(
    target: Callable[..., None], args: tuple[Any, ...], name: str, stop: Callable[[], None]
) -> Iterator[mp.process.BaseProcess]:
    """Run `target(*args)` in a spawned daemon child; on the way out `stop()` asks it to
    leave, then `stop_child` sees that it does."""
    child = mp.get_context("spawn").Process(target=target, args=args, name=name, daemon=True)
    child.start()
    try:
        yield child
    finally:
        stop()
        stop_child(child)


def spin(look: Callable[[], T], spin_ns: int) -> T | None:
    """`look()` until it returns something true or `spin_ns` have passed (None then), giving
    the core up between looks: the other end may be queued on this very core."""
    end = time.monotonic_ns() + spin_ns
    while time.monotonic_ns() < end:
        got = look()
        if got:
            return got
        os.sched_yield()
    return None
