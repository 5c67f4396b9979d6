"""`up --local --robots robots.yaml`: the robots one server drives, each by name.

    robots:
      - name: left
        type: sim
        options: {seed: 1}
      - name: right
        type: so101_follower
        options: {port: /dev/ttyACM0, id: right_arm}

`type` and `options` are what `--robot.type` and the other `--robot.*` flags take. Each robot
is checked here, before any process starts (its options built by its own config class), and a
bad file is refused in one line naming the robot and the field.
"""

from __future__ import annotations

import re
from typing import Any

from asyncinf.runtime.config import load_file
from asyncinf.runtime.errors import ConfigError
from asyncinf.runtime.supervise.specs import RobotSpec

_NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")
_KEYS = {"name", "type", "options"}
MAX_ROBOTS = 64


def load_robots(path: str) -> list[tuple[str, RobotSpec]]:
    """(name, robot) for each robot of the file, in order; ConfigError for a bad file."""
    data = load_file(path, "--robots")
    where = f"--robots {path}"
    robots = data.get("robots")
    if set(data) != {"robots"} or not isinstance(robots, list) or not robots:
        raise ConfigError(
            f"{where}: expected one key, `robots:`, holding a list of robots, each with "
            "name, type and options"
        )
    if len(robots) > MAX_ROBOTS:
        raise ConfigError(f"{where}: {len(robots)} robots; at most {MAX_ROBOTS} per server")
    out: list[tuple[str, RobotSpec]] = []
    for index, entry in enumerate(robots, 1):
        out.append(_robot(entry, f"{where}: robot {index}"))
    names = [name for name, _ in out]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(f"{where}: two robots are named {name!r}; give each its own name")
    return out


def _robot(entry: Any, where: str) -> tuple[str, RobotSpec]:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: {entry!r} is not a map of name, type and options")
    unknown = sorted(set(entry) - _KEYS)
    if unknown:
        raise ConfigError(f"{where}: {unknown[0]!r} is not a key; use name, type and options")
    name = entry.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(
            f"{where}: name={name!r}: give each robot a name of 1-32 letters, digits, - or _"
        )
    kind = entry.get("type")
    if not isinstance(kind, str) or not kind:
        raise ConfigError(f"{where} ({name}): type={kind!r}: give its --robot.type, e.g. sim")
    options = entry.get("options") or {}
    if not isinstance(options, dict):
        raise ConfigError(f"{where} ({name}): options={options!r}: expected a map of --robot.*")
    return name, RobotSpec(kind, dict(options))
