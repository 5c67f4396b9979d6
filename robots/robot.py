"""The `Robot` interface: what the control loop needs from an arm and its cameras.

Shaped like LeRobot's `Robot` (connect/disconnect, `is_connected`, a config dataclass
registered under a type string, joint features named `"<motor>.pos"`), with one change for
speed: state and actions travel as float32 vectors ordered by `joint_names`; use
`state_dict()` for LeRobot's flat-dict view.

Cameras are the base class's business: it builds them from `config.cameras`, reads them
and reports their shapes; a robot only says when, in its own `connect()`/`disconnect()`,
they open and close (`connect_cameras()` / `disconnect_cameras()`), because hardware order
matters (the SO follower opens them after its bus checks and before enabling torque).
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from asyncinf.robots.camera import Camera, make_camera
from asyncinf.runtime.errors import ConfigError, RobotError
from asyncinf.runtime.messages import Options
from asyncinf.runtime.registry import Registry

log = logging.getLogger(__name__)


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
        for name, options in (self.cameras or {}).items():
            if not isinstance(options, dict):
                raise ConfigError(
                    f"--robot.cameras: camera {name!r} is {options!r}; expected a map such as "
                    "{type: opencv, index_or_path: 0, width: 640, height: 480, fps: 30}"
                )


class Robot(abc.ABC):
    """An arm the control loop drives at a fixed rate, and its cameras."""

    config_class: ClassVar[type[RobotConfig]] = RobotConfig
    # A camera's type when its options name none.
    default_camera_type: ClassVar[str] = "opencv"

    def __init__(self, config: RobotConfig) -> None:
        """Builds the cameras (never opens them). Raises ConfigError naming the camera."""
        self.config = config
        self.cameras: dict[str, Camera] = {}
        for name, options in self.camera_options().items():
            try:
                self.cameras[name] = make_camera({"type": self.default_camera_type, **options})
            except ConfigError as exc:
                raise ConfigError(f"--robot.cameras.{name}: {exc}") from None

    @classmethod
    def from_options(cls, robot_type: str, options: Options) -> Robot:
        """Build (not connect) from `--robot.*` flag/file options, asked for as `robot_type`.
        Our robots validate the options against `config_class`; an adapter of a foreign
        registry (LeRobot's) needs the type to know which foreign robot to build."""
        from asyncinf.runtime.config import build  # noqa: PLC0415

        return cls(build(cls.config_class, options, prefix="robot."))

    def camera_options(self) -> dict[str, dict[str, Any]]:
        """Camera name -> options of the cameras to build: `config.cameras` by default."""
        return self.config.cameras

    @property
    @abc.abstractmethod
    def joint_names(self) -> list[str]:
        """Names of state and action entries, e.g. `["shoulder_pan.pos", ...]`."""

    @property
    def camera_shapes(self) -> dict[str, tuple[int, int, int]]:
        """Camera name -> (H, W, 3) of the frames `read_images` returns."""
        return {name: cam.shape for name, cam in self.cameras.items()}

    @property
    @abc.abstractmethod
    def is_connected(self) -> bool: ...

    @abc.abstractmethod
    def connect(self) -> None:
        """Open the hardware and enable torque. Raises RobotError with the reason."""

    @abc.abstractmethod
    def read_state(self) -> np.ndarray:
        """Present joint positions, float32 [A]: one bus read."""

    def read_images(self) -> dict[str, np.ndarray]:
        """The newest frame of every camera, HxWx3 uint8 RGB. Never waits for a device."""
        if not self.is_connected:
            raise RobotError(f"{self} is not connected; call connect() first")
        return {name: cam.read()[0] for name, cam in self.cameras.items()}

    @abc.abstractmethod
    def send_action(self, target: np.ndarray) -> np.ndarray:
        """Command joint targets, float32 [A]: one bus write. Returns what was sent.

        The control loop (`RobotClient.tick`) has applied `max_relative_target` against the
        state it read this tick before calling; a driver may clamp again against its own
        reading (the SO follower does, for callers other than the loop). What is returned is
        the target after the driver's own clamp, as LeRobot's `send_action` returns it; the
        servos' clipping to their position limits happens after, and is not in it.
        """

    @abc.abstractmethod
    def disconnect(self) -> None:
        """Apply `config.disable_torque_on_exit`, then close. Safe to call twice."""

    def probe(self, camera_frames: int = 30) -> Any | None:
        """Check the hardware without enabling torque, for `asyncinf robot check`: a report
        with `ok`, or None where the robot has no such check (the command then connects,
        reads once and disconnects). Needs the robot disconnected."""
        return None

    def connect_cameras(self) -> None:
        """Connect every camera, or none: a failure disconnects those already connected and
        raises RobotError naming the camera. For `connect()`, at the point its hardware
        order wants them."""
        connected: list[Camera] = []
        try:
            for name, cam in self.cameras.items():
                try:
                    cam.connect()
                except RobotError as exc:
                    raise RobotError(f"camera {name!r}: {exc}") from exc
                connected.append(cam)
        except BaseException:
            _disconnect(connected)
            raise

    def disconnect_cameras(self) -> None:
        """Disconnect each camera (safe on ones never connected); one that fails is logged
        and the others are still disconnected."""
        _disconnect(self.cameras.values())

    def state_dict(self, state: np.ndarray) -> dict[str, float]:
        """LeRobot's flat view: `{"shoulder_pan.pos": 12.3, ...}`."""
        return dict(zip(self.joint_names, state.tolist(), strict=True))


def _disconnect(cameras: Iterable[Camera]) -> None:
    for cam in cameras:
        try:
            cam.disconnect()
        except RobotError as exc:
            log.warning("%s", exc)


# Built-ins first; any other name (or `lerobot:<type>`) is looked up in LeRobot's registry.
ROBOTS: Registry[Robot] = Registry(
    "robot",
    {
        "sim": "asyncinf.robots.sim.robot:SimRobot",
        "fake": "asyncinf.robots.fake:FakeRobot",
        "so100_follower": "asyncinf.robots.so_follower:SO100Follower",
        "so101_follower": "asyncinf.robots.so_follower:SO101Follower",
    },
    fallback="asyncinf.robots.lerobot:robot_class",  # LeRobot only if asked
)


def policy_robot_type(robot_type: str) -> str:
    """The robot type policies are told (LeRobot's sync path passes it): `--robot.type` without
    the `lerobot:` prefix that only picks LeRobot's driver over ours."""
    from asyncinf.robots.lerobot import PREFIX  # noqa: PLC0415  (light: no LeRobot import)

    return robot_type.removeprefix(PREFIX)


def make_robot(robot_type: str, options: Options) -> Robot:
    """Build (not connect) the robot registered as `robot_type` from flag/file options."""
    return ROBOTS.load(robot_type).from_options(robot_type, options)
