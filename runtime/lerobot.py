"""The LeRobot installation, as the robot and policy adapters both see it.

Whether LeRobot is installed (asked without importing it: the import takes seconds), its
version, and its third-party plugins registered once per process, the way LeRobot's own
clients do (`lerobot_robot_*`, `lerobot_camera_*`, `lerobot_policy_*` distributions).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
from functools import cache

from asyncinf.runtime.errors import ConfigError

# Renamed in LeRobot 0.4; the older name registered devices only.
_REGISTER_PLUGINS = ("register_third_party_plugins", "register_third_party_devices")


def installed() -> bool:
    return importlib.util.find_spec("lerobot") is not None


def version() -> str:
    return importlib.metadata.version("lerobot")


@cache
def register_plugins() -> None:
    """Import every installed LeRobot plugin so that it registers its types; once."""
    module = importlib.import_module("lerobot.utils.import_utils")
    for name in _REGISTER_PLUGINS:
        register = getattr(module, name, None)
        if register is not None:
            register()
            return
    raise ConfigError(f"this LeRobot has none of {_REGISTER_PLUGINS}: an unsupported version")
