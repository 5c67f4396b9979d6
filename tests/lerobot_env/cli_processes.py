"""asyncinf's command lines as a shell runs them: in their own process group, logs in files."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

from asyncinf.runtime.testing import wait_until

CLI = [sys.executable, "-m", "asyncinf.runtime.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Command:
    """One command line in its own process group (as a shell runs it), its log in a file."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        with log.open("w") as out:
            self.proc = subprocess.Popen(
                [*CLI, *args], stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                env=None if env is None else {**os.environ, **env},
            )  # fmt: skip

    def text(self) -> str:
        return self.log.read_text()

    def wait_for_log(self, pattern: str, timeout_s: float) -> re.Match:
        found: list[re.Match] = []

        def seen() -> bool:
            assert self.proc.poll() is None, f"exited {self.proc.returncode}:\n{self.text()}"
            found[:] = [m] if (m := re.search(pattern, self.text())) else []
            return bool(found)

        wait_until(seen, timeout_s, f"{pattern!r} in {self.log.name}", poll_s=0.2)
        return found[0]

    def ctrl_c(self, timeout_s: float = 60) -> int:
        """SIGINT to the process group, as a terminal's Ctrl-C; the exit code."""
        os.killpg(self.proc.pid, signal.SIGINT)
        return self.proc.wait(timeout_s)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)
