"""sd_notify(3) without libsystemd: one datagram to `$NOTIFY_SOCKET`, a no-op outside systemd.

Done as gunicorn does it (gunicorn/systemd.py): the protocol is a newline-separated list of
`KEY=VALUE` lines sent to an AF_UNIX datagram socket, too small to justify a dependency. A failed
send is logged at debug level and reported as False, never raised: losing a notification must
not take down the robot loop or the supervisor (systemd's own timeouts then decide).
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

# What systemd hands a Type=notify service. A supervisor removes these from its children's
# environment so that only it speaks for the unit (NotifyAccess=main).
ENV_VARS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")

# systemd drains its notify socket at once; a wedged manager must not stall the caller's loop.
_SEND_TIMEOUT_S = 0.5


def notify(*states: str) -> bool:
    """Send `states` (e.g. "READY=1", "STATUS=loading") in one message; True if it was sent."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr or not states:
        return False
    if addr[0] == "@":  # abstract namespace: a leading NUL byte instead of a path
        addr = "\0" + addr[1:]
    elif addr[0] != "/":  # e.g. systemd 253's vsock:CID:PORT, not used for local services
        log.debug("sd_notify: unsupported NOTIFY_SOCKET address %r", addr)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.settimeout(_SEND_TIMEOUT_S)
            sock.sendto("\n".join(states).encode(), addr)
    except OSError:
        log.debug("sd_notify %r to %r failed", states, addr, exc_info=True)
        return False
    return True


def ready(status: str | None = None) -> bool:
    """READY=1: start-up finished (systemd ends `systemctl start` and arms the watchdog)."""
    return notify("READY=1", *_status_line(status))


def status(text: str) -> bool:
    """STATUS=text: the one line `systemctl status` shows."""
    return notify(*_status_line(text))


def stopping(status: str | None = None) -> bool:
    """STOPPING=1: a stop has begun (systemd then waits up to TimeoutStopSec)."""
    return notify("STOPPING=1", *_status_line(status))


def watchdog() -> bool:
    """WATCHDOG=1, unconditionally; loops should call `watchdog_ping` instead."""
    return notify("WATCHDOG=1")


def watchdog_interval_s() -> float | None:
    """The watchdog timeout systemd expects pings within, or None when it is off.

    Like sd_watchdog_enabled(3): from `$WATCHDOG_USEC`, and off when `$WATCHDOG_PID` names
    another process (an inherited environment). Ping at least every half of it.
    """
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = os.environ.get("WATCHDOG_PID")
    try:
        if pid and int(pid) != os.getpid():
            return None
        timeout_s = int(usec) / 1e6
    except ValueError:
        log.debug("sd_notify: ignoring WATCHDOG_USEC=%r WATCHDOG_PID=%r", usec, pid)
        return None
    return timeout_s if timeout_s > 0 else None


class Watchdog:
    """WATCHDOG=1 rate-limited to a quarter of the interval: cheap enough for every loop pass.

    A quarter, not the recommended half, so a loop pass that is late still lands in time.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._last_s = -math.inf

    def ping(self) -> bool:
        """Send WATCHDOG=1 if the watchdog is on and a ping is due; True if one was sent."""
        interval_s = watchdog_interval_s()
        now_s = self._clock()
        if interval_s is None or now_s - self._last_s < interval_s / 4:
            return False
        self._last_s = now_s
        return watchdog()


def watchdog_ping() -> None:
    """Ping the watchdog if due (one process-wide `Watchdog`); a no-op outside systemd."""
    _WATCHDOG.ping()


def _status_line(text: str | None) -> tuple[str, ...]:
    # The protocol is line-based: a newline inside STATUS= would start a bogus assignment.
    return () if text is None else ("STATUS=" + " ".join(text.splitlines()),)


_WATCHDOG = Watchdog()
