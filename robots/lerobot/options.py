"""From `--robot.*` / `--robot.cameras.<name>.*` options to a LeRobot config dataclass.

LeRobot's configs are draccus dataclasses, so draccus decodes them: every field LeRobot's
own command line takes works here with the same name and meaning, nested ones too
(`--robot.cameras='{front: {type: intelrealsense, …}}'`, `--robot.left_arm_config.port=…`).
Flag values arrive as text: draccus turns scalar text into the field's type itself, but not
a flow map or list, which is parsed as YAML first (LeRobot's command line does the same).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from asyncinf.robots.lerobot import compat
from asyncinf.runtime.config import parse_value
from asyncinf.runtime.errors import ConfigError


def nest(options: Mapping[str, Any]) -> dict[str, Any]:
    """`{"left_arm_config.port": p}` -> `{"left_arm_config": {"port": p}}`, text maps parsed."""
    out: dict[str, Any] = {}
    for key, value in options.items():
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{key}: {part} is given both as a value and as a group")
            node = child
        parsed = value
        if isinstance(value, str) and value.lstrip()[:1] in ("{", "["):
            parsed = parse_value(value)
        if isinstance(node.get(leaf), dict) and isinstance(parsed, dict):
            parsed = {**parsed, **node[leaf]}  # dotted keys refine a map given whole
        node[leaf] = parsed
    return out


def decode(config_class: type, options: Mapping[str, Any], flag: str) -> Any:
    """`config_class` built from `options`; ConfigError with one line naming `flag`."""
    lerobot = compat.load()
    try:
        return lerobot.draccus.decode(config_class, nest(options))
    except (lerobot.draccus.utils.DecodingError, ValueError, TypeError) as exc:
        known = sorted(f.name for f in dataclasses.fields(config_class) if f.init)
        reason = " ".join(str(exc).split())  # draccus's messages span lines
        raise ConfigError(
            f"{flag}: {reason} (LeRobot's {config_class.__name__}: {known})"
        ) from None


def field_names(config_class: type) -> set[str]:
    return {f.name for f in dataclasses.fields(config_class) if f.init}
