"""A tiny third-party LeRobot robot plugin, shipped the way LeRobot's plugins are: the tests
install this file as the module of a `lerobot_robot_tinyarm` distribution, which LeRobot's
`register_third_party_plugins()` imports; importing it registers `--robot.type=tinyarm` and
its camera type `tinyarm_camera` (LeRobot finds `TinyArm` / `TinyCam` by their config names).

The arm follows each goal at once, clamped by its own `max_relative_target` as LeRobot's
robots clamp; its action features are in another order than its observation, so a client
that maps by position would swap joints. `disconnect()` writes what it saw to `record_path`.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from lerobot.cameras import Camera, CameraConfig, make_cameras_from_configs
from lerobot.robots import Robot, RobotConfig
from lerobot.robots.utils import ensure_safe_goal_position

JOINTS = ("base", "shoulder", "elbow", "gripper")


@CameraConfig.register_subclass("tinyarm_camera")
@dataclass
class TinyCamConfig(CameraConfig):
    fps: int | None = 30
    width: int | None = 64
    height: int | None = 48


class TinyCam(Camera):
    """Frames whose every pixel is the frame's count, modulo 256."""

    def __init__(self, config: TinyCamConfig) -> None:
        super().__init__(config)
        self.config = config
        self.frames = 0
        self._connected = False

    @property
    def is_connected(self) -> bool:
        return self._connected

    @staticmethod
    def find_cameras() -> list:
        return []

    def connect(self, warmup: bool = True) -> None:
        self._connected = True

    def read(self) -> np.ndarray:
        self.frames += 1
        return np.full((self.config.height, self.config.width, 3), self.frames % 256, np.uint8)

    def async_read(self, timeout_ms: float = 200) -> np.ndarray:
        return self.read()

    def read_latest(self, max_age_ms: int = 500) -> np.ndarray:
        return self.read()

    def disconnect(self) -> None:
        self._connected = False


@RobotConfig.register_subclass("tinyarm")
@dataclass
class TinyArmConfig(RobotConfig):
    max_relative_target: float | None = None
    disable_torque_on_disconnect: bool = True  # LeRobot's default: release
    cameras: dict[str, CameraConfig] = field(default_factory=lambda: {"front": TinyCamConfig()})
    record_path: str | None = None


class TinyArm(Robot):
    config_class = TinyArmConfig
    name = "tinyarm"

    def __init__(self, config: TinyArmConfig) -> None:
        super().__init__(config)
        self.config = config
        self.cameras = make_cameras_from_configs(config.cameras)
        self.position = dict.fromkeys(JOINTS, 0.0)
        self.torque = False
        self.actions = 0
        self.clamped = 0
        self.orders: set[tuple[str, ...]] = set()
        self._connected = False

    @property
    def observation_features(self) -> dict:
        shapes = {k: (c.height, c.width, 3) for k, c in self.config.cameras.items()}
        return {**{f"{j}.pos": float for j in JOINTS}, **shapes}

    @property
    def action_features(self) -> dict:
        return {f"{j}.pos": float for j in reversed(JOINTS)}

    @property
    def is_connected(self) -> bool:
        return self._connected

    def connect(self, calibrate: bool = True) -> None:
        for cam in self.cameras.values():
            cam.connect()
        self.torque = True
        self._connected = True

    @property
    def is_calibrated(self) -> bool:
        return True

    def calibrate(self) -> None:
        pass

    def configure(self) -> None:
        pass

    def get_observation(self) -> dict:
        obs = {f"{j}.pos": self.position[j] for j in JOINTS}
        for name, cam in self.cameras.items():
            obs[name] = cam.read_latest()
        return obs

    def send_action(self, action: dict) -> dict:
        if set(action) != set(self.action_features):
            raise ValueError(f"tinyarm got action keys {sorted(action)}")
        self.orders.add(tuple(action))
        goal = {k.removesuffix(".pos"): float(v) for k, v in action.items()}
        if self.config.max_relative_target is not None:
            asked = dict(goal)
            goal = ensure_safe_goal_position(
                {k: (g, self.position[k]) for k, g in goal.items()}, self.config.max_relative_target
            )
            self.clamped += any(abs(goal[k] - asked[k]) > 1e-9 for k in goal)
        self.position.update(goal)
        self.actions += 1
        return {f"{k}.pos": v for k, v in goal.items()}

    def disconnect(self) -> None:
        self.torque = not self.config.disable_torque_on_disconnect
        for cam in self.cameras.values():
            cam.disconnect()
        self._connected = False
        if self.config.record_path:
            record = {"actions": self.actions, "clamped": self.clamped,
                      "torque_on_exit": self.torque, "orders": sorted(self.orders),
                      "position": self.position}  # fmt: skip
            Path(self.config.record_path).write_text(json.dumps(record))
