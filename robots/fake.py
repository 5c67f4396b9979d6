"""A robot with no hardware and no physics, for tests of loops and adapters.

Its joints are wherever they were last commanded; every command is recorded, and commands
after `disconnect()` are refused and counted, so tests can assert the robot was never moved
after a stop.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from asyncinf.robots.robot import Robot, RobotConfig
from asyncinf.runtime.errors import RobotError


@dataclass
class FakeRobotConfig(RobotConfig):
    num_joints: int = 6
    image_shape: tuple[int, int, int] | None = None  # one camera "front" when set


class FakeRobot(Robot):
    config_class = FakeRobotConfig

    def __init__(self, config: FakeRobotConfig | None = None) -> None:
        super().__init__(config or FakeRobotConfig())
        n = self.config.num_joints
        self._state = np.zeros(n, np.float32)
        self._connected = False
        self.commands: list[np.ndarray] = []
        self.commands_after_disconnect = 0

    @property
    def joint_names(self) -> list[str]:
        return [f"joint_{i}.pos" for i in range(self.config.num_joints)]

    @property
    def camera_shapes(self) -> dict[str, tuple[int, int, int]]:
        shape = self.config.image_shape
        return {} if shape is None else {"front": tuple(shape)}

    @property
    def is_connected(self) -> bool:
        return self._connected

    def connect(self) -> None:
        self._connected = True

    def read_state(self) -> np.ndarray:
        return self._state.copy()

    def read_images(self) -> dict[str, np.ndarray]:
        return {k: np.zeros(s, np.uint8) for k, s in self.camera_shapes.items()}

    def send_action(self, target: np.ndarray) -> None:
        if not self._connected:
            self.commands_after_disconnect += 1
            raise RobotError("fake robot: command after disconnect")
        self.commands.append(np.array(target, np.float32))
        self._state = self.commands[-1].copy()

    def disconnect(self) -> None:
        self._connected = False
