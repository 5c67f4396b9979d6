"""A robot's joint names and camera shapes, read without keeping its driver in the supervisor.

The supervisor needs them before any process starts (to check the options, size the shared
memory, preload the policy). A built-in robot is built here. A LeRobot robot is built in a
short-lived child instead: importing LeRobot's robots pulls in torch and its processors,
10–14 s and ~800 MB that the supervisor would otherwise hold for the whole run. The child
prints one JSON line, a `RobotShape`; a bad option is its one-line error and exit code
CONFIG_ERROR.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from dataclasses import dataclass

from asyncinf.robots.robot import ROBOTS, make_robot
from asyncinf.runtime import lerobot, records
from asyncinf.runtime.errors import ConfigError, RobotError
from asyncinf.runtime.supervise.exitcodes import ExitCode
from asyncinf.runtime.supervise.specs import RobotSpec

log = logging.getLogger(__name__)

CHILD_TIMEOUT_S = 300.0  # LeRobot's imports on a slow robot computer, with room to spare


@dataclass(frozen=True)
class RobotShape:
    joints: list[str]  # state and action entries, in order
    cameras: dict[str, tuple[int, int, int]]  # camera -> (H, W, 3) of its frames


def robot_shape(robot: RobotSpec) -> tuple[list[str], dict[str, tuple[int, int, int]]]:
    """(joint names, camera shapes) of the robot as `--robot.*` builds it (not connected)."""
    if robot.type in ROBOTS.names() or not lerobot.installed():  # the latter: its clear error
        built = make_robot(robot.type, robot.options)
        return list(built.joint_names), dict(built.camera_shapes)
    log.info("reading %s's joints and cameras in a child process (LeRobot's imports)", robot.type)
    argv = [sys.executable, "-m", __name__, robot.type, json.dumps(robot.options, default=str)]
    try:
        done = subprocess.run(
            argv, check=False, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        raise ConfigError(
            f"--robot.type={robot.type}: building the robot took over {CHILD_TIMEOUT_S:g} s"
        ) from None
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or [f"exit code {done.returncode}"]
        if done.returncode != ExitCode.CONFIG_ERROR:
            log.debug("robot description child:\n%s", done.stderr)
        raise ConfigError(lines[-1].removeprefix("error: "))
    try:
        shape = records.from_json(RobotShape, json.loads(done.stdout))
    except ValueError as exc:  # json.JSONDecodeError is one
        raise ConfigError(
            f"--robot.type={robot.type}: its description came back malformed ({exc})"
        ) from None
    return shape.joints, shape.cameras


def _main(robot_type: str, options_json: str) -> int:
    try:
        built = make_robot(robot_type, json.loads(options_json))
    except (ConfigError, RobotError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return int(ExitCode.CONFIG_ERROR)
    shape = RobotShape(list(built.joint_names), dict(built.camera_shapes))
    print(json.dumps(records.to_json(shape)))
    return 0


if __name__ == "__main__":
    sys.exit(_main(*sys.argv[1:]))
