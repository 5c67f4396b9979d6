"""The `Camera` interface: newest-frame semantics, RGB, with the capture time."""

from __future__ import annotations

import abc
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from asyncinf.runtime.errors import ConfigError, RobotError
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

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.config.height, self.config.width, 3)

    @abc.abstractmethod
    def connect(self) -> None: ...

    @abc.abstractmethod
    def read(self) -> tuple[np.ndarray, int]:
        """The newest frame (HxWx3 uint8 RGB) and its capture time (monotonic ns)."""

    @abc.abstractmethod
    def disconnect(self) -> None:
        """Safe to call twice."""


log = logging.getLogger(__name__)


def connect_all(cameras: dict[str, Camera]) -> None:
    """Connect every camera, or none: a failure disconnects those already connected and
    raises RobotError naming the camera."""
    connected: list[Camera] = []
    try:
        for name, cam in cameras.items():
            try:
                cam.connect()
            except RobotError as exc:
                raise RobotError(f"camera {name!r}: {exc}") from exc
            connected.append(cam)
    except BaseException:
        disconnect_all(connected)
        raise


def disconnect_all(cameras: Iterable[Camera]) -> None:
    """Disconnect each camera; one that fails is logged and the others still disconnected."""
    for cam in cameras:
        try:
            cam.disconnect()
        except RobotError as exc:
            log.warning("%s", exc)


def read_all(cameras: dict[str, Camera]) -> dict[str, np.ndarray]:
    """The newest frame of every camera, by name."""
    return {name: cam.read()[0] for name, cam in cameras.items()}


CAMERAS: Registry[Camera] = Registry(
    "camera",
    {
        "sim": "asyncinf.robots.sim:SimCamera",
        "opencv": "asyncinf.robots.opencv_camera:OpenCVCamera",
    },
)


def make_camera(options: dict[str, Any]) -> Camera:
    from asyncinf.runtime.config import build  # noqa: PLC0415

    options = dict(options)
    cls = CAMERAS.load(options.pop("type", "opencv"))
    return cls(build(cls.config_class, options, prefix="camera."))
