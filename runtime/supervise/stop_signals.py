"""SIGINT and SIGTERM that arrive while `up` or `serve` is still starting.

Until a process handles them, Python dies of SIGTERM (exit -15) and turns SIGINT into a
KeyboardInterrupt traceback, and the supervisor installs its handlers only after half a
second of imports and the checks of every option. `hold()` is the entry point's first act:
from then on a stop signal is recorded, never lost. The supervisor (or `serve`) takes what
was recorded with `take()` when it installs its own handlers, and stops cleanly before or
after starting anything; a command that has no clean stop of its own calls `release()`,
which restores the defaults and delivers a recorded signal to them.
"""

from __future__ import annotations

import signal

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_held: list[int] = []
_holding = False  # hold() was called: this process is the CLI (not a test importing it)


def _record(signum: int, _frame: object) -> None:
    _held.append(signum)


def hold() -> None:
    global _holding  # noqa: PLW0603  (one flag per process, like the handlers themselves)
    _holding = True
    for sig in STOP_SIGNALS:
        signal.signal(sig, _record)


def take() -> list[int]:
    """The stop signals recorded since `hold()`, oldest first; forgets them."""
    taken = list(_held)
    _held.clear()
    return taken


def release() -> None:
    global _holding  # noqa: PLW0603
    if not _holding:
        return
    _holding = False
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    for sig in take():
        signal.raise_signal(sig)
