"""The `Camera` interface: newest-frame semantics, RGB, with the capture time."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from asyncinf.runtime.errors import ConfigError
from asyncinf.runtime.registry import Registry


@dataclass
class CameraConfig:
    width: int = 640
    height: int = 480
    fps: float = 30.0

    def __post_init__(self) -> None:
        for name in ("width", "height", "fps"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"camera {name}={getattr(self, name)!r}: must be > 0")


class Camera(abc.ABC):
    config_class: ClassVar[type[CameraConfig]] = CameraConfig

    def __init__(self, config: CameraConfig) -> None:
        self.config = config

    @classmethod
    def from_options(cls, camera_type: str, options: dict[str, Any]) -> Camera:
        """Build (not connect) from a camera's options (without its `type`), asked for as
        `camera_type`; an adapter of LeRobot's cameras needs the type."""
        from asyncinf.runtime.config import build  # noqa: PLC0415

        return cls(build(cls.config_class, options, prefix="camera."))

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.config.height, self.config.width, 3)

    @abc.abstractmethod
    def connect(self) -> None: ...

    @abc.abstractmethod
    def read(self) -> tuple[np.ndarray, int]:
        """The newest frame (HxWx3 uint8 RGB) and its capture time (monotonic ns)."""

    @abc.abstractmethod
    def wait_for_frame(self, after_ns: int, timeout_s: float) -> tuple[np.ndarray, int]:
        """The first frame captured after `after_ns` (monotonic ns), as `read()` gives it.

        For measuring a camera (`robot check` times its frame rate with it), never for the
        control loop. Raises RobotError when none comes within `timeout_s`.
        """

    @abc.abstractmethod
    def disconnect(self) -> None:
        """Safe to call twice."""


# Built-ins first; any other type (intelrealsense, zmq, plugins) is looked up in LeRobot's.
CAMERAS: Registry[Camera] = Registry(
    "camera",
    {
        "sim": "asyncinf.robots.sim.camera:SimCamera",
        "opencv": "asyncinf.robots.opencv_camera:OpenCVCamera",
        "fake": "asyncinf.robots.fake:FakeCamera",
    },
    fallback="asyncinf.robots.lerobot:camera_class",  # LeRobot only if asked
)


def make_camera(options: dict[str, Any]) -> Camera:
    options = dict(options)
    camera_type = options.pop("type", "opencv")
    return CAMERAS.load(camera_type).from_options(camera_type, options)
