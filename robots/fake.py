"""A robot with no hardware and no physics, for tests of loops and adapters.

Its joints are wherever they were last commanded; every command is recorded, and commands
after `disconnect()` are refused and counted, so tests can assert the robot was never moved
after a stop. With `command_log`, the same record goes to a JSON-lines file, which tests of
real processes read (`--robot.type=fake --robot.command_log=PATH`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import numpy as np

from asyncinf.robots.robot import Robot, RobotConfig
from asyncinf.runtime.errors import RobotError


@dataclass
class FakeRobotConfig(RobotConfig):
    num_joints: int = 6
    image_shape: tuple[int, int, int] | None = None  # one camera "front" when set
    command_log: str | None = None  # append {"t_ns", "event", "target"} lines here


class FakeRobot(Robot):
    config_class = FakeRobotConfig

    def __init__(self, config: FakeRobotConfig | None = None) -> None:
        super().__init__(config or FakeRobotConfig())
        n = self.config.num_joints
        self._state = np.zeros(n, np.float32)
        self._connected = False
        self.commands: list[np.ndarray] = []
        self.commands_after_disconnect = 0
        self._log = None

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

    def read_images(self) -> dict[str, np.ndarray]:
        return {k: np.zeros(s, np.uint8) for k, s in self.camera_shapes.items()}

    def send_action(self, target: np.ndarray) -> None:
        if not self._connected:
            self.commands_after_disconnect += 1
            self._record("command_after_disconnect", target)
            raise RobotError("fake robot: command after disconnect")
        self.commands.append(np.array(target, np.float32))
        self._record("command", self.commands[-1])
        self._state = self.commands[-1].copy()

    def disconnect(self) -> None:
        if self._connected:
            self._record("disconnect")
        self._connected = False
        if self._log is not None:
            self._log.close()
            self._log = None
