"""LeRobot's robots and cameras through asyncinf: a third-party plugin robot built here, and
LeRobot's own SO follower on our emulated STS3215 servos (a real pseudo-terminal, LeRobot's
Feetech driver on one side, our emulator on the other)."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
from cli_processes import CLI, Command
from lerobot_calibration import lerobot_writes_calibration

from asyncinf.robots.feetech.calibration import (
    MotorCalibration,
    NormMode,
    load_calibration,
    normalize,
)
from asyncinf.robots.feetech.emulator import DEFAULT_SO_CALIBRATION, FeetechEmulator
from asyncinf.robots.lerobot.robot import LeRobotRobot
from asyncinf.robots.robot import make_robot
from asyncinf.robots.so_follower import MOTORS
from asyncinf.runtime.errors import ConfigError, RobotError
from asyncinf.runtime.testing import wait_until

TINYARM = ["base.pos", "shoulder.pos", "elbow.pos", "gripper.pos"]


@pytest.fixture
def robot_id(request):
    """An id of this test's own: the calibration root is the session's (LeRobot reads it once)."""
    return re.sub(r"\W", "_", request.node.name)


# -- the plugin robot --------------------------------------------------------------------------


def test_a_plugin_robot_is_found_and_its_options_reach_its_config():
    robot = make_robot(
        "tinyarm",
        {"max_relative_target": "0.5", "id": "bench",
         "cameras": "{wrist: {type: tinyarm_camera, width: 32, height: 24, fps: 30}}"},
    )  # fmt: skip
    assert isinstance(robot, LeRobotRobot)
    assert robot.joint_names == TINYARM  # observation order, not the action features' order
    assert robot.camera_shapes == {"wrist": (24, 32, 3)}
    assert robot.lerobot.config.max_relative_target == 0.5
    # The robot clamps in its own send_action: the control loop must not clamp again.
    assert robot.config.max_relative_target is None
    # Our hold rule, where LeRobot's default would release the arm on disconnect.
    assert robot.lerobot.config.disable_torque_on_disconnect is False
    robot.connect()
    try:
        state = robot.read_state()
        assert state.tolist() == [0.0] * 4
        (frame,) = robot.read_images().values()
        assert frame.shape == (24, 32, 3) and frame.dtype == np.uint8
        sent = robot.send_action(np.array([1.0, -2.0, 0.2, 10.0], np.float32))
        assert sent.tolist() == pytest.approx([0.5, -0.5, 0.2, 0.5])  # by name, clamped once
        assert robot.lerobot.position == pytest.approx(
            {"base": 0.5, "shoulder": -0.5, "elbow": 0.2, "gripper": 0.5}
        )
    finally:
        robot.disconnect()
    assert robot.lerobot.torque  # held
    robot.disconnect()  # twice is safe


def test_plugin_robot_option_errors_are_one_line():
    with pytest.raises(ConfigError, match=r"--robot\.type=tinyarm: .*bogus.*record_path"):
        make_robot("tinyarm", {"bogus": 1})
    with pytest.raises(ConfigError, match=r"'nosuch' is neither a built-in robot .*tinyarm"):
        make_robot("nosuch", {})
    with pytest.raises(ConfigError, match="disagree"):
        make_robot("tinyarm", {"disable_torque_on_exit": "true",
                               "disable_torque_on_disconnect": "false"})  # fmt: skip
    released = make_robot("tinyarm", {"disable_torque_on_disconnect": True})
    assert released.config.disable_torque_on_exit  # LeRobot's own flag, as given


def test_nested_options_and_the_hold_rule_reach_a_bimanual_robots_arms():
    robot = make_robot(
        "bi_so_follower",
        {"id": "pair", "left_arm_config.port": "/dev/ttyLEFT",
         "left_arm_config.max_relative_target": "{shoulder_pan: 5, shoulder_lift: 5,"
         " elbow_flex: 5, wrist_flex: 5, wrist_roll: 5, gripper: 5}",
         "right_arm_config": "{port: /dev/ttyRIGHT, disable_torque_on_disconnect: true}"},
    )  # fmt: skip
    left, right = robot.lerobot.config.left_arm_config, robot.lerobot.config.right_arm_config
    assert (left.port, right.port) == ("/dev/ttyLEFT", "/dev/ttyRIGHT")
    assert left.max_relative_target["gripper"] == 5.0
    # Our hold rule on the arm left at LeRobot's default; LeRobot's own flag kept where given.
    assert left.disable_torque_on_disconnect is False
    assert right.disable_torque_on_disconnect is True
    assert robot.joint_names[:2] == ["left_shoulder_pan.pos", "left_shoulder_lift.pos"]
    assert len(robot.joint_names) == 12


def test_a_lerobot_camera_on_our_sim_robot():
    robot = make_robot(
        "sim", {"cameras": {"wrist": {"type": "tinyarm_camera", "width": 40, "height": 30}}}
    )
    camera = robot.cameras["wrist"]
    robot.connect()
    try:
        _, capture_ns = camera.read()
        assert robot.read_images()["wrist"].shape == (30, 40, 3) and capture_ns > 0
        frame, later_ns = camera.wait_for_frame(capture_ns, timeout_s=1.0)  # for robot check
        assert later_ns > capture_ns and frame.shape == (30, 40, 3)
    finally:
        robot.disconnect()
    camera.disconnect()  # twice is safe, though LeRobot's own raises
    with pytest.raises(ConfigError, match=r"--robot\.cameras\.wrist: .*\['width'"):
        make_robot("sim", {"cameras": {"wrist": {"type": "tinyarm_camera", "width": None}}})


@pytest.mark.parametrize("transport", ["shm", "grpc"])
def test_up_drives_the_plugin_robot_at_30_hz_without_idle_frames(tmp_path, transport):
    """`up --local` (shared memory), and `up --remote` against `asyncinf serve` (gRPC)."""
    record, summary = tmp_path / "record.json", tmp_path / "summary.json"
    server = None
    if transport == "grpc":
        server = Command(["serve", "--port=0"], tmp_path / "serve.log")
    try:
        where = "--local"
        if server is not None:
            port = server.wait_for_log(r"serving on 127\.0\.0\.1:(\d+)", 60)[1]
            where = f"--remote=127.0.0.1:{port}"
        r = subprocess.run(
            [*CLI, "up", where, "--robot.type=tinyarm", f"--robot.record_path={record}",
             "--robot.cameras={front: {type: tinyarm_camera, width: 32, height: 24, fps: 30}}",
             "--policy.type=scripted", "--fps=30", "--duration=8", f"--summary-json={summary}"],
            capture_output=True, text=True, timeout=240,
        )  # fmt: skip
    finally:
        if server is not None:
            server.proc.terminate()
            assert server.proc.wait(30) == 0, server.text()
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads(summary.read_text())
    assert s["chunks_received"] >= 3 and s["errors"] == 0, s
    assert s["idle_frames_after_first_chunk"] == 0, s
    seen = json.loads(record.read_text())
    assert seen["actions"] == s["actions_executed"] > 100
    # Every action reached it by name, in its own action-feature order; it held on exit.
    assert seen["orders"] == [["gripper.pos", "elbow.pos", "shoulder.pos", "base.pos"]]
    assert seen["torque_on_exit"] is True
    # The scripted policy swings a joint named gripper about 50: its value reached "gripper".
    assert seen["position"]["gripper"] > 20 > abs(seen["position"]["base"])


def test_the_supervisor_reads_a_lerobot_robots_shape_without_importing_lerobot(tmp_path):
    """The joints and cameras come from a short-lived child: the supervisor, alive for the
    whole run, does not hold torch and LeRobot's processors (~800 MB) for it."""
    run = Command(
        ["up", "--local", "--robot.type=tinyarm", "--policy.type=scripted", "--fps=30"],
        tmp_path / "up.log",
    )
    try:
        run.wait_for_log("client started", 240)
        assert "in a child process" in run.text()
        maps = (Path("/proc") / str(run.proc.pid) / "maps").read_text()
        # Not "lerobot" alone: the venv's own path may hold it (CI's is lerobot-venv).
        assert "libtorch" not in maps and "/lerobot/" not in maps, "the supervisor imported them"
    finally:
        code = run.ctrl_c()  # a clean stop removes the run's IPC objects (kill -9 would not)
    assert code == 130, run.text()


# -- LeRobot's SO follower on our emulator ------------------------------------------------------


def test_lerobot_so_follower_drives_our_emulated_servos(robot_id):
    path = lerobot_writes_calibration(robot_id, DEFAULT_SO_CALIBRATION)
    with FeetechEmulator.so_follower(speed_steps_s=100_000) as emu:
        options = {"port": emu.port, "id": robot_id, "max_relative_target": 5}
        robot = make_robot("lerobot:so101_follower", options)
        robot.connect()
        try:
            state = robot.read_state()
            # Both sides at once: LeRobot's reading of the servos equals our math on the raw
            # registers, in degrees (LeRobot's default) and 0..100 for the gripper.
            for k, (motor, motor_id) in enumerate(MOTORS.items()):
                mode = NormMode.RANGE_0_100 if motor == "gripper" else NormMode.DEGREES
                raw = emu.servo(motor_id).get("Present_Position")
                expected = normalize(raw, DEFAULT_SO_CALIBRATION[motor], mode)
                assert state[k] == pytest.approx(expected, abs=1e-4), motor
            sent = robot.send_action(state + 20)
            assert sent == pytest.approx(state + 5, abs=1e-3)  # LeRobot's own clamp, once

            def goal_deg() -> float:
                goal = emu.servo(1).get("Goal_Position")
                return normalize(goal, DEFAULT_SO_CALIBRATION["shoulder_pan"], NormMode.DEGREES)

            # A sync write has no reply: the emulator applies it after send_action returns.
            wait_until(lambda: abs(goal_deg() - float(sent[0])) <= 0.1, 5, "the goal written")
        finally:
            robot.disconnect()
        assert all(s.torque_enabled for s in emu.servos.values())  # held, not released
    assert load_calibration(path) == DEFAULT_SO_CALIBRATION


def test_robot_check_releases_the_torque_lerobots_connect_enabled(robot_id):
    lerobot_writes_calibration(robot_id, DEFAULT_SO_CALIBRATION)
    with FeetechEmulator.so_follower() as emu:
        check = [*CLI, "robot", "check", "--robot.type=lerobot:so101_follower",
                 f"--robot.port={emu.port}", f"--robot.id={robot_id}"]  # fmt: skip
        r = subprocess.run(check, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr[-3000:]
        assert "shoulder_pan.pos" in r.stdout and "torque released" in r.stderr, r.stderr
        assert not any(s.torque_enabled for s in emu.servos.values())
        # Asked to hold, it holds (LeRobot's flag as given).
        r = subprocess.run([*check, "--robot.disable_torque_on_disconnect=false"],
                           capture_output=True, text=True, timeout=120)  # fmt: skip
        assert r.returncode == 0, r.stderr[-3000:]
        assert all(s.torque_enabled for s in emu.servos.values())


def test_an_uncalibrated_arm_is_refused_instead_of_lerobots_prompt(robot_id):
    with FeetechEmulator.so_follower() as emu:  # motors calibrated, but no file for this id
        robot = make_robot("lerobot:so101_follower", {"port": emu.port, "id": "new"})
        with pytest.raises(RobotError, match=r"not calibrated.*lerobot-calibrate"):
            robot.connect()
        assert not robot.is_connected


def test_our_driver_uses_a_lerobot_written_file_under_so_follower(robot_id, caplog):
    cal = dict(DEFAULT_SO_CALIBRATION)
    cal["elbow_flex"] = MotorCalibration(3, 0, 1200, 900, 3000)
    path = lerobot_writes_calibration(robot_id, cal)
    caplog.set_level(logging.INFO, "asyncinf.robots.so_follower")
    with FeetechEmulator.so_follower(speed_steps_s=100_000) as emu:
        ours = make_robot("so101_follower", {"port": emu.port, "id": robot_id})
        ours.connect()
        try:
            servo = emu.servo(3)  # the file disagreed with the motors: it was written to them
            assert (servo.get("Homing_Offset"), servo.get("Min_Position_Limit"),
                    servo.get("Max_Position_Limit")) == (1200, 900, 3000)  # fmt: skip
            state = ours.read_state()
        finally:
            ours.disconnect()
        # The units of a run with defaults are degrees, the same numbers LeRobot reads.
        theirs = make_robot("lerobot:so101_follower", {"port": emu.port, "id": robot_id})
        theirs.connect()
        try:
            assert theirs.read_state() == pytest.approx(state, abs=0.2)
        finally:
            theirs.disconnect()
    assert f"calibration read from {path}" in caplog.text
    assert ours.config.use_degrees and ours.norm_modes["shoulder_pan"] is NormMode.DEGREES


def test_a_run_with_defaults_moves_the_arm_in_degrees(robot_id, tmp_path):
    """`up` with no unit flag, our SO driver, a LeRobot-written file: the scripted policy's
    fixed reference (period ~forever) for wrist_roll, amplitude·sin(4π/3) = −51.96 joint
    units, lands on the servo as −51.96 degrees. Its calibration spans all 4096 steps, so in
    −100..100 units the same target would land at −93.6 degrees."""
    path = lerobot_writes_calibration(robot_id, DEFAULT_SO_CALIBRATION)
    target = 60 * np.sin(4 * np.pi / 3)
    with FeetechEmulator.so_follower(speed_steps_s=100_000) as emu:
        r = subprocess.run(
            [*CLI, "up", "--local", "--robot.type=so101_follower", f"--robot.port={emu.port}",
             f"--robot.id={robot_id}", "--policy.type=scripted", "--policy.period_s=1000000000",
             "--policy.amplitude=60", "--duration=4"],
            capture_output=True, text=True, timeout=240,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr[-3000:]
        assert f"calibration read from {path}" in r.stderr
        goal = emu.servo(MOTORS["wrist_roll"]).get("Goal_Position")
        cal = DEFAULT_SO_CALIBRATION["wrist_roll"]
        assert normalize(goal, cal, NormMode.DEGREES) == pytest.approx(target, abs=0.5)
        # LeRobot's own driver, with its defaults, reads the arm where the policy meant.
        theirs = make_robot("lerobot:so101_follower", {"port": emu.port, "id": robot_id})
        theirs.connect()
        try:
            wrist_roll = theirs.read_state()[list(MOTORS).index("wrist_roll")]
        finally:
            theirs.disconnect()
    assert wrist_roll == pytest.approx(target, abs=0.5)


def test_up_local_with_lerobots_so_follower_on_robot_emulate(robot_id, tmp_path):
    lerobot_writes_calibration(robot_id, DEFAULT_SO_CALIBRATION)
    emulate = subprocess.Popen(
        [*CLI, "robot", "emulate", "--robot.type=so101_follower", f"--robot.id={robot_id}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "HF_LEROBOT_CALIBRATION": str(robot_id)},
    )  # fmt: skip
    try:
        port = emulate.stdout.readline().strip()
        summary = tmp_path / "summary.json"
        r = subprocess.run(
            [*CLI, "up", "--local", "--robot.type=lerobot:so101_follower",
             f"--robot.port={port}", f"--robot.id={robot_id}", "--policy.type=scripted",
             "--duration=5", f"--summary-json={summary}"],
            capture_output=True, text=True, timeout=240,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr[-3000:]
        s = json.loads(summary.read_text())
        assert s["chunks_received"] >= 2 and s["errors"] == 0 and s["actions_executed"] > 50, s
    finally:
        emulate.send_signal(signal.SIGTERM)
        _, err = emulate.communicate(timeout=30)
    assert emulate.returncode == 0, err
    requests = int(re.search(r"stopped: (\d+) requests", err).group(1))
    assert requests > 2 * s["actions_executed"]  # a read and a write per tick reached the bus
