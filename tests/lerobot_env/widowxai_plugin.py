"""A Trossen-shaped bimanual LeRobot robot plugin, for the seed's Trossen command line.

The tests install this file as the module of a `lerobot_robot_widowxai_test` distribution
(the real kit's is `lerobot_robot_trossen`); importing it registers
`--robot.type=bi_widowxai_follower_robot` with the flags that command line gives the real
config: `left_arm_ip_address`, `right_arm_ip_address`, `left_arm_max_relative_target`,
`right_arm_max_relative_target`, `id` and `cameras`. Like LeRobot's own bimanual robots it
is two one-arm robots behind `left_` / `right_` feature names: here two of the tinyarm
plugin's arms (installed beside it), each clamping by its own `max_relative_target`. It has
no `disable_torque_on_disconnect` (its disconnect decides), and no camera of its own type:
the cameras are whatever LeRobot's camera registry builds from `cameras`.
"""

from dataclasses import dataclass, field
from pathlib import Path

from lerobot.cameras import CameraConfig, make_cameras_from_configs
from lerobot.robots import Robot, RobotConfig
from lerobot_robot_tinyarm import TinyArm, TinyArmConfig

SIDES = ("left", "right")


@RobotConfig.register_subclass("bi_widowxai_follower_robot")
@dataclass
class BiWidowXAIFollowerConfig(RobotConfig):
    left_arm_ip_address: str = "192.168.1.5"
    right_arm_ip_address: str = "192.168.1.4"
    left_arm_max_relative_target: float | None = None
    right_arm_max_relative_target: float | None = None
    cameras: dict[str, CameraConfig] = field(default_factory=dict)
    record_dir: str | None = None  # each arm writes what it saw to <record_dir>/<side>.json


class BiWidowXAIFollower(Robot):
    config_class = BiWidowXAIFollowerConfig
    name = "bi_widowxai_follower_robot"

    def __init__(self, config: BiWidowXAIFollowerConfig) -> None:
        super().__init__(config)
        self.config = config
        self.arms = {
            side: TinyArm(
                TinyArmConfig(
                    id=f"{config.id}_{side}" if config.id else None,
                    max_relative_target=getattr(config, f"{side}_arm_max_relative_target"),
                    cameras={},
                    record_path=config.record_dir and str(Path(config.record_dir, f"{side}.json")),
                )
            )
            for side in SIDES
        }
        self.ip_addresses = {side: getattr(config, f"{side}_arm_ip_address") for side in SIDES}
        self.cameras = make_cameras_from_configs(config.cameras)

    @property
    def observation_features(self) -> dict:
        shapes = {k: (c.height, c.width, 3) for k, c in self.config.cameras.items()}
        return {**self._both(lambda arm: arm.observation_features), **shapes}

    @property
    def action_features(self) -> dict:
        return self._both(lambda arm: arm.action_features)

    @property
    def is_connected(self) -> bool:
        return all(arm.is_connected for arm in self.arms.values())

    def connect(self, calibrate: bool = True) -> None:
        for arm in self.arms.values():
            arm.connect(calibrate)
        for cam in self.cameras.values():
            cam.connect()

    @property
    def is_calibrated(self) -> bool:
        return all(arm.is_calibrated for arm in self.arms.values())

    def calibrate(self) -> None:
        pass

    def configure(self) -> None:
        pass

    def get_observation(self) -> dict:
        obs = self._both(lambda arm: arm.get_observation())
        for name, cam in self.cameras.items():
            obs[name] = cam.read_latest()
        return obs

    def send_action(self, action: dict) -> dict:
        sent = {}
        for side, arm in self.arms.items():
            prefix = f"{side}_"
            mine = {k.removeprefix(prefix): v for k, v in action.items() if k.startswith(prefix)}
            sent.update({prefix + k: v for k, v in arm.send_action(mine).items()})
        return sent

    def _both(self, per_arm) -> dict:
        """`per_arm(arm)`'s dict of each arm, its keys prefixed with the arm's side."""
        return {f"{s}_{k}": v for s, arm in self.arms.items() for k, v in per_arm(arm).items()}

    def disconnect(self) -> None:
        for arm in self.arms.values():
            arm.disconnect()
        for cam in self.cameras.values():
            cam.disconnect()
