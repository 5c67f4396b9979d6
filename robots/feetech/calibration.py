"""LeRobot's calibration files and joint normalisation, byte- and float-compatible with it.

A calibration file is JSON, one entry per motor, in LeRobot's default location
``$HF_LEROBOT_CALIBRATION/robots/<folder>/<robot_id>.json``, where
``HF_LEROBOT_CALIBRATION`` defaults to ``$HF_LEROBOT_HOME/calibration``, ``HF_LEROBOT_HOME``
to ``$HF_HOME/lerobot`` and ``HF_HOME`` to ``$XDG_CACHE_HOME/huggingface`` (``~/.cache``).
The folder is the LeRobot robot class's `name`: LeRobot 0.4 to 0.6 drive SO-100 and SO-101
with one class named ``so_follower``, so by default
``~/.cache/huggingface/lerobot/calibration/robots/so_follower/<id>.json``; LeRobot before 0.4
wrote ``so100_follower/`` or ``so101_follower/``, read when the newer file is absent::

    {"shoulder_pan": {"id": 1, "drive_mode": 0, "homing_offset": -1470,
                      "range_min": 758, "range_max": 3292}, ...}

Reading the same file means a user who calibrated with `lerobot-calibrate` need not
recalibrate. The normalisation functions copy LeRobot's `MotorsBus._normalize` /
`_unnormalize` (including the `int()` truncation), so positions read and written here are
the numbers LeRobot policies were trained on.
"""

from __future__ import annotations

import enum
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from asyncinf.runtime.errors import ConfigError


class NormMode(str, enum.Enum):
    """LeRobot's `MotorNormMode`: the unit of a joint's value in states and actions."""

    RANGE_0_100 = "range_0_100"
    RANGE_M100_100 = "range_m100_100"
    DEGREES = "degrees"


@dataclass(frozen=True)
class MotorCalibration:
    """LeRobot's `MotorCalibration`; raw encoder steps in the servo's Present_Position frame."""

    id: int
    drive_mode: int
    homing_offset: int
    range_min: int
    range_max: int


def lerobot_calibration_root() -> Path:
    """LeRobot's `HF_LEROBOT_CALIBRATION`, resolved from the environment as LeRobot does."""
    explicit = os.environ.get("HF_LEROBOT_CALIBRATION")
    if explicit:
        return Path(explicit).expanduser()
    home = os.environ.get("HF_LEROBOT_HOME")
    if home:
        return Path(home).expanduser() / "calibration"
    cache = os.environ.get("XDG_CACHE_HOME", "~/.cache")
    hf_home = os.environ.get("HF_HOME", str(Path(cache) / "huggingface"))
    return Path(hf_home).expanduser() / "lerobot" / "calibration"


# Folders under `…/calibration/robots/` to look in, newest LeRobot first. LeRobot ≥ 0.4 names
# the folder after its one SO class (`so_follower`) whatever the type; older LeRobot used the
# type. A type not listed has one folder, its own name.
CALIBRATION_FOLDERS = {
    "so100_follower": ("so_follower", "so100_follower"),
    "so101_follower": ("so_follower", "so101_follower"),
}


def calibration_candidates(
    robot_type: str, robot_id: str | None, calibration_dir: str | None = None
) -> list[Path]:
    """The files that may hold this robot's calibration, in the order they are tried:
    `calibration_dir/<id>.json` alone when given, else LeRobot's default folders.

    A robot id of None is the file `None.json`: LeRobot formats its default id (None) into
    the name, so that is where `lerobot-calibrate` without `--robot.id` writes.
    """
    name = f"{robot_id}.json"
    if calibration_dir:
        return [Path(calibration_dir).expanduser() / name]
    root = lerobot_calibration_root() / "robots"
    return [root / folder / name for folder in CALIBRATION_FOLDERS.get(robot_type, (robot_type,))]


def calibration_path(
    robot_type: str, robot_id: str | None, calibration_dir: str | None = None
) -> Path:
    """The file to read for this robot: the first candidate that exists, else the first one
    (where current LeRobot would write it)."""
    candidates = calibration_candidates(robot_type, robot_id, calibration_dir)
    return next((p for p in candidates if p.is_file()), candidates[0])


def load_calibration(path: Path) -> dict[str, MotorCalibration]:
    """Read a LeRobot calibration file. Raises ConfigError naming the file and what is wrong."""
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"calibration file {path}: cannot read it ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"calibration file {path}: not valid JSON ({exc})") from None
    return calibration_from_dict(data, str(path))


def calibration_from_dict(data: object, where: str = "calibration") -> dict[str, MotorCalibration]:
    # draccus-era files wrap the motors in {"motors": {...}}; accept both shapes.
    if isinstance(data, dict) and set(data) == {"motors"} and isinstance(data["motors"], dict):
        data = data["motors"]
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"{where}: expected a map of motor name -> calibration")
    names = [f.name for f in fields(MotorCalibration)]
    out = {}
    for motor, entry in data.items():
        if not isinstance(entry, dict) or set(entry) != set(names):
            raise ConfigError(f"{where}: motor {motor!r} needs exactly the keys {names}")
        if not all(isinstance(entry[k], int) and not isinstance(entry[k], bool) for k in names):
            raise ConfigError(f"{where}: motor {motor!r}: every value must be an integer")
        cal = MotorCalibration(**{k: entry[k] for k in names})
        if cal.range_min >= cal.range_max:
            raise ConfigError(
                f"{where}: motor {motor!r}: range_min {cal.range_min} must be < "
                f"range_max {cal.range_max}; recalibrate this arm"
            )
        out[motor] = cal
    return out


def save_calibration(path: Path, calibration: Mapping[str, MotorCalibration]) -> None:
    """Write in LeRobot's layout (indent 4, motors in order), creating the directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {motor: asdict(cal) for motor, cal in calibration.items()}
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(body, indent=4) + "\n")
    tmp.replace(path)


def _range(cal: MotorCalibration) -> tuple[int, int]:
    """(range_min, range_max); an empty range maps nothing (LeRobot's check, both ways)."""
    if cal.range_max == cal.range_min:
        raise ValueError(f"invalid calibration for motor id {cal.id}: min and max are equal")
    return cal.range_min, cal.range_max


def normalize(raw: float, cal: MotorCalibration, mode: NormMode, resolution: int = 4096) -> float:
    """Raw Present_Position steps -> joint value (LeRobot's `_normalize`)."""
    min_, max_ = _range(cal)
    drive_mode = cal.drive_mode
    if mode is NormMode.RANGE_M100_100:
        bounded = min(max_, max(min_, raw))
        norm = (((bounded - min_) / (max_ - min_)) * 200) - 100
        return -norm if drive_mode else norm
    if mode is NormMode.RANGE_0_100:
        bounded = min(max_, max(min_, raw))
        norm = ((bounded - min_) / (max_ - min_)) * 100
        return 100 - norm if drive_mode else norm
    if mode is NormMode.DEGREES:
        mid = (min_ + max_) / 2
        return (raw - mid) * 360 / (resolution - 1)
    raise NotImplementedError(mode)


def unnormalize(value: float, cal: MotorCalibration, mode: NormMode, resolution: int = 4096) -> int:
    """Joint value -> raw Goal_Position steps (LeRobot's `_unnormalize`, `int()` included)."""
    min_, max_ = _range(cal)
    drive_mode = cal.drive_mode
    if mode is NormMode.RANGE_M100_100:
        value = -value if drive_mode else value
        bounded = min(100.0, max(-100.0, value))
        return int(((bounded + 100) / 200) * (max_ - min_) + min_)
    if mode is NormMode.RANGE_0_100:
        value = 100 - value if drive_mode else value
        bounded = min(100.0, max(0.0, value))
        return int((bounded / 100) * (max_ - min_) + min_)
    if mode is NormMode.DEGREES:
        mid = (min_ + max_) / 2
        return int((value * (resolution - 1) / 360) + mid)
    raise NotImplementedError(mode)
