"""`asyncinf robot …`: commission a real arm — find its port, check it, or emulate one.

Robot options are LeRobot's dotted flags (`--robot.type=so101_follower --robot.port=…`),
collected as extra arguments and parsed by `runtime.config.parse_dotted_args`.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from typing import Annotated, Any

import typer

from asyncinf.runtime.config import parse_dotted_args, parse_value
from asyncinf.runtime.errors import ConfigError, FlagError, RobotError
from asyncinf.runtime.supervise.exitcodes import ExitCode

log = logging.getLogger(__name__)

DOTTED_FLAGS = {"allow_extra_args": True, "ignore_unknown_options": True}
Opt = typer.Option

robot_app = typer.Typer(
    help="Commission a real arm: find its serial port, check its motors and cameras, or "
    "emulate one on a pseudo-terminal.",
    no_args_is_help=True,
    add_completion=False,
)

EMULATED_TYPES = ("so100_follower", "so101_follower")
# Ours and LeRobot's name for "release the motors on disconnect".
_RELEASE_FLAGS = {"disable_torque_on_exit", "disable_torque_on_disconnect"}


def _robot_flags(ctx: typer.Context) -> tuple[str, dict[str, Any]]:
    """(robot type, other --robot.* options) from the extra arguments."""
    groups = parse_dotted_args(ctx.args)
    unknown = [f"--{g}.…" if g else "ungrouped flags" for g in groups if g != "robot"]
    if unknown:
        raise FlagError(f"unexpected {unknown[0]}: this command takes --robot.* options only")
    options = {k: parse_value(v) for k, v in groups.get("robot", {}).items()}
    robot_type = options.pop("type", None)
    if not robot_type:
        raise ConfigError("--robot.type is required, e.g. --robot.type=so101_follower")
    return str(robot_type), options


def _bad_options(exc: ConfigError) -> typer.Exit:
    """A bad command line exits 2, a bad value 78."""
    return _fail(str(exc), ExitCode.USAGE if isinstance(exc, FlagError) else ExitCode.CONFIG_ERROR)


def _fail(message: str, code: ExitCode) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(int(code))


# -- find-port ------------------------------------------------------------------------------


def _ports() -> dict[str, Any]:
    try:
        from asyncinf.robots.feetech.bus import list_ports  # noqa: PLC0415

        return {p.device: p for p in list_ports()}
    except ImportError:
        raise _fail("listing serial ports needs pyserial: pip install 'asyncinf[serial]'",
                    ExitCode.CONFIG_ERROR) from None  # fmt: skip


def _stdin_is_terminal() -> bool:
    return sys.stdin.isatty()


@robot_app.command("find-port")
def find_port(
    list_only: Annotated[
        bool, Opt("--list", help="Only list the ports; never ask to unplug anything.")
    ] = False,
) -> None:
    """List serial ports; on a terminal, find the arm's port by unplugging it.

    Like `lerobot-find-port`: note the ports, unplug the arm's USB cable, press Enter, and the
    port that disappeared is the arm's. Without a terminal (or with --list) it only lists.
    """
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    before = _ports()
    table = Table("port", "description", "hardware id", title="serial ports")
    for device, info in before.items():
        table.add_row(device, info.description or "-", info.hwid or "-")
    console = Console()
    console.print(table if before else "no serial ports found")
    if list_only or not _stdin_is_terminal():
        return
    typer.echo("Unplug the arm's USB cable from the computer, then press Enter.")
    input()
    # The device node goes away shortly after the unplug; there is no event to wait on.
    deadline = time.monotonic() + 3.0
    gone: list[str] = []
    while not gone and time.monotonic() < deadline:
        gone = sorted(set(before) - set(_ports()))
        if not gone:
            time.sleep(0.1)
    if len(gone) != 1:
        found = "no port disappeared" if not gone else f"several ports disappeared: {gone}"
        raise _fail(f"could not tell the arm's port: {found}", ExitCode.USAGE)
    typer.echo(f"The arm's port is {gone[0]}  (use --robot.port={gone[0]})")
    typer.echo("Plug the USB cable back in.")


# -- check ----------------------------------------------------------------------------------


@robot_app.command("check", context_settings=DOTTED_FLAGS)
def check(
    ctx: typer.Context,
    frames: Annotated[int, Opt("--frames", help="Frames to time on each camera.")] = 30,
) -> None:
    """Ping every motor and print its position, then time each camera's frame rate.

    Takes the arm's flags: --robot.type=so101_follower --robot.port=/dev/ttyACM0
    [--robot.id=ID] [--robot.cameras='{front: {type: opencv, index_or_path: 0}}'].
    Our SO followers never enable torque here; a LeRobot robot's connect() does, so it is
    released again on disconnect (unless --robot.disable_torque_on_exit or LeRobot's
    disable_torque_on_disconnect says otherwise, or the robot has no such switch). Exits 0
    when every motor and camera answers, 4 when one does not or the port cannot be opened,
    78 for bad options.
    """
    from rich.console import Console  # noqa: PLC0415

    try:
        robot_type, options = _robot_flags(ctx)
        robot = _releasing_robot(robot_type, options)
    except ConfigError as exc:
        raise _bad_options(exc) from None
    console = Console()
    try:
        report = robot.probe(camera_frames=frames)
        if report is None:
            ok = _check_generic(robot, console)
        else:
            _print_report(report, console)
            ok = report.ok
    except RobotError as exc:
        raise _fail(str(exc), ExitCode.ROBOT_ERROR) from None
    if not ok:
        raise typer.Exit(int(ExitCode.ROBOT_ERROR))


def _releasing_robot(robot_type: str, options: dict[str, Any]) -> Any:
    """The robot, set to release its motors on disconnect where the user did not choose: a
    check must not leave on the torque a LeRobot robot's connect() enabled. A robot that
    cannot be asked to (its disconnect decides) is built as given."""
    from asyncinf.robots.robot import make_robot  # noqa: PLC0415

    if not _RELEASE_FLAGS & set(options):
        try:
            return make_robot(robot_type, {**options, "disable_torque_on_exit": True})
        except ConfigError:
            pass  # the options' own error, if any, is raised below
    return make_robot(robot_type, options)


def _fmt(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def _print_report(report: Any, console: Any) -> None:
    from rich.table import Table  # noqa: PLC0415

    motors = Table("motor", "id", "model", "raw", "value", "torque", "volts", "°C", "status",
                   title=f"motors on {report.port}")  # fmt: skip
    for m in report.motors:
        if m.error is not None:
            motors.add_row(m.name, str(m.id), "-", "-", "-", "-", "-", "-", f"[red]{m.error}[/]")
            continue
        status = "ok" if not m.status else f"[yellow]0x{m.status:02x}[/]"
        torque = "-" if m.torque is None else ("on" if m.torque else "off")
        motors.add_row(m.name, str(m.id), str(m.model), str(m.position), _fmt(m.value, ".2f"),
                       torque, _fmt(m.voltage_v), str(m.temperature_c), status)  # fmt: skip
    console.print(motors)
    console.print(f"calibration: {report.calibration}")
    if report.cameras:
        cams = Table("camera", "shape", "fps", "frames", "frame age ms", "error", title="cameras")
        for c in report.cameras:
            cams.add_row(c.name, "x".join(map(str, c.shape)), _fmt(c.fps), str(c.frames),
                         _fmt(c.frame_age_ms), f"[red]{c.error}[/]" if c.error else "")  # fmt: skip
        console.print(cams)
    console.print("[green]all answered[/]" if report.ok else "[red]something did not answer[/]")


def _check_generic(robot: Any, console: Any) -> bool:
    """Robots without a probe: connect, read once, disconnect."""
    robot.connect()
    try:
        state = robot.read_state()
        shapes = {k: v.shape for k, v in robot.read_images().items()}
    finally:
        robot.disconnect()
    for name, value in robot.state_dict(state).items():
        console.print(f"{name:24s} {value:9.3f}")
    for name, shape in shapes.items():
        console.print(f"camera {name}: {shape}")
    return True


# -- emulate --------------------------------------------------------------------------------


@robot_app.command("emulate", context_settings=DOTTED_FLAGS)
def emulate(
    ctx: typer.Context,
    drop_rate: Annotated[float, Opt("--drop-rate", help="Probability a reply is lost.")] = 0.0,
    garble_rate: Annotated[float, Opt("--garble-rate", help="Probability a reply has a flipped bit.")] = 0.0,
    noise_rate: Annotated[float, Opt("--noise-rate", help="Probability of junk bytes before a reply.")] = 0.0,
    missing_id: Annotated[list[int] | None, Opt("--missing-id", help="A servo id that never answers (repeatable).")] = None,
    seed: Annotated[int, Opt("--seed", help="Seed of the fault injection.")] = 0,
    speed: Annotated[float, Opt("--speed", help="Servo speed in steps/s (4096 steps a turn).")] = 3000.0,
) -> None:  # fmt: skip
    """Emulate an arm's servo bus on a pseudo-terminal until Ctrl-C or SIGTERM.

    --robot.type=so101_follower (or so100_follower) [--robot.id=ID] [--robot.calibration_dir=DIR].
    Prints the port's path as the first line of standard output: pass it as --robot.port.
    With --robot.id, the servos are calibrated as that robot's LeRobot calibration file says;
    otherwise (or without a file) with a built-in calibration the driver reads from them.
    """
    from asyncinf.robots.feetech.calibration import (  # noqa: PLC0415
        calibration_path,
        load_calibration,
    )
    from asyncinf.robots.feetech.emulator import Faults, FeetechEmulator  # noqa: PLC0415

    try:
        robot_type, options = _robot_flags(ctx)
        if robot_type not in EMULATED_TYPES:
            raise ConfigError(f"--robot.type={robot_type}: emulate knows {list(EMULATED_TYPES)}")
        unknown = sorted(set(options) - {"id", "calibration_dir", "port"})
        if unknown:
            raise ConfigError(
                f"--robot.{unknown[0]} is not used by emulate; it takes --robot.type, "
                "--robot.id and --robot.calibration_dir"
            )
        for name, rate in (("drop", drop_rate), ("garble", garble_rate), ("noise", noise_rate)):
            if not 0 <= rate <= 1:
                raise ConfigError(f"--{name}-rate={rate}: a probability in [0, 1]")
        calibration = None
        if options.get("id") is not None:
            path = calibration_path(robot_type, str(options["id"]), options.get("calibration_dir"))
            if path.is_file():
                calibration = load_calibration(path)
                log.info("servos calibrated from %s", path)
            else:
                log.info("no calibration file at %s: using the built-in calibration", path)
    except ConfigError as exc:
        raise _bad_options(exc) from None
    faults = Faults(drop_rate=drop_rate, garble_rate=garble_rate, noise_rate=noise_rate,
                    missing_ids=set(missing_id or ()), seed=seed)  # fmt: skip
    emulator = FeetechEmulator.so_follower(calibration, faults=faults, speed_steps_s=speed)

    stop = threading.Event()
    received: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        received.append(signum)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    emulator.start()
    try:
        typer.echo(emulator.port)  # the first line of stdout, flushed: scripts read it
        sys.stdout.flush()
        typer.echo(
            f"emulating a {robot_type} (6 × STS3215) on {emulator.port}; "
            f"use --robot.port={emulator.port}. Ctrl-C stops.",
            err=True,
        )
        stop.wait()
    finally:
        emulator.close()
        for s, handler in previous.items():
            signal.signal(s, handler)
    s = emulator.stats
    typer.echo(
        f"stopped: {s.requests} requests, {s.replies} replies, {s.dropped} dropped, "
        f"{s.garbled} garbled, {s.bad_checksum} bad checksums received",
        err=True,
    )
    if received and received[0] == signal.SIGINT:
        raise typer.Exit(int(ExitCode.INTERRUPTED))
