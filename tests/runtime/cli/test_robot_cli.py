"""`asyncinf robot find-port | check | emulate`: CliRunner for the first two, a real process
with real signals for `emulate`."""

import os
import select
import signal
import subprocess
import sys
import time
from types import SimpleNamespace
from unittest import mock

import pytest
from typer.testing import CliRunner

from asyncinf.robots.feetech.bus import FeetechBus
from asyncinf.robots.feetech.calibration import MotorCalibration, save_calibration
from asyncinf.robots.feetech.emulator import DEFAULT_SO_CALIBRATION, FeetechEmulator, Servo
from asyncinf.robots.so_follower import MOTORS
from asyncinf.runtime.cli.robot import robot_app
from asyncinf.runtime.supervise.exitcodes import ExitCode

runner = CliRunner()
CLI = [sys.executable, "-m", "asyncinf.runtime.cli", "robot"]


def port_info(device, description="USB Single Serial", hwid="USB VID:PID=1A86:55D3"):
    return SimpleNamespace(device=device, description=description, hwid=hwid)


def test_find_port_lists_ports_without_a_terminal():
    ports = [port_info("/dev/ttyACM0"), port_info("/dev/ttyS0", "n/a", "n/a")]
    with mock.patch("serial.tools.list_ports.comports", return_value=ports):
        result = runner.invoke(robot_app, ["find-port"])
    assert result.exit_code == 0, result.output
    assert "/dev/ttyACM0" in result.output and "1A86:55D3" in result.output


def test_find_port_unplug_flow_on_a_terminal():
    before = [port_info("/dev/ttyACM0"), port_info("/dev/ttyACM1")]
    after = [port_info("/dev/ttyACM0")]
    with (
        mock.patch("serial.tools.list_ports.comports", side_effect=[before, after]),
        mock.patch("asyncinf.runtime.cli.robot._stdin_is_terminal", return_value=True),
    ):
        result = runner.invoke(robot_app, ["find-port"], input="\n")
    assert result.exit_code == 0, result.output
    assert "The arm's port is /dev/ttyACM1" in result.output


@pytest.fixture
def emulator():
    with FeetechEmulator.so_follower() as emu:
        yield emu


def check(*args):
    return runner.invoke(robot_app, ["check", *args])


def test_check_pings_every_motor_and_prints_positions(emulator, tmp_path):
    result = check("--robot.type=so101_follower", f"--robot.port={emulator.port}",
                   "--robot.id=arm", f"--robot.calibration_dir={tmp_path}")  # fmt: skip
    assert result.exit_code == 0, result.output
    for motor in MOTORS:
        assert motor in result.output
    assert "777" in result.output and "all answered" in result.output
    assert not any(s.torque_enabled for s in emulator.servos.values())


def test_check_warns_on_servos_at_factory_limits(tmp_path):
    # Never calibrated, no file: `up` refuses this arm, so `check` says so before it does.
    with FeetechEmulator([Servo(i) for i in MOTORS.values()]) as emu:
        result = check("--robot.type=so101_follower", f"--robot.port={emu.port}",
                       f"--robot.calibration_dir={tmp_path}")  # fmt: skip
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    assert "factory limits (uncalibrated)" in flat and "lerobot-calibrate" in flat


def test_check_reports_a_missing_motor_with_the_robot_error_code(emulator, tmp_path):
    emulator.faults.missing_ids = {5}
    result = check("--robot.type", "so101_follower", "--robot.port", emulator.port,
                   f"--robot.calibration_dir={tmp_path}", "--robot.bus_timeout_ms=20")  # fmt: skip
    assert result.exit_code == ExitCode.ROBOT_ERROR, result.output
    assert "wrist_roll" in result.output and "no reply" in result.output


def test_check_bad_port_and_bad_options(tmp_path):
    result = check("--robot.type=so101_follower", f"--robot.port={tmp_path}/ttyACM7")
    assert result.exit_code == ExitCode.ROBOT_ERROR
    assert "no such port" in result.output
    result = check("--robot.type=so101_follower")
    assert result.exit_code == ExitCode.CONFIG_ERROR
    assert "--robot.port is required" in result.output
    result = check("--robot.type=so101_follower", "--robot.port=/dev/x", "--policy.path=p")
    assert result.exit_code == ExitCode.USAGE  # an option this command does not take
    result = check("--robot.port=/dev/x")
    assert result.exit_code == ExitCode.CONFIG_ERROR and "--robot.type" in result.output


def start_emulate(*args):
    proc = subprocess.Popen(
        [*CLI, "emulate", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    ready, _, _ = select.select([proc.stdout], [], [], 30)
    if not ready:
        proc.kill()
        pytest.fail("emulate printed nothing within 30 s")
    port = proc.stdout.readline().decode().strip()
    return proc, port


def stop(proc, sig):
    proc.send_signal(sig)
    try:
        return proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 0), (signal.SIGINT, 130)])
def test_emulate_prints_the_port_first_and_serves_until_a_signal(sig, code):
    proc, port = start_emulate("--robot.type=so101_follower")
    try:
        assert port.startswith("/dev/") and os.path.exists(port)
        with FeetechBus(port, MOTORS, timeout_ms=200) as bus:
            assert {m: bus.ping(m) for m in MOTORS} == dict.fromkeys(MOTORS, 777)
    finally:
        rc = stop(proc, sig)
    assert rc == code
    assert "stopped:" in proc.stderr.read().decode()


def test_emulate_calibrates_the_servos_from_the_robots_file(tmp_path):
    cal = dict(DEFAULT_SO_CALIBRATION)
    cal["shoulder_lift"] = MotorCalibration(2, 0, -321, 1000, 3000)
    save_calibration(tmp_path / "mine.json", cal)
    proc, port = start_emulate("--robot.type=so100_follower", "--robot.id=mine",
                               f"--robot.calibration_dir={tmp_path}")  # fmt: skip
    try:
        with FeetechBus(port, MOTORS, timeout_ms=200) as bus:
            assert bus.read("Homing_Offset", "shoulder_lift") == -321
            assert bus.read("Min_Position_Limit", "shoulder_lift") == 1000
            assert bus.read("Max_Position_Limit", "shoulder_lift") == 3000
    finally:
        stop(proc, signal.SIGTERM)


def test_emulate_refuses_unknown_types_and_options():
    for args, text in (
        (["--robot.type=koch_follower"], "emulate knows"),
        (["--robot.type=so101_follower", "--robot.baudrate=1"], "not used by emulate"),
        (["--robot.type=so101_follower", "--drop-rate=2"], "probability"),
    ):
        t0 = time.monotonic()
        result = subprocess.run(
            [*CLI, "emulate", *args], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == ExitCode.CONFIG_ERROR, result.stderr
        assert text in result.stderr and result.stdout == ""
        assert time.monotonic() - t0 < 60
