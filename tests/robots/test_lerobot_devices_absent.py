"""Where LeRobot is not installed (the base install, this suite's venv), a LeRobot robot or
camera type is a one-line config error naming our built-ins and how to install LeRobot, and
the built-in robots never import it."""

import importlib.util
import subprocess
import sys

import pytest

from asyncinf.robots.camera import make_camera
from asyncinf.robots.robot import ROBOTS, make_robot
from asyncinf.runtime.errors import ConfigError


def test_this_environment_has_no_lerobot():
    assert importlib.util.find_spec("lerobot") is None  # tests/lerobot_env cover the other case


@pytest.mark.parametrize("robot_type", ["koch_follower", "lerobot:so101_follower"])
def test_a_lerobot_robot_type_names_the_builtins_and_how_to_install_lerobot(robot_type):
    with pytest.raises(ConfigError, match=r"is not a built-in robot .*so101_follower") as info:
        make_robot(robot_type, {})
    assert "need LeRobot installed" in str(info.value)
    assert "A LeRobot robot or camera" in str(info.value)
    assert ROBOTS.names() == ["fake", "sim", "so100_follower", "so101_follower"]


def test_a_lerobot_camera_type_on_our_robot_names_the_camera():
    with pytest.raises(ConfigError, match=r"'zmq' is not a built-in camera .*opencv"):
        make_camera({"type": "zmq", "width": 64, "height": 48, "fps": 30})
    with pytest.raises(ConfigError, match=r"--robot\.cameras\.wrist: .*need LeRobot installed"):
        make_robot("sim", {"cameras": {"wrist": {"type": "intelrealsense"}}})


def test_up_with_a_lerobot_robot_type_exits_78_in_one_line():
    r = subprocess.run(
        [sys.executable, "-m", "asyncinf.runtime.cli", "up", "--local",
         "--robot.type=bi_so_follower", "--duration=3"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 78, r.stderr
    assert "need LeRobot installed" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
