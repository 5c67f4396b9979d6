"""systemd unit files for the supervisor (`asyncinf up`) and for a GPU host (`asyncinf serve`).

One Type=notify unit around the supervisor, not one unit per process: the supervisor already
orders start (server, then client) and stop (client first, robot held), restarts the server
and renews the IPC objects. systemd's part is the outer loop: start at boot, restart the whole
run after a runtime failure, never after a boot error (config, policy load, robot connect:
RestartPreventExitStatus), and kill what is left only after the supervisor's own safe stop
had its time (KillMode=mixed, TimeoutStopSec).
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import sys
from pathlib import Path

from asyncinf.runtime.errors import ConfigError
from asyncinf.runtime.supervise.exitcodes import BOOT_ERRORS, ExitCode

# Time the supervisor needs beyond --stop-timeout to force the children and unlink every IPC
# object; systemd's SIGKILL must not land before that.
STOP_MARGIN_S = 15.0
# Python start-up and imports (torch alone takes seconds) before the first deadline starts.
START_MARGIN_S = 30.0
# Directories systemd reads system units from: units written here need no copying.
SYSTEM_UNIT_DIRS = (Path("/etc/systemd/system"), Path("/usr/local/lib/systemd/system"))

_UNIT_NAME = re.compile(r"[A-Za-z0-9:_.\\@-]+\.service")
_PLAIN_WORD = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")


@dataclasses.dataclass(frozen=True)
class UnitOptions:
    """What every generated unit shares; times in seconds as `asyncinf up` takes them."""

    user: str | None = None
    extra_args: tuple[str, ...] = ()
    start_timeout_s: float = 300.0
    stop_timeout_s: float = 10.0
    watchdog_s: float = 30.0  # 0: no WatchdogSec=
    restart_s: float = 5.0
    executable: tuple[str, ...] | None = None  # argv prefix; default: the installed asyncinf

    def __post_init__(self) -> None:
        for name in ("start_timeout_s", "stop_timeout_s", "restart_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name}={getattr(self, name)}: must be > 0 seconds")
        if self.watchdog_s < 0:
            raise ConfigError(f"watchdog_s={self.watchdog_s}: must be >= 0 (0 turns it off)")
        if self.user is not None and not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\$?", self.user):
            raise ConfigError(f"--user {self.user!r}: not a valid user name")


@dataclasses.dataclass(frozen=True)
class Unit:
    name: str
    text: str


def asyncinf_executable() -> tuple[str, ...]:
    """The absolute command that runs this installation's `asyncinf`.

    The script beside this interpreter first (the venv in use, even when it is not on PATH,
    as under systemd), then PATH, then `python -m` on this interpreter.
    """
    beside = Path(sys.executable).absolute().parent / "asyncinf"
    if beside.is_file():
        return (str(beside),)
    found = shutil.which("asyncinf")
    if found:
        return (str(Path(found).absolute()),)
    return (str(Path(sys.executable).absolute()), "-m", "asyncinf.runtime.cli")


def supervisor_unit(
    remote: str | None = None, options: UnitOptions | None = None, name: str | None = None
) -> Unit:
    """The unit around `asyncinf up --local` (remote None) or `asyncinf up --remote HOST:PORT`."""
    opts = options or UnitOptions()
    _refuse(opts.extra_args, ("--local", "--remote", "--start-timeout", "--stop-timeout"))
    if remote is None:
        mode, description = ["--local"], "robot policy, client and policy server on this host"
    else:
        _check_host_port(remote)
        mode, description = ["--remote", remote], f"robot client of the policy server {remote}"
    argv = [
        *(opts.executable or asyncinf_executable()), "up", *mode,
        "--start-timeout", _num(opts.start_timeout_s),
        "--stop-timeout", _num(opts.stop_timeout_s),
        *opts.extra_args,
    ]  # fmt: skip
    service = _service(
        argv,
        opts,
        robot=True,
        start_s=2 * opts.start_timeout_s + START_MARGIN_S,
        start_why="server, then client, may each take --start-timeout to become ready",
        watchdog_s=opts.watchdog_s,
    )
    return Unit(
        _unit_name(name, "asyncinf.service"),
        _render(f"asyncinf: {description}", service, network=remote is not None),
    )


def serve_unit(
    host: str = "127.0.0.1",
    port: int = 8080,
    options: UnitOptions | None = None,
    name: str | None = None,
) -> Unit:
    """The unit around `asyncinf serve --host HOST --port PORT` for a dedicated GPU host."""
    opts = options or UnitOptions()
    _refuse(opts.extra_args, ("--host", "--port"))
    _check_host_port(f"{host}:{port}")
    argv = [
        *(opts.executable or asyncinf_executable()), "serve", "--host", host,
        "--port", str(port), *opts.extra_args,
    ]  # fmt: skip
    service = _service(
        argv,
        opts,
        robot=False,
        start_s=opts.start_timeout_s + START_MARGIN_S,
        start_why="a policy given by --policy.* loads before READY=1",
        # A policy named by a client's handshake loads inside the serving loop, which does
        # not ping meanwhile: the watchdog must outlast a load.
        watchdog_s=opts.watchdog_s and max(opts.watchdog_s, opts.start_timeout_s),
    )
    return Unit(
        _unit_name(name, "asyncinf-serve.service"),
        _render(f"asyncinf: policy server on {host}:{port}", service, network=True),
    )


def exec_quote(arg: str) -> str:
    """One argument as systemd's ExecStart= reads it back (systemd.service(5), "Command lines")."""
    # % starts a specifier and $ an environment variable even inside quotes.
    escaped = arg.replace("%", "%%").replace("$", "$$")
    if _PLAIN_WORD.fullmatch(arg) and arg != ";":
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


# (key, value, why): the why is written above the key, for whoever reads the unit later.
_Entry = tuple[str, str, str | None]


def _service(
    argv: list[str],
    opts: UnitOptions,
    *,
    robot: bool,
    start_s: float,
    start_why: str,
    watchdog_s: float,
) -> list[_Entry]:
    entries: list[_Entry] = [
        ("Type", "notify", None),
        ("NotifyAccess", "main", "only the main process speaks for the unit"),
        ("ExecStart", " ".join(exec_quote(a) for a in argv), None),
    ]
    if opts.user:
        entries.append(("User", opts.user, None))
    if robot:
        entries.append(("SupplementaryGroups", "dialout video", "serial bus adapters, cameras"))
    entries += [
        ("Environment", "PYTHONUNBUFFERED=1", "log lines reach the journal as they happen"),
        ("TimeoutStartSec", _num(start_s), start_why),
        (
            "TimeoutStopSec",
            _num(opts.stop_timeout_s + STOP_MARGIN_S),
            "--stop-timeout for the safe stop, then cleanup",
        ),
    ]
    if watchdog_s:
        entries.append(("WatchdogSec", _num(watchdog_s), "restart a process that stops pinging"))
    entries.append(
        (
            "KillMode",
            "mixed",
            "SIGTERM to the main process alone, which stops its children in order",
        )
    )
    if robot:
        entries.append(
            (
                "OOMPolicy",
                "continue",
                "the supervisor restarts a server the OOM killer took; stop would end the run",
            )
        )
    return [
        *entries,
        (
            "Restart",
            "on-failure",
            f"also on {int(ExitCode.SERVER_BUSY)} (the server stayed busy) and "
            f"{int(ExitCode.STALLED)} (the robot held): both may clear",
        ),
        ("RestartSec", _num(opts.restart_s), None),
        (
            "RestartPreventExitStatus",
            " ".join(str(int(code)) for code in BOOT_ERRORS),
            "boot errors (config, policy load, robot connect) would fail the same way again",
        ),
        ("SuccessExitStatus", str(int(ExitCode.INTERRUPTED)), "a clean stop by SIGINT"),
    ]


def _render(description: str, service: list[_Entry], network: bool) -> str:
    unit: list[_Entry] = [("Description", description.replace("%", "%%"), None)]
    if network:
        unit += [
            ("Wants", "network-online.target", None),
            ("After", "network-online.target", None),
        ]
    unit += [
        (
            "StartLimitIntervalSec",
            "600",
            "5 starts in 10 minutes: a run that keeps failing will not heal alone",
        ),
        ("StartLimitBurst", "5", None),
    ]
    install: list[_Entry] = [("WantedBy", "multi-user.target", None)]
    lines = ["# Generated by `asyncinf systemd`; override with `systemctl edit` or regenerate."]
    for section, entries in (("Unit", unit), ("Service", service), ("Install", install)):
        lines += ["", f"[{section}]"]
        for key, value, why in entries:
            lines += [f"# {why}"] if why else []
            lines.append(f"{key}={value}")
    return "\n".join(lines) + "\n"


def _num(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"


def _refuse(extra_args: tuple[str, ...], flags: tuple[str, ...]) -> None:
    for arg in extra_args:
        flag = arg.split("=", 1)[0]
        if flag in flags:
            raise ConfigError(
                f"--extra-args {arg!r}: give {flag} to `asyncinf systemd` itself, so the "
                "unit's timeouts and mode agree with it"
            )


def _check_host_port(address: str) -> None:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{address!r}: expected HOST:PORT with a port in 1..65535")


def _unit_name(name: str | None, default: str) -> str:
    name = name or default
    if not name.endswith(".service"):
        name += ".service"
    if not _UNIT_NAME.fullmatch(name):
        raise ConfigError(f"--name {name!r}: a unit name may hold only letters, digits and :_.@-")
    return name
