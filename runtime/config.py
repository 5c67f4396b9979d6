"""Turning `--group.field=value` flags and config-file maps into validated dataclasses.

Values given as strings on the command line are parsed as YAML scalars or flow maps, so
`--robot.cameras='{front: {type: sim, width: 640}}'` and `--policy.latency_ms=100` both work.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from asyncinf.runtime.errors import ConfigError, FlagError

T = TypeVar("T")


def parse_value(text: str) -> Any:
    """A flag's text as YAML (numbers, booleans, null, flow maps and lists); else the string."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _coerce(value: Any, annotation: Any, flag: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], flag) if len(inner) == 1 else value
    if isinstance(value, str) and annotation is not str:
        value = parse_value(value)
    target = origin or annotation
    if target is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if target in (int, float, str, bool, dict, list) and not isinstance(value, target):
        raise ConfigError(f"{flag}={value!r}: expected {target.__name__}")
    if target is int and isinstance(value, bool):
        raise ConfigError(f"{flag}={value!r}: expected an integer")
    if target is tuple and isinstance(value, list):
        return tuple(value)
    return value


def refuse_unknown(
    given: dict[str, Any], known: set[str], error: type[ConfigError] = ConfigError
) -> None:
    """Raise `error` for the first name of `given` that is not `known`, with the closest."""
    for name in sorted(set(given) - known):
        close = difflib.get_close_matches(name, sorted(known), n=1)
        hint = f"; did you mean --{close[0]}?" if close else f"; known: {sorted(known)}"
        raise error(f"--{name} is not an option{hint}")


def group(options: dict[str, Any], name: str) -> dict[str, Any]:
    """Option group `name` (`robot`, `policy`, `shm`, …) as a map; {} when absent."""
    value = options.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(
            f"--{name}={value!r}: expected a map of --{name}.* options, e.g. "
            f"--{name}.NAME=VALUE on the command line or `{name}: {{NAME: VALUE}}` in a file"
        )
    return value


def writable_file(flag: str, path: str | os.PathLike[str]) -> None:
    """Refuse an output file that cannot be written before a run starts, not at its end:
    its folder must exist and be writable, and the path must not be a folder."""
    file = Path(path)
    folder = file.absolute().parent
    if file.is_dir():
        raise ConfigError(f"{flag}={path}: a folder; give a file name in it")
    if not folder.is_dir():
        raise ConfigError(f"{flag}={path}: no folder {folder}; create it first (mkdir -p)")
    if not os.access(folder, os.W_OK | os.X_OK) or (file.exists() and not os.access(file, os.W_OK)):
        raise ConfigError(f"{flag}={path}: not writable by this user; choose another place")


def build(cls: type[T], values: dict[str, Any], prefix: str = "") -> T:
    """Instantiate dataclass `cls` from `values`, naming the flag in every error."""
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    kwargs = {}
    for key, value in values.items():
        flag = f"--{prefix}{key}"
        if key not in known:
            raise ConfigError(f"{flag} is not an option of {cls.__name__}; known: {sorted(known)}")
        kwargs[key] = _coerce(value, hints[key], flag)
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{cls.__name__}: {exc}") from None


def parse_dotted_args(args: list[str]) -> dict[str, dict[str, str]]:
    """`["--robot.port=/dev/ttyACM0", "--policy.latency_ms", "100"]` → {group: {field: text}}.

    Typer has no dotted options; commands that take LeRobot-style `--group.field` flags
    collect them as extra arguments and pass them here. A flag without a group
    (`--resend_after_s=3`) lands in group "".
    """
    out: dict[str, dict[str, str]] = {}
    it = iter(args)
    for arg in it:
        name, eq, value = arg.partition("=")
        group, dot, key = name.removeprefix("--").partition(".")
        if not dot:
            group, key = "", group
        if not name.startswith("--") or not key or (dot and not group):
            raise FlagError(f"unexpected argument {arg!r}: expected --group.field=value")
        if not eq:
            value = next(it, None)
            if value is None or value.startswith("--"):
                raise FlagError(f"{name} needs a value: {name}=VALUE")
        out.setdefault(group, {})[key] = value
    return out


def load_file(path: str, flag: str = "--config") -> dict[str, Any]:
    """Read a YAML or TOML config file into a nested map; errors name it as `flag`."""
    try:
        with open(path, "rb") as f:  # noqa: PTH123
            if path.endswith(".toml"):
                import tomllib  # noqa: PLC0415  (Python >= 3.11)

                data = tomllib.load(f)
            else:
                data = yaml.safe_load(f)
    except OSError as exc:
        raise ConfigError(f"{flag} {path}: cannot read it ({exc.strerror})") from None
    except ImportError:
        raise ConfigError(f"{flag} {path}: TOML needs Python >= 3.11; use YAML") from None
    except (yaml.YAMLError, ValueError) as exc:  # tomllib.TOMLDecodeError is a ValueError
        raise ConfigError(f"{flag} {path}: not valid YAML/TOML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{flag} {path}: expected a map at the top level")
    return data
