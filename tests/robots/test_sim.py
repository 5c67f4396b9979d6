"""The simulated arm: dynamics on a manual clock, limits, cameras, disconnect semantics."""

import subprocess
import sys

import numpy as np
import pytest

from asyncinf.robots.camera import make_camera
from asyncinf.robots.robot import make_robot
from asyncinf.robots.sim.arm import SO101_JOINTS, track
from asyncinf.robots.sim.camera import SimCamera
from asyncinf.robots.sim.robot import SimRobot, SimRobotConfig
from asyncinf.runtime.errors import ActionRejected, ConfigError, RobotError
from asyncinf.runtime.testing import ManualClock


def sim(clock, **options) -> SimRobot:
    options.setdefault("cameras", None)  # dynamics tests need no OpenCV
    robot = SimRobot(SimRobotConfig(**options), clock_ns=clock)
    robot.connect()
    return robot


@pytest.fixture
def clock():
    return ManualClock()


def test_joint_names():
    assert SimRobot(SimRobotConfig(cameras=None)).joint_names == list(SO101_JOINTS)
    names = SimRobot(SimRobotConfig(num_joints=3, cameras=None)).joint_names
    assert names == ["joint_0.pos", "joint_1.pos", "joint_2.pos"]


def test_converges_to_the_target(clock):
    robot = sim(clock, tau_s=0.1, max_velocity=180.0)
    goal = np.array([30, -45, 60, 10, -90, 80], np.float32)
    robot.send_action(goal)
    clock.advance(0.05)
    assert not np.allclose(robot.read_state(), goal, atol=1.0)
    clock.advance(3.0)
    np.testing.assert_allclose(robot.read_state(), goal, atol=1e-3)
    assert robot.read_state().dtype == np.float32


def test_velocity_limit(clock):
    robot = sim(clock, tau_s=0.05, max_velocity=100.0, num_joints=2)
    robot.send_action(np.array([90.0, -90.0], np.float32))
    prev = robot.read_state().astype(np.float64)
    for _ in range(100):
        clock.advance(0.01)
        now = robot.read_state().astype(np.float64)
        assert np.all(np.abs(now - prev) <= 100.0 * 0.01 + 1e-4)
        prev = now
    # Far from the goal the joints move at the limit exactly.
    robot.send_action(np.array([-90.0, 90.0], np.float32))
    start = robot.read_state().astype(np.float64)
    clock.advance(0.2)
    np.testing.assert_allclose(np.abs(robot.read_state() - start), 20.0, atol=1e-3)


def test_integration_does_not_depend_on_the_call_rate():
    x, goal = np.array([0.0, 50.0, -20.0]), np.array([100.0, 45.0, 80.0])
    one_step = track(x, goal, 0.5, 0.1, 180.0)
    many = x
    for _ in range(500):
        many = track(many, goal, 0.001, 0.1, 180.0)
    np.testing.assert_allclose(many, one_step, atol=1e-9)


def test_joint_limits(clock):
    robot = sim(clock, joint_limits={"elbow_flex.pos": [-20, 20]})
    sent = robot.send_action(np.array([500, -500, 500, 0, 0, 150], np.float32))
    np.testing.assert_array_equal(sent, [500, -500, 500, 0, 0, 150])  # as sent: limits clip later
    np.testing.assert_array_equal(robot.target, [110, -100, 20, 0, 0, 100])
    np.testing.assert_array_equal(robot.last_command, [500, -500, 500, 0, 0, 150])
    for _ in range(50):
        clock.advance(0.1)
        state = robot.read_state()
        assert state[2] <= 20.0 + 1e-6 and 0.0 <= state[5] <= 100.0
    np.testing.assert_allclose(state, [110, -100, 20, 0, 0, 100], atol=1e-3)


def test_initial_state(clock):
    robot = sim(clock, num_joints=2, initial_state=[10.0, -5.0])
    np.testing.assert_array_equal(robot.read_state(), [10.0, -5.0])
    clock.advance(1.0)  # connected with no command: holds where it is
    np.testing.assert_array_equal(robot.read_state(), [10.0, -5.0])


def test_send_action_validation(clock):
    robot = sim(clock)
    with pytest.raises(ActionRejected, match=r"shape \(5,\)"):
        robot.send_action(np.zeros(5, np.float32))
    bad = np.zeros(6, np.float32)
    bad[2] = np.nan
    with pytest.raises(ValueError, match=r"elbow_flex\.pos"):
        robot.send_action(bad)
    bad[2], bad[4] = 0.0, np.inf
    with pytest.raises(ValueError, match=r"wrist_roll\.pos"):
        robot.send_action(bad)
    assert robot.commands_received == 0 and robot.last_command is None


def test_hold_on_disconnect_keeps_tracking_the_last_target(clock):
    robot = sim(clock)
    goal = np.array([20, 30, -30, 10, 0, 50], np.float32)
    robot.send_action(goal)
    clock.advance(0.02)
    robot.disconnect()
    assert not robot.released
    clock.advance(5.0)
    np.testing.assert_allclose(robot.positions, goal, atol=1e-3)


def test_release_on_disconnect_sags_and_stops_tracking(clock):
    robot = sim(clock, disable_torque_on_exit=True, fall_velocity=45.0)
    robot.send_action(np.array([20, 30, -30, 10, 0, 50], np.float32))
    clock.advance(2.0)
    at_release = robot.positions
    robot.disconnect()
    assert robot.released
    clock.advance(0.1)
    moved = robot.positions - at_release
    assert np.abs(moved).max() == pytest.approx(4.5, abs=1e-6)  # fall_velocity · 0.1 s
    assert moved[1] > 0  # the upper arm, leaning forward, falls forward
    np.testing.assert_array_equal(moved[[0, 4, 5]], 0.0)  # pan, roll, gripper: no gravity
    clock.advance(30.0)
    final = robot.positions
    lo, hi = SimRobotConfig().limits()
    assert np.all(final >= lo) and np.all(final <= hi)
    assert final[1] == pytest.approx(100.0)  # down against its limit


@pytest.mark.parametrize("initial", [[30, 40, -50], [-30, 0, 0], [0, 0, 0]])
def test_a_released_generic_arm_hangs_straight_down(clock, initial):
    robot = sim(clock, num_joints=3, initial_state=initial, disable_torque_on_exit=True)
    robot.disconnect()
    clock.advance(60.0)
    # Offsets of the generic chain: 0, 20, 20 degrees; every link ends at ±180 (down).
    absolute = np.cumsum(robot.positions + np.array([0.0, 20.0, 20.0]))
    np.testing.assert_allclose(np.abs(absolute), 180.0, atol=1e-9)


def test_commands_when_not_connected_raise_and_are_counted(clock):
    robot = SimRobot(SimRobotConfig(cameras=None), clock_ns=clock)
    with pytest.raises(RobotError):
        robot.read_state()
    with pytest.raises(RobotError, match="not connected"):
        robot.send_action(np.zeros(6, np.float32))
    robot.connect()
    robot.send_action(np.zeros(6, np.float32))
    assert robot.commands_received == 1
    robot.disconnect()
    robot.disconnect()  # twice is fine
    for _ in range(2):
        with pytest.raises(RobotError):
            robot.send_action(np.ones(6, np.float32))
    assert robot.commands_after_disconnect == 3
    assert robot.commands_received == 1
    np.testing.assert_array_equal(robot.last_command, np.zeros(6))
    with pytest.raises(RobotError):
        robot.read_images()


def test_connect_twice_is_an_error(clock):
    robot = sim(clock)
    with pytest.raises(RobotError, match="already connected"):
        robot.connect()


@pytest.mark.parametrize(
    ("options", "flag"),
    [
        ({"num_joints": 0}, "--robot.num_joints=0"),
        ({"num_joints": "six"}, "--robot.num_joints='six'"),
        ({"tau_s": 0}, "--robot.tau_s=0"),
        ({"max_velocity": -1}, "--robot.max_velocity=-1"),
        ({"fall_velocity": 0}, "--robot.fall_velocity"),
        ({"seed": -1}, "--robot.seed=-1"),
        ({"joint_limits": {"elbow.pos": [0, 1]}}, "--robot.joint_limits: 'elbow.pos'"),
        ({"joint_limits": {"elbow_flex.pos": [5, 1]}}, "--robot.joint_limits: elbow_flex.pos"),
        ({"initial_state": [0, 0]}, "--robot.initial_state has 2 values"),
        ({"initial_state": [0, 0, 0, 0, 0, 101]}, "--robot.initial_state: gripper.pos=101"),
        ({"cameras": {"front": 3}}, "--robot.cameras: camera 'front'"),
        ({"cameras": {"front": {"width": 0}}}, "--robot.cameras.front"),
        ({"cameras": {"front": {"type": "nope"}}}, "--robot.cameras.front"),
        ({"bogus": 1}, "--robot.bogus"),
        ({"max_relative_target": -1}, "--robot.max_relative_target"),
    ],
)
def test_config_errors_name_the_flag(options, flag):
    with pytest.raises(ConfigError) as err:
        make_robot("sim", options)
    assert flag in str(err.value)


def test_flags_as_text_are_parsed():
    robot = make_robot("sim", {"num_joints": "4", "tau_s": "0.2", "cameras": None})
    assert robot.config.num_joints == 4 and robot.config.tau_s == 0.2
    assert robot.camera_shapes == {}


# --- cameras -----------------------------------------------------------------------------------


def test_camera_shapes_from_config(clock):
    assert SimRobot(SimRobotConfig()).camera_shapes == {"front": (480, 640, 3)}
    robot = sim(
        clock,
        cameras={
            "front": {"width": 320, "height": 240},
            "wrist": {"type": "sim", "width": 160, "height": 120, "seed": 7},
        },
    )
    shapes = {"front": (240, 320, 3), "wrist": (120, 160, 3)}
    assert robot.camera_shapes == shapes
    images = robot.read_images()
    assert {k: v.shape for k, v in images.items()} == shapes
    assert all(v.dtype == np.uint8 for v in images.values())


def test_frames_are_deterministic_for_a_seed_and_follow_the_state():
    cams = {"front": {"width": 160, "height": 120}}
    frames = []
    for seed in (3, 3, 4):
        clock = ManualClock()
        robot = sim(clock, seed=seed, cameras=cams)
        robot.send_action(np.array([10, 20, 30, -10, 45, 60], np.float32))
        clock.advance(0.3)
        frames.append(robot.read_images()["front"])
    assert frames[0].tobytes() == frames[1].tobytes()
    assert frames[0].tobytes() != frames[2].tobytes()
    # Every joint shows, even a small move.
    clock = ManualClock()
    robot = sim(clock, cameras=cams)
    base = robot.read_images()["front"]
    for j in range(6):
        goal = np.zeros(6, np.float32)
        goal[j] = 2.0
        robot.send_action(goal)
        clock.advance(2.0)
        assert robot.read_images()["front"].tobytes() != base.tobytes(), SO101_JOINTS[j]
        robot.send_action(np.zeros(6, np.float32))
        clock.advance(2.0)
        assert robot.read_images()["front"].tobytes() == base.tobytes()


def test_generic_arm_renders(clock):
    robot = sim(clock, num_joints=3, cameras={"side": {"width": 64, "height": 48}})
    before = robot.read_images()["side"]
    robot.send_action(np.array([30, -30, 30], np.float32))
    clock.advance(1.0)
    assert robot.read_images()["side"].tobytes() != before.tobytes()


def test_standalone_camera_moves_with_the_frame_count():
    clock = ManualClock()
    cam = SimCamera(make_camera({"type": "sim", "width": 96, "height": 72}).config, clock_ns=clock)
    with pytest.raises(RobotError):
        cam.read()
    cam.connect()
    first, t_ns = cam.read()
    assert first.shape == (72, 96, 3) and first.dtype == np.uint8 and t_ns == clock.now_ns
    clock.advance(0.5 / cam.config.fps)  # same frame period: the same frame
    assert cam.read()[0].tobytes() == first.tobytes()
    clock.advance(1 / cam.config.fps)
    assert cam.frame_index == 1
    assert cam.read()[0].tobytes() != first.tobytes()
    other = SimCamera(cam.config, clock_ns=ManualClock())
    other.connect()
    assert other.read()[0].tobytes() == first.tobytes()
    cam.disconnect()
    cam.disconnect()


def test_a_sim_camera_frame_is_captured_when_read(clock):
    cam = SimCamera(make_camera({"type": "sim", "width": 32, "height": 24}).config, clock_ns=clock)
    cam.connect()
    _, t_ns = cam.read()
    with pytest.raises(RobotError, match="clock stands"):
        cam.wait_for_frame(t_ns, timeout_s=1)  # a manual clock that has not moved
    clock.advance(0.001)
    assert cam.wait_for_frame(t_ns, timeout_s=1)[1] == t_ns + 1_000_000


def test_missing_opencv_is_explained(monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 now raises ImportError
    robot = SimRobot(SimRobotConfig())
    with pytest.raises(RobotError, match=r"pip install 'asyncinf\[opencv\]'"):
        robot.connect()
    assert not robot.is_connected


def test_import_and_build_do_not_import_opencv():
    code = (
        "import sys; from asyncinf.robots.robot import make_robot; r = make_robot('sim', {}); "
        "assert r.camera_shapes; assert 'cv2' not in sys.modules and 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
