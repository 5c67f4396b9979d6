"""The synthetic camera (camera `type: sim`).

On a `SimRobot` it films that arm; used on its own (as a camera of another robot) it draws
the same arm moving through a fixed trajectory indexed by frame number.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from asyncinf.robots.camera import Camera, CameraConfig
from asyncinf.robots.sim.arm import SO101_JOINTS, Chain
from asyncinf.robots.sim.render import Renderer
from asyncinf.runtime.errors import ConfigError, RobotError

ClockNs = Callable[[], int]


@dataclass
class SimCameraConfig(CameraConfig):
    # Background texture. None: on a sim robot, the robot's seed plus the camera's index;
    # on its own, 0.
    seed: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.seed is not None and (isinstance(self.seed, bool) or self.seed < 0):
            raise ConfigError(f"camera seed={self.seed!r}: use an integer >= 0 (or omit it)")


def _pattern(t_s: float) -> np.ndarray:
    """The standalone camera's SO-101 pose at time `t_s`: every joint on its own sine."""
    w = 2 * math.pi * t_s
    return np.array(
        [
            60 * math.sin(w / 6),
            40 * math.sin(w / 4),
            30 * math.sin(w / 3 + 1),
            40 * math.sin(w / 2.5),
            90 * math.sin(w / 5),
            50 + 50 * math.sin(w / 2),
        ]
    )


class SimCamera(Camera):
    """A synthetic camera. On a `SimRobot` it films the arm; alone, a moving test pattern.

    Alone, the frame shown is number `floor(elapsed · fps)` since `connect()`, drawn from that
    number only (deterministic); `read()` never waits, like a real camera's newest frame.
    """

    config_class = SimCameraConfig

    def __init__(self, config: SimCameraConfig, *, clock_ns: ClockNs = time.monotonic_ns) -> None:
        super().__init__(config)
        self.config: SimCameraConfig = config
        self._clock_ns = clock_ns
        self._joint_names = list(SO101_JOINTS)
        self._positions: Callable[[], np.ndarray] | None = None
        self._seed = config.seed if config.seed is not None else 0
        self._renderer: Renderer | None = None
        self._start_ns = 0

    def attach(
        self,
        joint_names: list[str],
        positions: Callable[[], np.ndarray],
        default_seed: int,
        clock_ns: ClockNs,
    ) -> None:
        """Film an arm: `positions()` gives its joint values at the time of each `read()`."""
        if self._renderer is not None:
            raise RobotError("attach a sim camera before connecting it")
        self._joint_names = list(joint_names)
        self._positions = positions
        self._clock_ns = clock_ns
        if self.config.seed is None:
            self._seed = default_seed

    @property
    def is_connected(self) -> bool:
        return self._renderer is not None

    def connect(self) -> None:
        if self._renderer is None:
            c = self.config
            self._renderer = Renderer(
                c.height, c.width, self._seed, Chain.for_joints(self._joint_names)
            )
        self._start_ns = self._clock_ns()

    def render(self, positions: np.ndarray, label: str | None = None) -> np.ndarray:
        """The frame showing the arm at `positions` (joint values in this camera's order)."""
        if self._renderer is None:
            raise RobotError("sim camera is not connected")
        return self._renderer.render(np.asarray(positions, np.float64), label)

    @property
    def frame_index(self) -> int:
        """The standalone pattern's frame shown now."""
        return int((self._clock_ns() - self._start_ns) * self.config.fps // 1_000_000_000)

    def read(self) -> tuple[np.ndarray, int]:
        if self._positions is not None:
            now = self._clock_ns()
            return self.render(self._positions()), now
        k = self.frame_index
        now = self._clock_ns()
        return self.render(_pattern(k / self.config.fps), f"frame {k}"), now

    def wait_for_frame(self, after_ns: int, timeout_s: float) -> tuple[np.ndarray, int]:
        """Every read draws a frame captured now, so there is nothing to wait for unless the
        clock stands still (a manual clock in a test)."""
        frame, capture_ns = self.read()
        if capture_ns <= after_ns:
            raise RobotError(
                f"sim camera: its clock stands at {capture_ns} ns, not after {after_ns} ns"
            )
        return frame, capture_ns

    def disconnect(self) -> None:
        self._renderer = None
