"""The simulated arm (`--robot.type=sim`) with synthetic cameras.

The arm's model (joints, limits, dynamics) is `arm.py`, its cameras `camera.py`; this is the
`Robot` around them: config, commands, time, torque on and off.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from asyncinf.robots.robot import Robot, RobotConfig
from asyncinf.robots.sim.arm import GENERIC_LIMITS, SO101_LIMITS, Chain, joint_names_for, track
from asyncinf.robots.sim.camera import ClockNs, SimCamera
from asyncinf.runtime.errors import ActionRejected, ConfigError, RobotError

log = logging.getLogger(__name__)

DEFAULT_CAMERAS = {"front": {"type": "sim", "width": 640, "height": 480}}


@dataclass
class SimRobotConfig(RobotConfig):
    """`--robot.*` options of the simulated arm. Units: the joints' (degrees; gripper 0..100)."""

    num_joints: int = 6
    tau_s: float = 0.1  # first-order time constant of target tracking
    max_velocity: float = 180.0  # per joint, units per second
    # joint name -> [low, high]; joints not named keep the defaults (SO-101 ranges, or ±180)
    joint_limits: dict[str, list[float]] = field(default_factory=dict)
    initial_state: list[float] | None = None  # default: zeros, clipped to the limits
    fall_velocity: float = 45.0  # units per second a released arm sags under "gravity"
    seed: int = 0  # background texture of the cameras
    # camera name -> options ({type: sim, width, height, fps, seed} or an opencv camera);
    # empty: one 640x480 sim camera "front"; null: no cameras.
    cameras: dict[str, dict[str, Any]] | None = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.num_joints, bool) or not 1 <= self.num_joints <= 64:
            raise ConfigError(
                f"--robot.num_joints={self.num_joints!r}: must be in 1..64 "
                "(6 gives the SO-101's joints)"
            )
        for name in ("tau_s", "max_velocity", "fall_velocity"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConfigError(f"--robot.{name}={value!r}: must be a number > 0")
        if isinstance(self.seed, bool) or self.seed < 0:
            raise ConfigError(f"--robot.seed={self.seed!r}: must be an integer >= 0")
        names = joint_names_for(self.num_joints)
        for name, bounds in self.joint_limits.items():
            if name not in names:
                raise ConfigError(
                    f"--robot.joint_limits: {name!r} is not a joint of this arm; joints: {names}"
                )
            if not (
                isinstance(bounds, (list, tuple))
                and len(bounds) == 2
                and all(isinstance(b, (int, float)) and math.isfinite(b) for b in bounds)
                and bounds[0] < bounds[1]
            ):
                raise ConfigError(
                    f"--robot.joint_limits: {name}={bounds!r}: expected [low, high] with low < high"
                )
        if self.initial_state is not None:
            if len(self.initial_state) != self.num_joints:
                raise ConfigError(
                    f"--robot.initial_state has {len(self.initial_state)} values; "
                    f"--robot.num_joints={self.num_joints} needs that many"
                )
            lo, hi = self.limits()
            for name, v, a, b in zip(names, self.initial_state, lo, hi, strict=True):
                if not (isinstance(v, (int, float)) and a <= v <= b):
                    raise ConfigError(
                        f"--robot.initial_state: {name}={v!r} is outside its limits [{a}, {b}]"
                    )

    def limits(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-joint (low, high) arrays, defaults overridden by `joint_limits`."""
        names = joint_names_for(self.num_joints)
        bounds = [
            tuple(self.joint_limits.get(n, SO101_LIMITS.get(n, GENERIC_LIMITS))) for n in names
        ]
        lo, hi = zip(*bounds, strict=True)
        return np.array(lo, np.float64), np.array(hi, np.float64)


class SimRobot(Robot):
    """A simulated N-joint arm with synthetic cameras; its model is `arm.py`.

    For tests: `last_command` (the last target received, as sent), `target` (the goal being
    tracked, within the limits), `positions` (the arm's joints now, connected or not),
    `commands_received`, and `commands_after_disconnect` (commands refused because the robot
    was not connected: must stay 0 in a correct runtime).
    """

    config_class = SimRobotConfig
    default_camera_type = "sim"

    def __init__(
        self, config: SimRobotConfig | None = None, *, clock_ns: ClockNs = time.monotonic_ns
    ) -> None:
        config = config or SimRobotConfig()
        super().__init__(config)
        self.config: SimRobotConfig = config
        self._clock_ns = clock_ns
        self._names = joint_names_for(config.num_joints)
        self._lo, self._hi = config.limits()
        initial = config.initial_state or [0.0] * config.num_joints
        self._x = np.clip(np.array(initial, np.float64), self._lo, self._hi)
        self._target = self._x.copy()
        self._chain = Chain.for_joints(self._names)
        self._last_ns: int | None = None  # None: not simulated yet (before the first connect)
        self._released = False
        self._connected = False
        self.last_command: np.ndarray | None = None
        self.commands_received = 0
        self.commands_after_disconnect = 0
        for k, cam in enumerate(self.cameras.values()):
            if isinstance(cam, SimCamera):
                cam.attach(self._names, lambda: self.positions, config.seed + k, clock_ns)

    def __str__(self) -> str:
        return f"sim robot {self.config.id!r}"

    def camera_options(self) -> dict[str, dict[str, Any]]:
        """Empty `cameras` gives the default camera; null gives none."""
        cameras = self.config.cameras
        return DEFAULT_CAMERAS if cameras == {} else (cameras or {})

    # -- Robot interface ------------------------------------------------------------------------

    @property
    def joint_names(self) -> list[str]:
        return list(self._names)

    @property
    def is_connected(self) -> bool:
        return self._connected

    def connect(self) -> None:
        """Enable "torque": hold the present position, then connect the cameras."""
        if self._connected:
            raise RobotError(f"{self}: already connected")
        self.connect_cameras()
        self._advance()
        self._target = self._x.copy()
        self._released = False
        self._connected = True

    def read_state(self) -> np.ndarray:
        self._require_connected()
        self._advance()
        return self._x.astype(np.float32)

    def send_action(self, target: np.ndarray) -> np.ndarray:
        """Set the joints' goal; returns it as sent (float32; the joint limits clip it later,
        as a servo clips its goal). Raises RobotError when not connected (and counts it),
        ActionRejected (a ValueError) for a wrong shape or a non-finite value."""
        if not self._connected:
            self.commands_after_disconnect += 1
            raise RobotError(f"{self}: command while not connected")
        goal = np.asarray(target, dtype=np.float64)
        if goal.shape != (len(self._names),):
            raise ActionRejected(
                f"{self}: action shape {goal.shape}, expected ({len(self._names)},) "
                f"for joints {self._names}"
            )
        bad = np.flatnonzero(~np.isfinite(goal))
        if bad.size:
            raise ActionRejected(f"{self}: joint {self._names[bad[0]]} target {goal[bad[0]]}")
        self._advance()  # the old goal held until now
        self.last_command = goal.astype(np.float32)
        self._target = np.clip(goal, self._lo, self._hi)
        self.commands_received += 1
        return self.last_command.copy()

    def disconnect(self) -> None:
        """Hold the last target, or release the arm (`disable_torque_on_exit`): it stops
        tracking and sags under gravity. Then close the cameras. Safe to call twice."""
        if self._connected:
            self._advance()
            if self.config.disable_torque_on_exit:
                self._released = True
                # Fixed at release, so the fall is rate-independent like the tracking.
                self._target = self._chain.hanging(self._x, self._lo, self._hi)
                log.info("%s: torque released", self)
            else:
                log.info("%s: holding the last target", self)
        self._connected = False
        self.disconnect_cameras()

    # -- simulation -----------------------------------------------------------------------------

    @property
    def positions(self) -> np.ndarray:
        """Joint values now (float64 copy), whether connected or not."""
        self._advance()
        return self._x.copy()

    @property
    def target(self) -> np.ndarray:
        """The goal the joints move to: the last command within limits, or the sag goal."""
        return self._target.copy()

    @property
    def released(self) -> bool:
        return self._released

    def _advance(self) -> None:
        now = self._clock_ns()
        if self._last_ns is None:
            self._last_ns = now
            return
        dt_s = (now - self._last_ns) / 1e9
        if dt_s <= 0:
            return
        self._last_ns = now
        if self._released:
            step = self.config.fall_velocity * dt_s
            self._x = self._x + np.clip(self._target - self._x, -step, step)
        else:
            self._x = track(
                self._x, self._target, dt_s, self.config.tau_s, self.config.max_velocity
            )

    def _require_connected(self) -> None:
        if not self._connected:
            raise RobotError(f"{self} is not connected")
