"""What every robot gets from the `Robot` base class: its cameras, built, read and closed."""

import numpy as np
import pytest

from asyncinf.robots.fake import FakeRobot, FakeRobotConfig
from asyncinf.robots.robot import make_robot
from asyncinf.runtime.errors import ConfigError, RobotError


def test_cameras_are_built_from_the_config_and_read_once_connected():
    robot = make_robot("fake", {"cameras": {"front": {"width": 32, "height": 24}}})
    assert robot.camera_shapes == {"front": (24, 32, 3)}
    with pytest.raises(RobotError, match="not connected"):
        robot.read_images()
    robot.connect()
    (name, image), *_ = robot.read_images().items()
    assert name == "front" and image.shape == (24, 32, 3) and image.dtype == np.uint8
    robot.disconnect()


def test_a_bad_camera_is_a_config_error_naming_it():
    with pytest.raises(ConfigError, match=r"--robot.cameras.front: .*width"):
        make_robot("fake", {"cameras": {"front": {"width": 0}}})
    with pytest.raises(ConfigError, match="expected a map"):
        make_robot("fake", {"cameras": {"front": 3}})


def test_image_shape_is_one_camera_front():
    robot = FakeRobot(FakeRobotConfig(image_shape=(24, 32, 3)))
    assert robot.camera_shapes == {"front": (24, 32, 3)}
    with pytest.raises(ConfigError, match="image_shape"):
        FakeRobotConfig(image_shape=(24, 32, 1))


def test_send_action_returns_what_was_sent():
    robot = FakeRobot()
    robot.connect()
    target = np.arange(6, dtype=np.float32)
    np.testing.assert_array_equal(robot.send_action(target), target)
