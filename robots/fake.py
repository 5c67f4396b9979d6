"""A robot and a camera with no hardware and no physics, for tests of loops and adapters.

The robot's joints are wherever they were last commanded; every command is recorded, and
commands after `disconnect()` are refused and counted, so tests can assert the robot was
never moved after a stop. With `command_log`, the same record goes to a JSON-lines file,
which tests of real processes read (`--robot.type=fake --robot.command_log=PATH`).
The camera (camera `type: fake`) gives black frames of its size, captured when read.
"""

from __future__ import annotations

import collections
import json
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from asyncinf.robots.camera import Camera
from asyncinf.robots.robot import Robot, RobotConfig
from asyncinf.runtime.errors import ConfigError, RobotError


class FakeCamera(Camera):
    """Black frames of `width`x`height`, each captured at the moment it is read."""

    def connect(self) -> None:
        """Nothing to open."""

    def read(self) -> tuple[np.ndarray, int]:
        return np.zeros(self.shape, np.uint8), time.monotonic_ns()

    def wait_for_frame(self, after_ns: int, timeout_s: float) -> tuple[np.ndarray, int]:
        """Every read is a new capture: nothing to wait for."""
        return self.read()

    def disconnect(self) -> None:
        """Nothing to close."""


@dataclass
class FakeRobotConfig(RobotConfig):
    num_joints: int = 6
    image_shape: tuple[int, int, int] | None = None  # one fake camera "front" when set
    command_log: str | None = None  # append {"t_ns", "event", "target"} lines here

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.image_shape is not None and (
            len(self.image_shape) != 3 or self.image_shape[2] != 3
        ):
            raise ConfigError(
                f"--robot.image_shape={self.image_shape!r}: expected [height, width, 3]"
            )


class FakeRobot(Robot):
    config_class = FakeRobotConfig
    default_camera_type = "fake"

    def __init__(self, config: FakeRobotConfig | None = None) -> None:
        super().__init__(config or FakeRobotConfig())
        n = self.config.num_joints
        self._state = np.zeros(n, np.float32)
        self._connected = False
        # The latest commands, for tests to look at; bounded, so a day-long run stays flat.
        self.commands: collections.deque[np.ndarray] = collections.deque(maxlen=10_000)
        self.commands_after_disconnect = 0
        self._log = None

    @property
    def joint_names(self) -> list[str]:
        return [f"joint_{i}.pos" for i in range(self.config.num_joints)]

    def camera_options(self) -> dict[str, dict[str, Any]]:
        """`image_shape` is a shorthand for one camera "front" of that size."""
        shape = self.config.image_shape
        if shape is None:
            return self.config.cameras
        return {"front": {"height": shape[0], "width": shape[1]}}

    @property
    def is_connected(self) -> bool:
        return self._connected

    def connect(self) -> None:
        if self.config.command_log:
            self._log = open(self.config.command_log, "a", buffering=1)  # noqa: PTH123, SIM115
        self._connected = True
        self._record("connect")

    def _record(self, event: str, target: np.ndarray | None = None) -> None:
        if self._log is not None:
            rec = {"t_ns": time.monotonic_ns(), "event": event}
            if target is not None:
                rec["target"] = target.tolist()
            self._log.write(json.dumps(rec) + "\n")

    def read_state(self) -> np.ndarray:
        return self._state.copy()

    def send_action(self, target: np.ndarray) -> np.ndarray:
        if not self._connected:
            self.commands_after_disconnect += 1
            self._record("command_after_disconnect", target)
            raise RobotError("fake robot: command after disconnect")
        self.commands.append(np.array(target, np.float32))
        self._record("command", self.commands[-1])
        self._state = self.commands[-1].copy()
        return self.commands[-1].copy()

    def disconnect(self) -> None:
        if self._connected:
            self._record("disconnect")
        self._connected = False
        if self._log is not None:
            self._log.close()
            self._log = None
