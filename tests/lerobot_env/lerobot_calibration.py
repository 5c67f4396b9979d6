"""Calibration files written by LeRobot itself, for the tests that read them."""

from __future__ import annotations

import os
from pathlib import Path

from lerobot.motors import MotorCalibration as LeRobotCalibration
from lerobot.robots.so_follower import SO101Follower, SOFollowerRobotConfig


def lerobot_writes_calibration(robot_id: str, calibration: dict) -> Path:
    """The file as LeRobot 0.4 writes it: its own SO follower's `_save_calibration`."""
    robot = SO101Follower(SOFollowerRobotConfig(port="/dev/null", id=robot_id))
    robot.calibration = {m: LeRobotCalibration(**vars(c)) for m, c in calibration.items()}
    robot._save_calibration()
    root = os.environ["HF_LEROBOT_CALIBRATION"]
    assert str(robot.calibration_fpath) == f"{root}/robots/so_follower/{robot_id}.json"
    return robot.calibration_fpath
