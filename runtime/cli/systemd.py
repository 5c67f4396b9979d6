"""`asyncinf systemd`: write the systemd unit that keeps a run (or a policy server) up."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer

from asyncinf.runtime.errors import ConfigError
from asyncinf.runtime.supervise.exitcodes import ExitCode

Opt = typer.Option


# fmt: off
def systemd(
    local: Annotated[bool, Opt("--local", help="Unit for `asyncinf up --local`: robot and policy on this host.")] = False,
    remote: Annotated[str | None, Opt("--remote", metavar="HOST:PORT", help="Unit for `asyncinf up --remote HOST:PORT`: the robot here, the policy there.")] = None,
    serve: Annotated[bool, Opt("--serve", help="Unit for `asyncinf serve` on a GPU host.")] = False,
    out: Annotated[Path | None, Opt("--out", help="Write the unit into this directory instead of printing it.")] = None,
    user: Annotated[str | None, Opt("--user", help="Run as this user (User=); it needs the dialout and video groups' devices only.")] = None,
    extra_args: Annotated[str, Opt("--extra-args", help="More options for the command, shell-quoted, e.g. \"--policy.path=/models/act --fps 30\".")] = "",
    host: Annotated[str, Opt("--host", help="--serve: address to bind; 0.0.0.0 for robots on other hosts.")] = "127.0.0.1",
    port: Annotated[int, Opt("--port", help="--serve: TCP port.")] = 8080,
    start_timeout: Annotated[float, Opt("--start-timeout", help="Seconds a process may take to become ready (policy load); passed to `up`.")] = 300.0,
    stop_timeout: Annotated[float, Opt("--stop-timeout", help="Seconds the client-first stop may take; passed to `up`.")] = 10.0,
    watchdog: Annotated[float, Opt("--watchdog", help="WatchdogSec=: restart when the process stops pinging for this long; 0 = off.")] = 30.0,
    name: Annotated[str | None, Opt("--name", help="Unit name (default asyncinf.service, asyncinf-serve.service).")] = None,
) -> None:
    # fmt: on
    """Write a systemd unit that keeps `asyncinf up` or `asyncinf serve` running.

    One Type=notify unit around the supervisor. systemd starts it at boot and
    counts it started once the policy is loaded and the robot connected
    (READY=1). On stop, SIGTERM goes to the supervisor alone, which stops the
    client first (robot held), then the server; only after TimeoutStopSec
    (--stop-timeout plus a margin) does systemd kill what is left.
    A runtime failure restarts the run (at most 5 times in 10 minutes); a boot
    error (config, policy load, robot connect) does not: see the exit codes.
    ExecStart= runs this installation's `asyncinf`, by absolute path.

    Without --out the unit is printed (`... > asyncinf.service`); with
    --out DIR it is written there and the commands to enable it are printed.

    Examples:

      asyncinf systemd --local --user robot --out /etc/systemd/system \\
        --extra-args "--robot.type=so101_follower --robot.port=/dev/ttyACM0"

      asyncinf systemd --serve --host 0.0.0.0 \\
        --extra-args "--token-file /etc/asyncinf/token"
    """
    from asyncinf.runtime.supervise.systemd_units import (  # noqa: PLC0415
        UnitOptions,
        serve_unit,
        supervisor_unit,
    )

    try:
        if local + (remote is not None) + serve != 1:
            raise ConfigError("choose exactly one of --local, --remote HOST:PORT or --serve")
        try:
            extra = tuple(shlex.split(extra_args))
        except ValueError as exc:
            raise ConfigError(f"--extra-args {extra_args!r}: {exc}") from None
        options = UnitOptions(
            user=user, extra_args=extra, start_timeout_s=start_timeout,
            stop_timeout_s=stop_timeout, watchdog_s=watchdog,
        )  # fmt: skip
        if serve:
            unit = serve_unit(host, port, options, name)
        else:
            unit = supervisor_unit(remote, options, name)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(ExitCode.CONFIG_ERROR) from None
    if serve and host in ("127.0.0.1", "localhost", "::1"):
        typer.echo(
            f"note: the server binds {host}: only clients on this host can reach it "
            "(--host 0.0.0.0 for robots elsewhere)",
            err=True,
        )
    if out is None:
        typer.echo(unit.text, nl=False)
        raise typer.Exit(ExitCode.OK)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / unit.name).write_text(unit.text, encoding="utf-8")
    except OSError as exc:
        typer.echo(f"error: cannot write {out / unit.name}: {exc}", err=True)
        raise typer.Exit(ExitCode.RUNTIME_FAILURE) from None
    typer.echo(f"wrote {out / unit.name}")
    typer.echo(_enable_commands(out, unit.name))
    raise typer.Exit(ExitCode.OK)


def _enable_commands(out: Path, unit_name: str) -> str:
    from asyncinf.runtime.supervise.systemd_units import SYSTEM_UNIT_DIRS  # noqa: PLC0415

    path = out.absolute() / unit_name
    lines = ["To enable it (start at boot, and now):"]
    if out.absolute() not in SYSTEM_UNIT_DIRS:
        lines.append(f"  sudo cp {shlex.quote(str(path))} /etc/systemd/system/")
    lines += [
        "  sudo systemctl daemon-reload",
        f"  sudo systemctl enable --now {unit_name}",
        f"Then: systemctl status {unit_name}; journalctl -u {unit_name} -f",
    ]
    return "\n".join(lines)
