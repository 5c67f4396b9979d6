"""`asyncinf status PATH`: the status file of a supervised run, for humans or as JSON."""

from __future__ import annotations

import enum
import json
import time
from pathlib import Path
from typing import Annotated

import typer

from asyncinf.runtime.supervise.status_file import (
    RunStatus,
    StatusFileError,
    read_status_file,
)
from asyncinf.transports.shm.names import pid_alive

Opt = typer.Option


class StatusExit(enum.IntEnum):
    """LSB init-script status codes, as `systemctl status` uses them."""

    RUNNING = 0
    DEAD = 1  # the file says the run is live but the supervisor is gone
    NOT_RUNNING = 3  # the run ended (stopped or failed)
    UNKNOWN = 4  # no status file, or not a readable one


_COLORS = {
    "starting": "yellow",
    "running": "green",
    "restarting": "yellow",
    "stopping": "yellow",
    "stopped": "dim",
    "failed": "bold red",
}


def status(
    path: Annotated[
        Path, typer.Argument(metavar="PATH", help="The file given to `asyncinf up --status-json`.")
    ],
    as_json: Annotated[
        bool, Opt("--json", help="Print the status as the file's JSON object (checked first).")
    ] = False,
) -> None:
    """Show the state of a supervised run and the pids of its processes.

    Exits as `systemctl status` does: 0 the run is live (starting, running,
    restarting or stopping), 1 stale file (the supervisor is gone without
    recording an end), 3 the run ended (stopped or failed), 4 no readable file.
    """
    try:
        run = read_status_file(path)
    except StatusFileError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(StatusExit.UNKNOWN) from None
    stale = not run.state.final and not pid_alive(run.pid)
    if as_json:
        typer.echo(json.dumps(run.to_json()))
    else:
        _print_human(run, stale)
    if stale:
        typer.echo(
            f"warning: stale status file: supervisor pid {run.pid} is gone but the file says "
            f"{run.state.value!r}",
            err=True,
        )
        raise typer.Exit(StatusExit.DEAD)
    raise typer.Exit(StatusExit.NOT_RUNNING if run.state.final else StatusExit.RUNNING)


def _print_human(run: RunStatus, stale: bool) -> None:
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    def state(value: str) -> str:
        return f"[{_COLORS[value]}]{value}[/]"

    def pid(value: int | None, check: bool) -> str:
        if value is None:
            return "-"
        return str(value) if not check or pid_alive(value) else f"{value} [red](gone)[/]"

    age_s = max(0.0, (time.time_ns() - run.updated_ns) / 1e9)
    table = Table(box=None, show_header=True, header_style="bold", pad_edge=False)
    for column in ("", "state", "pid", "restarts"):
        table.add_column(column)
    live = not run.state.final
    note = " [red](stale)[/]" if stale else ""
    table.add_row("supervisor", state(run.state.value) + note, pid(run.pid, False), "")
    if run.server is None:
        table.add_row("server", "remote", "-", "")
    else:
        s = run.server
        table.add_row("server", state(s.state.value), pid(s.pid, live), str(s.restarts))
        for key, loaded in s.policy.items():
            shown = " ".join(f"{k} {v}" for k, v in loaded.to_json().items())
            table.add_row("  policy", key, "", shown)
        if s.batch_sizes:
            sizes = ", ".join(f"{n}×{size}" for size, n in s.batch_sizes.items())
            table.add_row("  batches", sizes, "", "")
    for label, c in (
        {f"client {n}": r for n, r in run.robots.items()} or {"client": run.client}
    ).items():
        table.add_row(label, state(c.state.value), pid(c.pid, live), "")
        if c.hold_s > 0:
            table.add_row("  holding", f"[yellow]{c.hold_s:.1f} s[/]", "", c.hold_reason)
        if c.held_s > 0:
            table.add_row("  held in all", f"{c.held_s:.1f} s", "", "")
    console = Console(highlight=False)
    console.print(table)
    console.print(f"[dim]updated {age_s:.1f} s ago[/]")
