"""`LeRobotCamera`: a LeRobot camera (intelrealsense, zmq, a `lerobot_camera_*` plugin) on any
of our robots, as `--robot.cameras='{wrist: {type: intelrealsense, …}}'`.

Its options are LeRobot's camera config, decoded by draccus; width, height and fps are
required (LeRobot's robots require them too): the frame shape is part of our handshake,
before anything is opened. Frames come from LeRobot's background reader (`read_latest`,
non-blocking); their capture time is LeRobot's own `latest_timestamp` where the camera keeps
one (a `perf_counter` reading, moved onto the monotonic clock), else the time of the read.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from asyncinf.robots.camera import Camera, CameraConfig
from asyncinf.robots.lerobot import PREFIX, compat
from asyncinf.robots.lerobot.options import decode
from asyncinf.runtime.errors import ConfigError, RobotError


class LeRobotCamera(Camera):
    """A LeRobot camera behind our interface. Built by `from_options`, never opened there."""

    def __init__(self, config: CameraConfig, camera: Any) -> None:
        super().__init__(config)
        self.lerobot = camera
        # perf_counter and monotonic may differ in origin (they share it on Linux): one offset.
        self._perf_to_monotonic_ns = time.monotonic_ns() - time.perf_counter_ns()

    @classmethod
    def from_options(cls, camera_type: str, options: dict[str, Any]) -> LeRobotCamera:
        lerobot = compat.load()
        name = camera_type.removeprefix(PREFIX)
        flag = f"camera type {camera_type}"
        lr_config = decode(lerobot.CameraConfig.get_choice_class(name), options, flag)
        missing = [k for k in ("width", "height", "fps") if getattr(lr_config, k, None) is None]
        if missing:
            raise ConfigError(f"{flag}: give {missing} (the frame shape is known before opening)")
        config = CameraConfig(width=lr_config.width, height=lr_config.height, fps=lr_config.fps)
        try:
            (camera,) = lerobot.make_cameras_from_configs({"camera": lr_config}).values()
        except (ValueError, TypeError, ImportError, OSError) as exc:
            raise ConfigError(f"{flag}: LeRobot cannot build it: {exc}") from None
        return cls(config, camera)

    def connect(self) -> None:
        try:
            self.lerobot.connect()
        except Exception as exc:  # LeRobot's own exception types, from foreign code
            raise RobotError(f"{self.lerobot}: {exc}") from exc

    def read(self) -> tuple[np.ndarray, int]:
        try:
            frame = self.lerobot.read_latest()
        except Exception as exc:  # LeRobot's own exception types, from foreign code
            raise RobotError(f"{self.lerobot}: {exc}") from exc
        return frame, self._capture_ns()

    def wait_for_frame(self, after_ns: int, timeout_s: float) -> tuple[np.ndarray, int]:
        deadline = time.monotonic() + timeout_s
        while True:
            left_ms = (deadline - time.monotonic()) * 1e3
            if left_ms <= 0:
                raise RobotError(f"{self.lerobot}: no new frame within {timeout_s} s")
            try:
                frame = self.lerobot.async_read(timeout_ms=left_ms)  # waits for an unseen frame
            except TimeoutError:
                continue
            except Exception as exc:  # LeRobot's own exception types, from foreign code
                raise RobotError(f"{self.lerobot}: {exc}") from exc
            capture_ns = self._capture_ns()
            if capture_ns > after_ns:
                return frame, capture_ns

    def disconnect(self) -> None:
        """Safe to call twice (LeRobot's own raises when not connected)."""
        if not self.lerobot.is_connected:
            return
        try:
            self.lerobot.disconnect()
        except Exception as exc:  # LeRobot's own exception types, from foreign code
            raise RobotError(f"{self.lerobot}: {exc}") from exc

    def _capture_ns(self) -> int:
        stamp = getattr(self.lerobot, "latest_timestamp", None)
        if stamp is None:
            return time.monotonic_ns()
        return int(stamp * 1e9) + self._perf_to_monotonic_ns
