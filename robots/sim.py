"""The simulated arm (`--robot.type=sim`) and its synthetic cameras (camera `type: sim`).

Joints track the commanded target with first-order dynamics (time constant `tau_s`) under a
velocity limit (`max_velocity`), integrated in closed form over the real monotonic time that
elapsed since the previous call: the result does not depend on how often the loop calls, so
a 30 Hz and a 200 Hz loop see the same arm. Targets are clipped to the joint limits, as a
servo clips goals to its position limits.

Cameras draw a 2-D side view of the kinematic chain over a background texture generated
once from a seed: the same joint positions and seed give the same bytes. A `SimCamera` used
on its own (as a camera of another robot) draws the same arm moving through a fixed
trajectory indexed by frame number. All drawing lives in `_Renderer`.

OpenCV (the `opencv` extra) is imported when a camera connects, never at import.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from asyncinf.robots.camera import (
    Camera,
    CameraConfig,
    connect_all,
    disconnect_all,
    make_camera,
    read_all,
)
from asyncinf.robots.robot import Robot, RobotConfig
from asyncinf.runtime.errors import ActionRejected, ConfigError, RobotError

log = logging.getLogger(__name__)

ClockNs = Callable[[], int]

# LeRobot's SO-101 follower joints, in degrees (gripper: 0 closed .. 100 open).
SO101_JOINTS = (
    "shoulder_pan.pos",
    "shoulder_lift.pos",
    "elbow_flex.pos",
    "wrist_flex.pos",
    "wrist_roll.pos",
    "gripper.pos",
)
# Roughly the calibrated ranges of an SO-101 in LeRobot's degree mode.
SO101_LIMITS = {
    "shoulder_pan.pos": (-110.0, 110.0),
    "shoulder_lift.pos": (-100.0, 100.0),
    "elbow_flex.pos": (-100.0, 100.0),
    "wrist_flex.pos": (-100.0, 100.0),
    "wrist_roll.pos": (-160.0, 160.0),
    "gripper.pos": (0.0, 100.0),
}
GENERIC_LIMITS = (-180.0, 180.0)
DEFAULT_CAMERAS = {"front": {"type": "sim", "width": 640, "height": 480}}


def joint_names_for(num_joints: int) -> list[str]:
    """SO-101 names for 6 joints, `joint_{i}.pos` otherwise."""
    if num_joints == len(SO101_JOINTS):
        return list(SO101_JOINTS)
    return [f"joint_{i}.pos" for i in range(num_joints)]


def track(
    x: np.ndarray, target: np.ndarray, dt_s: float, tau_s: float, max_velocity: float
) -> np.ndarray:
    """Positions after `dt_s` of dx/dt = clip((target - x) / tau, ±max_velocity), exactly.

    Far from the target (|e| > max_velocity·tau) a joint moves at the velocity limit until
    |e| = max_velocity·tau, then decays exponentially; solving each phase in closed form keeps
    the result independent of the step size.
    """
    e = target - x
    d = np.abs(e)
    knee = max_velocity * tau_s
    t_linear = np.maximum(d - knee, 0.0) / max_velocity  # time spent at the limit
    t_exp = np.maximum(dt_s - t_linear, 0.0)
    d_after = np.where(
        dt_s <= t_linear,
        d - max_velocity * dt_s,
        np.minimum(d, knee) * np.exp(-t_exp / tau_s),
    )
    return target - np.sign(e) * d_after


# --- drawing -----------------------------------------------------------------------------------


def _cv2() -> Any:
    try:
        import cv2  # noqa: PLC0415  (optional extra: asyncinf[opencv])
    except ImportError:
        raise RobotError(
            "sim cameras draw with OpenCV: pip install 'asyncinf[opencv]' "
            "(or run the sim robot without cameras: --robot.cameras=null)"
        ) from None
    return cv2


@dataclass(frozen=True)
class _Chain:
    """How joint values map to the side view: which joints pitch, pan, roll, grip."""

    pitch: tuple[int, ...]  # indices of pitch joints, base to tip
    offsets_deg: tuple[float, ...]  # per pitch joint: added to its value (pose at zero)
    lengths: tuple[float, ...]  # per pitch joint: its link, as a fraction of min(H, W)
    pan: int | None = None
    roll: int | None = None
    gripper: int | None = None

    @staticmethod
    def for_joints(names: list[str]) -> _Chain:
        if tuple(names) == SO101_JOINTS:
            # Zero pose: upper arm up, forearm and wrist forward (an arm reaching out).
            return _Chain((1, 2, 3), (0.0, 90.0, 0.0), (0.25, 0.22, 0.08), pan=0, roll=4, gripper=5)
        n = len(names)
        return _Chain(tuple(range(n)), (0.0,) + (20.0,) * (n - 1), (0.62 / n,) * n)

    def absolute_deg(self, q: np.ndarray) -> list[float]:
        """Each pitch link's angle from vertical-up, clockwise (towards +x in the image)."""
        out, theta = [], 0.0
        for i, off in zip(self.pitch, self.offsets_deg, strict=True):
            theta += float(q[i]) + off
            out.append(theta)
        return out

    def hanging(self, q: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Where gravity takes a released arm: each pitch link as close to straight down as
        its limits allow, falling towards the side it already leans to."""
        goal = q.copy()
        parent = 0.0
        for k, (i, off) in enumerate(zip(self.pitch, self.offsets_deg, strict=True)):
            now = self.absolute_deg(goal)[k]
            down = now - (now % 360.0 - 180.0)  # the nearest straight-down angle
            goal[i] = np.clip(down - parent - off, lo[i], hi[i])
            parent += float(goal[i]) + off
        return goal


class _Renderer:
    """Draws one camera's frames: a side view of the arm over a seeded background.

    The background is generated once; a frame is a copy of it with the chain drawn on top,
    with sub-pixel coordinates (cv2's `shift`) so that any change of a joint shows.
    """

    _SHIFT = 4  # fractional bits of drawing coordinates
    _LINK_COLORS = ((230, 120, 40), (60, 170, 230), (120, 200, 80), (200, 80, 180))

    def __init__(self, height: int, width: int, seed: int, chain: _Chain) -> None:
        self.cv2 = _cv2()
        self.height, self.width, self.chain = height, width, chain
        self.scale = min(height, width)
        self.base = (0.5 * width, 0.85 * height)
        self.thickness = max(2, round(self.scale / 40))
        self.background = self._background(seed)

    def _background(self, seed: int) -> np.ndarray:
        cv2, h, w = self.cv2, self.height, self.width
        rng = np.random.default_rng(seed)
        coarse = rng.integers(70, 200, size=(6, 8, 3), dtype=np.uint8)
        img = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
        for _ in range(10):  # seeded shapes on the wall: features a vision model can latch onto
            color = tuple(int(c) for c in rng.integers(0, 256, 3))
            x, y = int(rng.integers(0, w)), int(rng.integers(0, int(0.8 * h)))
            r = int(rng.integers(self.scale // 30 + 1, self.scale // 8 + 2))
            if rng.random() < 0.5:
                cv2.circle(img, (x, y), r, color, -1, cv2.LINE_AA)
            else:
                cv2.rectangle(img, (x - r, y - r // 2), (x + r, y + r // 2), color, -1)
        floor = int(0.88 * h)
        tile = max(4, self.scale // 16)
        yy, xx = np.mgrid[floor:h, 0:w]
        checker = ((yy // tile + xx // tile) % 2).astype(bool)
        light, dark = rng.integers(150, 230, 3), rng.integers(40, 110, 3)
        img[floor:h] = np.where(checker[..., None], light, dark).astype(np.uint8)
        grain = rng.integers(-10, 11, size=(h, w, 1), dtype=np.int16)
        return np.clip(img.astype(np.int16) + grain, 0, 255).astype(np.uint8)

    def _pt(self, x: float, y: float) -> tuple[int, int]:
        return (self._len(x), self._len(y))

    def _len(self, v: float) -> int:
        return round(v * (1 << self._SHIFT))

    def render(self, q: np.ndarray, label: str | None = None) -> np.ndarray:
        """One RGB frame of the arm at joint values `q` (a new array)."""
        cv2, chain, s, t = self.cv2, self.chain, self.scale, self.thickness
        aa, sh = cv2.LINE_AA, self._SHIFT
        img = self.background.copy()
        x, y = self.base
        # Pan turns the arm about the vertical axis: the side view sees it foreshortened.
        pan = math.radians(float(q[chain.pan])) if chain.pan is not None else 0.0
        fore = math.cos(pan)
        bw = 0.09 * s
        cv2.ellipse(
            img, self._pt(x, y), self._pt(bw, 0.3 * bw), 0, 0, 360, (70, 70, 80), -1, aa, sh
        )
        cv2.line(
            img,
            self._pt(x, y),
            self._pt(x + bw * math.sin(pan), y + 0.3 * bw * math.cos(pan)),
            (240, 240, 240),
            max(1, t // 2),
            aa,
            sh,
        )
        joints = [(x, y)]
        theta_deg = chain.absolute_deg(q)
        for k, (theta, length) in enumerate(zip(theta_deg, chain.lengths, strict=True)):
            a = math.radians(theta)
            nx, ny = x + length * s * math.sin(a) * fore, y - length * s * math.cos(a)
            color = self._LINK_COLORS[k % len(self._LINK_COLORS)]
            cv2.line(img, self._pt(x, y), self._pt(nx, ny), color, t, aa, sh)
            x, y = nx, ny
            joints.append((x, y))
        for jx, jy in joints[:-1]:
            cv2.circle(img, self._pt(jx, jy), self._len(0.8 * t), (235, 235, 225), -1, aa, sh)
            cv2.circle(img, self._pt(jx, jy), self._len(0.8 * t), (40, 40, 40), 1, aa, sh)
        a = math.radians(theta_deg[-1])
        if chain.roll is not None:  # a dial at the wrist shows the roll
            roll = math.radians(float(q[chain.roll]))
            wx, wy = joints[-2]
            r = 1.6 * t
            cv2.line(
                img,
                self._pt(wx, wy),
                self._pt(wx + r * math.sin(roll), wy - r * math.cos(roll)),
                (20, 20, 20),
                max(1, t // 2),
                aa,
                sh,
            )
        if chain.gripper is not None:
            opening = 5.0 + 55.0 * float(np.clip(q[chain.gripper], 0.0, 100.0)) / 100.0
            roll = math.radians(float(q[chain.roll])) if chain.roll is not None else 0.0
            half = math.radians(opening / 2) * (0.3 + 0.7 * abs(math.cos(roll)))
            jaw = 0.07 * s
            for side in (-1.0, 1.0):
                b = a + side * half
                tip = (x + jaw * math.sin(b) * fore, y - jaw * math.cos(b))
                cv2.line(
                    img, self._pt(x, y), self._pt(*tip), (50, 50, 60), max(1, t // 2 + 1), aa, sh
                )
        else:
            cv2.circle(img, self._pt(x, y), self._len(0.9 * t), (40, 40, 200), -1, aa, sh)
        if label:
            cv2.putText(
                img,
                label,
                (8, 8 + max(12, s // 24)),
                cv2.FONT_HERSHEY_SIMPLEX,
                max(0.4, s / 960),
                (255, 255, 255),
                1,
                aa,
            )
        return img


# --- cameras -----------------------------------------------------------------------------------


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
        self._renderer: _Renderer | None = None
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
            self._renderer = _Renderer(
                c.height, c.width, self._seed, _Chain.for_joints(self._joint_names)
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

    def disconnect(self) -> None:
        self._renderer = None


# --- robot -------------------------------------------------------------------------------------


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
        for name, options in (self.cameras or {}).items():
            if not isinstance(options, dict):
                raise ConfigError(
                    f"--robot.cameras: camera {name!r} is {options!r}; expected a map such as "
                    "{type: sim, width: 640, height: 480}"
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
    """A simulated N-joint arm with synthetic cameras; see the module docstring.

    For tests: `last_command` (the last target received, as sent), `target` (the goal being
    tracked, within the limits), `positions` (the arm's joints now, connected or not),
    `commands_received`, and `commands_after_disconnect` (commands refused because the robot
    was not connected: must stay 0 in a correct runtime).
    """

    config_class = SimRobotConfig

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
        self._chain = _Chain.for_joints(self._names)
        self._last_ns: int | None = None  # None: not simulated yet (before the first connect)
        self._released = False
        self._connected = False
        self.last_command: np.ndarray | None = None
        self.commands_received = 0
        self.commands_after_disconnect = 0
        cameras = DEFAULT_CAMERAS if config.cameras == {} else (config.cameras or {})
        self.cameras: dict[str, Camera] = {}
        for k, (name, options) in enumerate(cameras.items()):
            try:
                cam = make_camera({"type": "sim", **options})
            except ConfigError as exc:
                raise ConfigError(f"--robot.cameras.{name}: {exc}") from None
            if isinstance(cam, SimCamera):
                cam.attach(self._names, lambda: self.positions, config.seed + k, clock_ns)
            self.cameras[name] = cam

    def __str__(self) -> str:
        return f"sim robot {self.config.id!r}"

    # -- Robot interface ------------------------------------------------------------------------

    @property
    def joint_names(self) -> list[str]:
        return list(self._names)

    @property
    def camera_shapes(self) -> dict[str, tuple[int, int, int]]:
        return {name: cam.shape for name, cam in self.cameras.items()}

    @property
    def is_connected(self) -> bool:
        return self._connected

    def connect(self) -> None:
        """Enable "torque": hold the present position, then connect the cameras."""
        if self._connected:
            raise RobotError(f"{self}: already connected")
        connect_all(self.cameras)
        self._advance()
        self._target = self._x.copy()
        self._released = False
        self._connected = True

    def read_state(self) -> np.ndarray:
        self._require_connected()
        self._advance()
        return self._x.astype(np.float32)

    def read_images(self) -> dict[str, np.ndarray]:
        self._require_connected()
        return read_all(self.cameras)

    def send_action(self, target: np.ndarray) -> None:
        """Set the joints' goal. Raises RobotError when not connected (and counts it),
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
        disconnect_all(self.cameras.values())

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
