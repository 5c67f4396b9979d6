"""The `asyncinf` command. The commands and their wiring are `commands.py`.

This module stays this small on purpose: `main` holds stop signals (`supervise/stop_signals`)
before anything heavy is imported, so a SIGTERM or Ctrl-C in the first half second of
`asyncinf up` or `asyncinf serve` stops it cleanly instead of killing it.
"""

from __future__ import annotations

import sys


def main() -> None:
    from asyncinf.runtime.supervise import stop_signals  # noqa: PLC0415

    stop_signals.hold()
    from asyncinf.runtime.cli.commands import run  # noqa: PLC0415

    sys.exit(run())


def __getattr__(name: str) -> object:
    """`from asyncinf.runtime.cli import app` (for tests and CliRunner), imported when asked."""
    if name == "app":
        from asyncinf.runtime.cli.commands import app  # noqa: PLC0415

        return app
    raise AttributeError(name)
