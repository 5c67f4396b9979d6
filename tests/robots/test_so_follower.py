"""SO-101 follower on the emulated bus (real pty, real pyserial), checked in the servos' memory."""

import json
import logging

import numpy as np
import pytest

from asyncinf.robots.feetech.calibration import (
    MotorCalibration,
    NormMode,
    normalize,
    save_calibration,
)
from asyncinf.robots.feetech.emulator import DEFAULT_SO_CALIBRATION, FeetechEmulator, Servo
from asyncinf.robots.feetech.protocol import ErrorBit
from asyncinf.robots.feetech.registers import STS3215_RESOLUTION
from asyncinf.robots.robot import make_robot
from asyncinf.robots.so_follower import MOTORS, SO100Follower, SO101Follower
from asyncinf.runtime.errors import (
    ActionRejected,
    ConfigError,
    MotorFault,
    MotorMissing,
    RobotError,
    SerialPortError,
)
from asyncinf.runtime.testing import wait_until


@pytest.fixture
def emulator():
    # Fast servos: the arm reaches a goal within a tick or two.
    with FeetechEmulator.so_follower(speed_steps_s=100_000) as emu:
        yield emu


@pytest.fixture
def make(emulator, tmp_path):
    robots = []

    def build(robot_type="so101_follower", **options):
        opts = {"port": emulator.port, "id": "arm", "calibration_dir": str(tmp_path),
                "bus_timeout_ms": 100, **options}  # fmt: skip
        robot = make_robot(robot_type, opts)
        robots.append(robot)
        return robot

    yield build
    for robot in robots:
        robot.disconnect()


def servo_values(emulator, register):
    return {m: emulator.servo(i).get(register) for m, i in MOTORS.items()}


def test_features_match_lerobot(make):
    robot = make()
    assert isinstance(robot, SO101Follower)
    assert robot.joint_names == [
        "shoulder_pan.pos", "shoulder_lift.pos", "elbow_flex.pos",
        "wrist_flex.pos", "wrist_roll.pos", "gripper.pos",
    ]  # fmt: skip
    assert robot.camera_shapes == {}
    assert not robot.is_connected


def test_connect_configures_like_lerobot_and_holds_where_it_stands(emulator, make):
    before = servo_values(emulator, "Present_Position")
    robot = make()
    robot.connect()
    assert robot.is_connected
    assert set(servo_values(emulator, "Torque_Enable").values()) == {1}
    assert set(servo_values(emulator, "Lock").values()) == {1}
    assert set(servo_values(emulator, "P_Coefficient").values()) == {16}
    assert set(servo_values(emulator, "D_Coefficient").values()) == {32}
    assert set(servo_values(emulator, "Acceleration").values()) == {254}
    assert set(servo_values(emulator, "Return_Delay_Time").values()) == {0}
    assert emulator.servo(6).get("Max_Torque_Limit") == 500
    assert servo_values(emulator, "Goal_Position") == before
    assert servo_values(emulator, "Present_Position") == before


@pytest.mark.parametrize(
    ("options", "body"),
    [({}, NormMode.DEGREES), ({"use_degrees": False}, NormMode.RANGE_M100_100)],
)
def test_read_state_normalises_like_lerobot(emulator, make, options, body):
    # Degrees by default, as LeRobot >= 0.4; -100..100 (LeRobot < 0.4) when asked.
    robot = make(**options)
    robot.connect()
    state = robot.read_state()
    assert state.dtype == np.float32 and state.shape == (6,)
    for k, (motor, motor_id) in enumerate(MOTORS.items()):
        raw = emulator.servo(motor_id).get("Present_Position")
        mode = NormMode.RANGE_0_100 if motor == "gripper" else body
        expected = normalize(raw, DEFAULT_SO_CALIBRATION[motor], mode, STS3215_RESOLUTION)
        assert state[k] == pytest.approx(expected, abs=1e-4)
    assert robot.state_dict(state)["gripper.pos"] == pytest.approx(state[5])


def test_hundred_ticks_the_emulated_arm_follows(emulator, make):
    robot = make()
    robot.connect()
    start = robot.read_state()
    ramp = np.array([0.4, -0.3, 0.3, -0.2, 0.5, 0.3], np.float32)
    target = start
    for tick in range(100):
        state = robot.read_state()
        if tick > 5:  # the arm tracks the ramp a tick or two behind
            assert np.abs(state - target).max() < 3.0
        target = start + ramp * (tick + 1)
        robot.send_action(target)
    wait_until(lambda: np.abs(robot.read_state() - target).max() < 0.2)
    bus = robot.bus.stats
    assert bus.retries == 0 and bus.transactions >= 200


def test_ticks_survive_occasional_bus_faults(emulator, make):
    robot = make(bus_timeout_ms=30)
    robot.connect()
    emulator.faults.drop_rate = emulator.faults.garble_rate = emulator.faults.noise_rate = 0.01
    for _ in range(60):
        robot.send_action(robot.read_state())
    assert robot.bus.stats.retries > 0


def test_disconnect_holds_by_default(emulator, make):
    robot = make()
    robot.connect()
    robot.send_action(robot.read_state() + 5)
    robot.disconnect()
    assert not robot.is_connected
    assert set(servo_values(emulator, "Torque_Enable").values()) == {1}
    # The hold goal went out in a sync write (never acknowledged): wait for the servos to
    # have it, then they stand still under torque.
    wait_until(
        lambda: (
            servo_values(emulator, "Goal_Position") == servo_values(emulator, "Present_Position")
        )
    )
    robot.disconnect()  # twice is fine


@pytest.mark.parametrize("flag", ["disable_torque_on_exit", "disable_torque_on_disconnect"])
def test_disconnect_releases_when_asked(emulator, make, flag):
    robot = make(**{flag: True})
    robot.connect()
    robot.disconnect()
    assert set(servo_values(emulator, "Torque_Enable").values()) == {0}
    assert set(servo_values(emulator, "Lock").values()) == {0}


def test_port_is_free_after_disconnect(emulator, make):
    robot = make()
    robot.connect()
    robot.disconnect()
    again = make()
    again.connect()


def test_max_relative_target_clamps_against_the_last_state(emulator, make):
    robot = make(max_relative_target=5.0)
    robot.connect()
    state = robot.read_state()
    sent = robot.send_action(state + 50)
    np.testing.assert_allclose(sent, state + 5, atol=1e-4)  # what was sent: the clamped target
    wait_until(lambda: np.abs(robot.read_state() - (state + 5)).max() < 0.3)


def test_bad_actions_are_rejected(make):
    robot = make()
    with pytest.raises(RobotError, match="not connected"):
        robot.read_state()
    robot.connect()
    with pytest.raises(ActionRejected, match="non-finite"):
        robot.send_action(np.array([0, 0, np.nan, 0, 0, 0], np.float32))
    with pytest.raises(ActionRejected, match="shape"):
        robot.send_action(np.zeros(5, np.float32))


def test_degrees_is_the_default(emulator, make):
    robot = make()
    assert robot.config.use_degrees and robot.config.id == "arm"
    assert make_robot("so101_follower", {"port": emulator.port}).config.id is None
    robot.connect()
    state = robot.read_state()
    cal = DEFAULT_SO_CALIBRATION["shoulder_pan"]
    raw = emulator.servo(1).get("Present_Position")
    assert state[0] == pytest.approx((raw - (cal.range_min + cal.range_max) / 2) * 360 / 4095)
    assert 0 <= state[5] <= 100  # the gripper stays 0..100


def test_a_calibration_file_that_disagrees_is_written_to_the_motors(emulator, make, tmp_path):
    cal = dict(DEFAULT_SO_CALIBRATION)
    cal["elbow_flex"] = MotorCalibration(3, 0, 1200, 900, 3000)
    save_calibration(tmp_path / "arm.json", cal)
    robot = make()
    robot.connect()
    servo = emulator.servo(3)
    assert (servo.get("Homing_Offset"), servo.get("Min_Position_Limit"),
            servo.get("Max_Position_Limit")) == (1200, 900, 3000)  # fmt: skip
    assert servo.torque_enabled


@pytest.mark.parametrize("folder", ["so_follower", "so100_follower"])
def test_the_default_lerobot_location_is_read(emulator, make, tmp_path, monkeypatch, folder,
                                              caplog):  # fmt: skip
    # so_follower/ is LeRobot 0.4-0.6's folder; so100_follower/ the one LeRobot < 0.4 wrote.
    caplog.set_level(logging.INFO, "asyncinf.robots.so_follower")
    monkeypatch.setenv("HF_LEROBOT_CALIBRATION", str(tmp_path / "cal"))
    path = tmp_path / "cal" / "robots" / folder / "mine.json"
    save_calibration(path, DEFAULT_SO_CALIBRATION)
    robot = make("so100_follower", id="mine", calibration_dir=None)
    assert isinstance(robot, SO100Follower)
    assert robot.calibration_fpath == path and robot.calibration is not None
    assert f"calibration read from {path}" in caplog.text


def test_probe_warns_on_servos_at_factory_limits(tmp_path, caplog):
    with FeetechEmulator([Servo(i) for i in MOTORS.values()]) as emu:
        robot = make_robot("so101_follower", {"port": emu.port, "calibration_dir": str(tmp_path)})
        report = robot.probe(camera_frames=0)
    assert report.ok  # every servo answered; the warning is about their calibration
    assert "factory limits (uncalibrated)" in report.calibration
    assert "'shoulder_pan'" in report.calibration and "wrist_roll" not in report.calibration
    assert "factory limits" in caplog.text


def test_an_uncalibrated_arm_says_how_to_calibrate(tmp_path):
    with FeetechEmulator([Servo(i) for i in MOTORS.values()]) as emu:
        robot = make_robot("so101_follower", {"port": emu.port, "id": "new",
                                              "calibration_dir": str(tmp_path)})  # fmt: skip
        with pytest.raises(RobotError, match=r"not calibrated.*lerobot-calibrate"):
            robot.connect()
        assert not robot.bus.is_open
        assert not any(s.torque_enabled for s in emu.servos.values())


def test_a_malformed_calibration_file_is_a_config_error(emulator, make, tmp_path):
    (tmp_path / "arm.json").write_text(json.dumps({"shoulder_pan": {"id": 1}}))
    with pytest.raises(ConfigError, match=r"arm\.json"):
        make()


def test_missing_servo_names_it_and_leaves_the_port_free(emulator, make):
    emulator.faults.missing_ids = {6}
    robot = make(bus_timeout_ms=20, bus_retries=1)
    with pytest.raises(MotorMissing, match=r"gripper \(id 6\)") as info:
        robot.connect()
    assert info.value.motor == "gripper" and info.value.motor_id == 6
    assert not robot.bus.is_open and not robot.is_connected
    assert not any(s.torque_enabled for s in emulator.servos.values())


def test_a_servo_reporting_a_fault_at_connect_is_named(emulator, make):
    emulator.servo(2).error = ErrorBit.VOLTAGE
    with pytest.raises(MotorFault, match=r"'shoulder_lift' \(id 2\).*voltage.*power supply"):
        make().connect()
    assert not any(s.torque_enabled for s in emulator.servos.values())


def test_no_servo_at_all_suggests_power_or_port(emulator, make):
    emulator.faults.missing_ids = set(MOTORS.values())
    with pytest.raises(MotorMissing, match=r"no motor answered.*powered"):
        make(bus_timeout_ms=10, bus_retries=0).connect()


def test_busy_port(emulator, make):
    make().connect()
    with pytest.raises(SerialPortError, match="busy"):
        make().connect()


def test_config_errors_name_the_flag(tmp_path):
    with pytest.raises(ConfigError, match=r"--robot\.port is required"):
        make_robot("so101_follower", {})
    with pytest.raises(ConfigError, match=r"--robot\.baudrate=9600"):
        make_robot("so101_follower", {"port": "/dev/x", "baudrate": 9600})
    with pytest.raises(ConfigError, match=r"--robot\.id"):
        make_robot("so101_follower", {"port": "/dev/x", "id": "../etc"})
    with pytest.raises(ConfigError, match=r"--robot\.cameras"):
        make_robot("so101_follower", {"port": "/dev/x", "cameras": {"front": 0}})
    with pytest.raises(ConfigError, match=r"--robot\.bus_timeout_ms"):
        make_robot("so101_follower", {"port": "/dev/x", "bus_timeout_ms": 0})


def test_cameras_come_from_the_config(emulator, make, tmp_path):
    import cv2

    path = str(tmp_path / "front.avi")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 100, (32, 24))
    for _ in range(5):
        writer.write(np.full((24, 32, 3), (0, 0, 255), np.uint8))  # BGR red
    writer.release()
    cams = {
        "front": {"type": "opencv", "index_or_path": path, "width": 32, "height": 24, "fps": 100}
    }
    robot = make(cameras=cams)
    assert robot.camera_shapes == {"front": (24, 32, 3)}
    robot.connect()
    image = robot.read_images()["front"]
    assert image.shape == (24, 32, 3) and image[12, 16, 0] > 200  # RGB: red first
    report_cams = {"front": {**cams["front"], "width": 64}}
    bad = make(cameras=report_cams)
    robot.disconnect()
    with pytest.raises(RobotError, match=r"camera 'front'.*asked for 64x24"):
        bad.connect()
    assert not bad.bus.is_open


def test_probe_reports_every_motor_without_enabling_torque(emulator, make):
    emulator.faults.missing_ids = {4}
    robot = make(bus_timeout_ms=20, bus_retries=0)
    report = robot.probe()
    assert not report.ok
    rows = {m.name: m for m in report.motors}
    assert rows["wrist_flex"].error is not None and "id 4" in rows["wrist_flex"].error
    assert rows["gripper"].model == 777 and rows["gripper"].position is not None
    assert rows["gripper"].voltage_v == 12.0 and rows["gripper"].torque is False
    assert not any(s.torque_enabled for s in emulator.servos.values())
    emulator.faults.missing_ids = set()
    report = robot.probe()
    assert report.ok and all(m.value is not None for m in report.motors)


def test_probe_times_each_camera_by_its_frames(emulator, make):
    robot = make(cameras={"front": {"type": "fake", "width": 32, "height": 24}})
    report = robot.probe(camera_frames=5)
    assert report.ok
    (cam,) = report.cameras
    assert cam.name == "front" and cam.shape == (24, 32, 3)
    assert cam.frames == 5 and cam.fps is not None and cam.fps > 0
