"""Exit codes are a contract with systemd and with scripts: documented in the README.

Boot errors (config, policy load, robot connect) mean a restart would fail the same way, so the
systemd units list them in RestartPreventExitStatus=.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    OK = 0  # finished (--duration elapsed) or stopped by SIGTERM, cleanly
    RUNTIME_FAILURE = 1  # failed after start: too many inference errors, restarts exhausted
    USAGE = 2  # bad command line (typer/click's own code)
    POLICY_LOAD_ERROR = 3  # the policy could not be loaded or warmed up
    ROBOT_ERROR = 4  # the robot could not be connected
    CLIENT_LOST = 5  # the control-loop process died; the server was stopped
    # The robot held while both processes were alive and recovery (re-handshake on a new
    # generation, then a server restart) failed, or it held for more than HELD_FRACTION_LIMIT
    # of a run that would otherwise have ended 0 (and for longer than --progress-timeout).
    STALLED = 6
    SERVER_BUSY = 75  # EX_TEMPFAIL: the server stayed busy (another session) past --start-timeout
    CONFIG_ERROR = 78  # EX_CONFIG: a configuration value is invalid
    INTERRUPTED = 130  # stopped by Ctrl-C (SIGINT), cleanly


HELD_FRACTION_LIMIT = 0.5

BOOT_ERRORS = (ExitCode.CONFIG_ERROR, ExitCode.POLICY_LOAD_ERROR, ExitCode.ROBOT_ERROR)
