"""`LeRobotRobot`: any robot LeRobot can drive, as an asyncinf `Robot`.

LeRobot's robot keeps doing what it does: its own `connect`/`disconnect`, its own cameras and
its own `max_relative_target` clamp inside `send_action`. The adapter adds what the control
loop needs and LeRobot's async client gets wrong:

- One `get_observation()` per tick: its float entries, in `observation_features` order, are
  the state vector; its (h, w, 3) entries are the images `read_images()` returns, from the
  same reading.
- Actions go back as a dict by name, checked at build against `action_features` (LeRobot's
  client zips them by position and checks nothing).
- Never interactive: `connect(calibrate=False)`, and a robot that is not calibrated is a
  RobotError naming `lerobot-calibrate` instead of LeRobot's prompt on stdin.
- Our hold/release rule: `--robot.disable_torque_on_exit` (default false: hold) sets LeRobot's
  `disable_torque_on_disconnect` (LeRobot's default: release) on the robot and on its arms'
  configs (bimanual robots), unless LeRobot's own flag is given. A robot without that field
  does what its `disconnect()` does; asking it to release is then a ConfigError.
- `max_relative_target` is clamped once: by the LeRobot robot when its config has the field
  (the adapter's own `config.max_relative_target`, which the control loop applies, stays
  None), else by the control loop.
- LeRobot raises its own exception types; they become RobotError naming the robot, so the
  client reports them like any robot fault.
"""

from __future__ import annotations

import dataclasses
import logging
import typing
from typing import Any

import numpy as np

from asyncinf.robots.lerobot import PREFIX, compat
from asyncinf.robots.lerobot.options import decode, field_names, nest
from asyncinf.robots.robot import Robot, RobotConfig
from asyncinf.runtime.config import build
from asyncinf.runtime.errors import ActionRejected, ConfigError, RobotError
from asyncinf.runtime.messages import Options

log = logging.getLogger(__name__)

RELEASE_FIELD = "disable_torque_on_disconnect"  # LeRobot's name for our disable_torque_on_exit


def _release_paths(config_class: type) -> list[tuple[str, ...]]:
    """Where LeRobot's `disable_torque_on_disconnect` lives: the config, and one level down
    (a bimanual robot's `left_arm_config` / `right_arm_config`)."""
    paths = [(RELEASE_FIELD,)] if RELEASE_FIELD in field_names(config_class) else []
    for name, hint in typing.get_type_hints(config_class).items():
        if dataclasses.is_dataclass(hint) and RELEASE_FIELD in field_names(hint):
            paths.append((name, RELEASE_FIELD))
    return paths


def _get(values: dict[str, Any], path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(values, dict) or part not in values:
            return None
        values = values[part]
    return values


class LeRobotRobot(Robot):
    """A LeRobot robot behind our interface. Built by `from_options`, never touching hardware."""

    def __init__(self, config: RobotConfig, robot: Any, robot_type: str) -> None:
        """`config` holds the adapter's own options (the hold rule, a loop-side clamp);
        every other `--robot.*` option is in the LeRobot robot's config."""
        super().__init__(config)
        self.lerobot = robot
        self.robot_type = robot_type
        features = robot.observation_features
        self._state_keys = [k for k, v in features.items() if v in (float, int)]
        self._image_shapes = {
            k: tuple(v) for k, v in features.items() if isinstance(v, tuple) and len(v) == 3
        }
        other = sorted(set(features) - set(self._state_keys) - set(self._image_shapes))
        if other:
            raise ConfigError(
                f"{self}: observation features {other} are neither numbers nor (h, w, 3) "
                "images; asyncinf sends only those"
            )
        actions = robot.action_features
        if set(actions) != set(self._state_keys) or any(
            v not in (float, int) for v in actions.values()
        ):
            raise ConfigError(
                f"{self}: its actions {list(actions)} are not its state's numbers "
                f"{self._state_keys}; asyncinf's actions are one target per state entry"
            )
        # The action dict in LeRobot's own key order, each value taken by name from our vector.
        self._action_keys = list(actions)
        self._action_index = [self._state_keys.index(k) for k in self._action_keys]
        self._observation: dict[str, Any] | None = None
        self._connected = False

    @classmethod
    def from_options(cls, robot_type: str, options: Options) -> LeRobotRobot:
        lerobot = compat.load()
        name = robot_type.removeprefix(PREFIX)
        config_class = lerobot.RobotConfig.get_choice_class(name)
        flag = f"--robot.type={robot_type}"
        options = dict(options)
        had_ours = "disable_torque_on_exit" in options
        own_keys = ["disable_torque_on_exit"]
        if "max_relative_target" not in field_names(config_class):
            own_keys.append("max_relative_target")  # no clamp of its own: the loop's
        ours = build(
            RobotConfig,
            {k: options.pop(k) for k in own_keys if k in options},
            prefix="robot.",
        )
        values = nest(options)
        paths = _release_paths(config_class)
        if ours.disable_torque_on_exit and not paths:
            raise ConfigError(
                f"--robot.disable_torque_on_exit: LeRobot's {name} has no {RELEASE_FIELD}; "
                "its disconnect() decides what the motors do"
            )
        asked = _get(values, (RELEASE_FIELD,))
        for path in paths:
            node = values
            for part in path[:-1]:
                node = node.setdefault(part, {})
            if isinstance(node, dict) and node.get(path[-1]) is None:  # LeRobot's flag wins
                node[path[-1]] = ours.disable_torque_on_exit
        lr_config = decode(config_class, values, flag)
        release = getattr(lr_config, RELEASE_FIELD, None)
        if release is not None:
            if asked is not None and had_ours and bool(release) != ours.disable_torque_on_exit:
                raise ConfigError(
                    f"--robot.disable_torque_on_exit={ours.disable_torque_on_exit} and "
                    f"--robot.{RELEASE_FIELD}={release} disagree; give one of them"
                )
            ours.disable_torque_on_exit = bool(release)
        try:
            robot = lerobot.make_robot_from_config(lr_config)
        except (ValueError, TypeError, ImportError, OSError) as exc:
            raise ConfigError(f"{flag}: LeRobot cannot build it: {exc}") from None
        return cls(ours, robot, robot_type)

    def __str__(self) -> str:
        return f"{self.robot_type} {getattr(self.lerobot, 'id', None)!r}"

    # -- Robot interface ---------------------------------------------------------------------

    def camera_options(self) -> dict[str, dict[str, Any]]:
        return {}  # the LeRobot robot builds and reads its own cameras

    @property
    def joint_names(self) -> list[str]:
        return list(self._state_keys)

    @property
    def camera_shapes(self) -> dict[str, tuple[int, int, int]]:
        return dict(self._image_shapes)  # type: ignore[arg-type]

    @property
    def is_connected(self) -> bool:
        return self._connected

    def connect(self) -> None:
        """LeRobot's `connect(calibrate=False)`; an uncalibrated robot is refused."""
        if self._connected:
            raise RobotError(f"{self}: already connected")
        try:
            self.lerobot.connect(calibrate=False)
        except Exception as exc:  # LeRobot's own exception types, from foreign code
            self._disconnect_quietly()
            raise RobotError(f"{self}: connect failed: {exc}") from exc
        if not self.lerobot.is_calibrated:
            self._disconnect_quietly()
            path = getattr(self.lerobot, "calibration_fpath", "its calibration file")
            raise RobotError(
                f"{self} is not calibrated (no file at {path}, or the motors disagree with it); "
                f"asyncinf never calibrates interactively: run `lerobot-calibrate "
                f"--robot.type={self.robot_type.removeprefix(PREFIX)} …` with the same "
                "--robot.* flags first"
            )
        self._connected = True
        self._observation = None
        log.info("%s connected (LeRobot %s)", self, compat.load().version)

    def read_state(self) -> np.ndarray:
        self._require_connected()
        try:
            obs = self.lerobot.get_observation()
        except Exception as exc:  # LeRobot's own exception types, from foreign code
            raise RobotError(f"{self}: get_observation failed: {exc}") from exc
        try:
            state = np.array([obs[k] for k in self._state_keys], dtype=np.float32)
        except KeyError as exc:
            raise RobotError(f"{self}: its observation has no {exc}") from None
        self._observation = obs
        return state

    def read_images(self) -> dict[str, np.ndarray]:
        """The frames of the last `read_state()`'s observation (one reading: state and images
        are from the same instant)."""
        if self._observation is None:
            self.read_state()
        obs = self._observation
        assert obs is not None
        return {k: obs[k] for k in self._image_shapes}

    def send_action(self, target: np.ndarray) -> np.ndarray:
        """LeRobot's `send_action` with the targets by name; returns what it sent (after its
        own clamp), in our order."""
        self._require_connected()
        target = np.asarray(target, dtype=np.float64)
        if target.shape != (len(self._state_keys),):
            raise ActionRejected(
                f"{self}: action shape {target.shape}, expected ({len(self._state_keys)},)"
            )
        if not np.isfinite(target).all():
            raise ActionRejected(f"{self}: non-finite action {target.tolist()}")
        values = target.tolist()
        action = {k: values[i] for k, i in zip(self._action_keys, self._action_index, strict=True)}
        try:
            sent = self.lerobot.send_action(action)
        except Exception as exc:  # LeRobot's own exception types, from foreign code
            raise RobotError(f"{self}: send_action failed: {exc}") from exc
        try:
            return np.array([sent[k] for k in self._state_keys], dtype=np.float32)
        except KeyError as exc:
            raise RobotError(f"{self}: send_action did not report {exc} as sent") from None

    def disconnect(self) -> None:
        """LeRobot's `disconnect()`, which holds or releases as `disable_torque_on_exit` set
        it. Safe to call twice."""
        if not self._connected:
            return
        self._connected = False
        try:
            self.lerobot.disconnect()
        except Exception as exc:  # LeRobot's own exception types, from foreign code
            raise RobotError(f"{self}: disconnect failed: {exc}") from exc
        released = self.config.disable_torque_on_exit
        log.info("%s disconnected (%s)", self, "torque released" if released else "holding")

    # -- internals ---------------------------------------------------------------------------

    def _require_connected(self) -> None:
        if not self._connected:
            raise RobotError(f"{self} is not connected; call connect() first")

    def _disconnect_quietly(self) -> None:
        """After a failed connect: LeRobot does not undo a partial connect itself."""
        try:
            self.lerobot.disconnect()
        except Exception as exc:  # LeRobot's own exception types, from foreign code
            log.warning("%s: disconnect after a failed connect: %s", self, exc, exc_info=True)
