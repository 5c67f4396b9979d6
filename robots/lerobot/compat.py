"""Where LeRobot keeps its robots and cameras, in 0.4.x and 0.5+/0.6.x.

Everything the device adapters take from LeRobot is imported here, once. LeRobot registers a
robot or camera type when the module holding its config class is imported, so every
subpackage of `lerobot.robots` and `lerobot.cameras` is imported (one whose SDK is missing,
e.g. RealSense without `pyrealsense2`, is skipped: its type stays unknown), then the
third-party plugins, found the way LeRobot's robot client finds them
(`register_third_party_plugins`: every installed distribution named `lerobot_robot_*`,
`lerobot_camera_*`, …). Never import `lerobot.async_inference`: it configures the root
logger and writes `./logs/` on import.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import logging
import pkgutil
import time
from dataclasses import dataclass
from functools import cache
from typing import Any

from asyncinf.runtime import lerobot as installation
from asyncinf.runtime.errors import ConfigError

log = logging.getLogger(__name__)

INSTALL_HINT = "see the README's 'A LeRobot robot or camera' (scripts/lerobot_env.sh builds one)"


@dataclass(frozen=True)
class LeRobotDevices:
    """The LeRobot names the robot and camera adapters use."""

    version: str
    RobotConfig: Any
    CameraConfig: Any
    make_robot_from_config: Any
    make_cameras_from_configs: Any
    draccus: Any


def _import_subpackages(package: str) -> None:
    parent = importlib.import_module(package)
    for info in pkgutil.iter_modules(parent.__path__):
        if not info.ispkg:
            continue
        try:
            importlib.import_module(f"{package}.{info.name}")
        except (ImportError, OSError) as exc:  # an optional SDK (or its library) is missing
            log.debug("LeRobot's %s.%s does not import: %s", package, info.name, exc)


@cache
def load() -> LeRobotDevices:
    """Import LeRobot's robots, cameras and device plugins (seconds: it imports torch)."""
    if not installation.installed():
        raise ConfigError("LeRobot robot and camera types need LeRobot installed; " + INSTALL_HINT)
    version = installation.version()
    log.info("importing LeRobot %s's robots and cameras", version)
    t0 = time.monotonic()
    try:
        import draccus  # noqa: PLC0415
        from lerobot.cameras import CameraConfig, make_cameras_from_configs  # noqa: PLC0415
        from lerobot.robots import RobotConfig, make_robot_from_config  # noqa: PLC0415

        _import_subpackages("lerobot.robots")
        _import_subpackages("lerobot.cameras")
    except ImportError as exc:
        raise ConfigError(f"LeRobot {version} does not import: {exc}; " + INSTALL_HINT) from None
    installation.register_plugins()
    log.info("LeRobot %s's devices imported in %.1f s", version, time.monotonic() - t0)
    return LeRobotDevices(
        version=version,
        RobotConfig=RobotConfig,
        CameraConfig=CameraConfig,
        make_robot_from_config=make_robot_from_config,
        make_cameras_from_configs=make_cameras_from_configs,
        draccus=draccus,
    )


def _check(kind: str, name: str, builtins: list[str], registry: str, examples: str) -> None:
    if not installation.installed():
        raise ConfigError(
            f"--{kind}.type={name!r} is not a built-in {kind} ({builtins}); LeRobot's {kind} "
            f"types ({examples}, plugins) need LeRobot installed in the client's environment; "
            + INSTALL_HINT
        )
    known = sorted(getattr(load(), registry).get_known_choices())
    if name not in known:
        raise ConfigError(
            f"--{kind}.type={name!r} is neither a built-in {kind} ({builtins}) nor one "
            f"LeRobot {load().version} knows ({known})"
        )


def check_robot_type(name: str) -> None:
    """Raise ConfigError unless LeRobot (installed) knows robot type `name`."""
    from asyncinf.robots.robot import ROBOTS  # noqa: PLC0415

    _check("robot", name, ROBOTS.names(), "RobotConfig", "koch_follower, bi_so_follower, lekiwi")


def check_camera_type(name: str) -> None:
    """Raise ConfigError unless LeRobot (installed) knows camera type `name`."""
    from asyncinf.robots.camera import CAMERAS  # noqa: PLC0415

    _check("camera", name, CAMERAS.names(), "CameraConfig", "intelrealsense, zmq")
