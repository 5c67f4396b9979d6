"""LeRobot robots and cameras behind our `Robot` and `Camera` interfaces.

`--robot.type=T` for any type LeRobot's robot registry knows (its built-in robots and every
installed `lerobot_robot_*` plugin) is driven by one adapter, `LeRobotRobot`; a camera type we
do not build (intelrealsense, zmq, plugins) by `LeRobotCamera`, on any of our robots. Our own
types win: `--robot.type=so101_follower` is asyncinf's driver, and `lerobot:so101_follower`
(the `lerobot:` prefix works for every LeRobot type) is LeRobot's. Nothing here imports
LeRobot until such a type is asked for, so the client runs without it for the built-ins.

- `compat.py`: the one place that imports LeRobot's device stack and registers its plugins;
- `options.py`: from `--robot.*` options to a LeRobot config (draccus, LeRobot's own parser);
- `robot.py`: the robot adapter (flat observation dicts <-> our ordered vectors, by name);
- `camera.py`: the camera adapter.
"""

from __future__ import annotations

from typing import Any

PREFIX = "lerobot:"  # names LeRobot's driver of a type we also build


def robot_class(name: str) -> Any:
    """The robot registry's fallback: LeRobotRobot when LeRobot knows `name`."""
    from asyncinf.robots.lerobot import compat  # noqa: PLC0415

    compat.check_robot_type(name.removeprefix(PREFIX))
    from asyncinf.robots.lerobot.robot import LeRobotRobot  # noqa: PLC0415

    return LeRobotRobot


def camera_class(name: str) -> Any:
    """The camera registry's fallback: LeRobotCamera when LeRobot knows `name`."""
    from asyncinf.robots.lerobot import compat  # noqa: PLC0415

    compat.check_camera_type(name.removeprefix(PREFIX))
    from asyncinf.robots.lerobot.camera import LeRobotCamera  # noqa: PLC0415

    return LeRobotCamera
