"""The `Robot` interface: what the control loop needs from an arm and its cameras.

Shaped like LeRobot's `Robot` (connect/disconnect, `is_connected`, a config dataclass
registered under a type string, joint features named `"<motor>.pos"`), with one change for
speed: state and actions travel as float32 vectors ordered by `joint_names`; use
`state_dict()` for LeRobot's flat-dict view.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from asyncinf.runtime.errors import ConfigError
from asyncinf.runtime.registry import Registry


@dataclass
class RobotConfig:
    """Options every robot has. Subclasses add their own fields beside their class."""

    id: str = "default"
    # Largest change of a joint's target per tick relative to its present position
    # (joint units); None disables the clamp.
    max_relative_target: float | None = None
    # On exit: False holds position under torque, True releases the arm (it may fall).
    disable_torque_on_exit: bool = False
    # camera name -> {"type": "sim"|"opencv", ...camera options}
    cameras: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.max_relative_target is not None and self.max_relative_target <= 0:
            raise ConfigError(
                f"--robot.max_relative_target={self.max_relative_target}: must be > 0 "
                "(or omitted to disable the clamp)"
            )


class Robot(abc.ABC):
    """An arm the control loop drives at a fixed rate."""

    config_class: ClassVar[type[RobotConfig]] = RobotConfig

    def __init__(self, config: RobotConfig) -> None:
        self.config = config

    @property
    @abc.abstractmethod
    def joint_names(self) -> list[str]:
        """Names of state and action entries, e.g. `["shoulder_pan.pos", ...]`."""

    @property
    @abc.abstractmethod
    def camera_shapes(self) -> dict[str, tuple[int, int, int]]:
        """Camera name -> (H, W, 3) of the frames `read_images` returns."""

    @property
    @abc.abstractmethod
    def is_connected(self) -> bool: ...

    @abc.abstractmethod
    def connect(self) -> None:
        """Open the hardware and enable torque. Raises RobotError with the reason."""

    @abc.abstractmethod
    def read_state(self) -> np.ndarray:
        """Present joint positions, float32 [A]: one bus read."""

    @abc.abstractmethod
    def read_images(self) -> dict[str, np.ndarray]:
        """The newest frame of every camera, HxWx3 uint8 RGB."""

    @abc.abstractmethod
    def send_action(self, target: np.ndarray) -> None:
        """Command joint targets, float32 [A]: one bus write. Already clamped by the caller."""

    @abc.abstractmethod
    def disconnect(self) -> None:
        """Apply `config.disable_torque_on_exit`, then close. Safe to call twice."""

    def state_dict(self, state: np.ndarray) -> dict[str, float]:
        """LeRobot's flat view: `{"shoulder_pan.pos": 12.3, ...}`."""
        return dict(zip(self.joint_names, state.tolist(), strict=True))


ROBOTS: Registry[Robot] = Registry(
    "robot",
    {
        "sim": "asyncinf.robots.sim:SimRobot",
        "fake": "asyncinf.robots.fake:FakeRobot",
        "so100_follower": "asyncinf.robots.so_follower:SO100Follower",
        "so101_follower": "asyncinf.robots.so_follower:SO101Follower",
    },
)


def make_robot(robot_type: str, options: dict[str, Any]) -> Robot:
    """Build (not connect) the robot registered as `robot_type` from flag/file options."""
    from asyncinf.runtime.config import build  # noqa: PLC0415

    cls = ROBOTS.load(robot_type)
    return cls(build(cls.config_class, options, prefix="robot."))
