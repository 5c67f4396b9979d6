"""LeRobot calibration files (location, format, round trip) and LeRobot's normalisation math.

Expected numbers are worked out by hand from LeRobot's `MotorsBus._normalize` /
`_unnormalize` formulas, written next to each case.
"""

import json

import pytest

from asyncinf.robots.feetech.calibration import (
    MotorCalibration,
    NormMode,
    calibration_candidates,
    calibration_from_dict,
    calibration_path,
    lerobot_calibration_root,
    load_calibration,
    normalize,
    save_calibration,
    unnormalize,
)
from asyncinf.runtime.errors import ConfigError

# As LeRobot writes it (draccus.dump(dict[str, MotorCalibration], indent=4)).
LEROBOT_FILE = """{
    "shoulder_pan": {
        "id": 1,
        "drive_mode": 0,
        "homing_offset": -1470,
        "range_min": 758,
        "range_max": 3292
    },
    "gripper": {
        "id": 6,
        "drive_mode": 0,
        "homing_offset": 1430,
        "range_min": 2023,
        "range_max": 3451
    }
}
"""

ENV = ("HF_LEROBOT_CALIBRATION", "HF_LEROBOT_HOME", "HF_HOME", "XDG_CACHE_HOME")


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return monkeypatch


def test_default_location_is_lerobots(clean_env, tmp_path):
    home = tmp_path / "home"
    assert lerobot_calibration_root() == home / ".cache/huggingface/lerobot/calibration"
    # LeRobot 0.4-0.6 keep both SO arms under one folder, named for their one class.
    assert calibration_path("so101_follower", "arm1") == (
        home / ".cache/huggingface/lerobot/calibration/robots/so_follower/arm1.json"
    )


@pytest.mark.parametrize("robot_type", ["so100_follower", "so101_follower"])
def test_so_follower_folder_first_then_the_older_one(clean_env, tmp_path, robot_type):
    clean_env.setenv("HF_LEROBOT_CALIBRATION", str(tmp_path / "cal"))
    robots = tmp_path / "cal" / "robots"
    assert calibration_candidates(robot_type, "a") == [
        robots / "so_follower" / "a.json",
        robots / robot_type / "a.json",
    ]
    older = robots / robot_type / "a.json"
    save_calibration(older, {"gripper": MotorCalibration(6, 0, 0, 1, 2)})
    assert calibration_path(robot_type, "a") == older  # only the pre-0.4 file exists
    newer = robots / "so_follower" / "a.json"
    save_calibration(newer, {"gripper": MotorCalibration(6, 0, 0, 1, 2)})
    assert calibration_path(robot_type, "a") == newer  # both: LeRobot 0.4+'s wins


def test_no_id_is_lerobots_none_file(clean_env, tmp_path):
    # LeRobot formats its default id None into the name; lerobot-calibrate without --robot.id
    # writes there.
    clean_env.setenv("HF_LEROBOT_CALIBRATION", str(tmp_path))
    assert calibration_path("so101_follower", None) == tmp_path / "robots/so_follower/None.json"


@pytest.mark.parametrize(
    ("env", "root"),
    [
        ({"XDG_CACHE_HOME": "/x"}, "/x/huggingface/lerobot/calibration"),
        ({"HF_HOME": "/hf", "XDG_CACHE_HOME": "/x"}, "/hf/lerobot/calibration"),
        ({"HF_LEROBOT_HOME": "/lr", "HF_HOME": "/hf"}, "/lr/calibration"),
        ({"HF_LEROBOT_CALIBRATION": "/cal", "HF_LEROBOT_HOME": "/lr"}, "/cal"),
    ],
)
def test_environment_overrides_in_lerobots_order(clean_env, env, root):
    for name, value in env.items():
        clean_env.setenv(name, value)
    assert str(lerobot_calibration_root()) == root
    assert str(calibration_path("so100_follower", "a")) == f"{root}/robots/so_follower/a.json"


def test_calibration_dir_flag_wins(clean_env, tmp_path):
    clean_env.setenv("HF_LEROBOT_CALIBRATION", "/cal")
    assert calibration_path("so101_follower", "a", str(tmp_path)) == tmp_path / "a.json"


def test_reads_a_file_written_by_lerobot(tmp_path):
    path = tmp_path / "arm.json"
    path.write_text(LEROBOT_FILE)
    cal = load_calibration(path)
    assert cal == {
        "shoulder_pan": MotorCalibration(1, 0, -1470, 758, 3292),
        "gripper": MotorCalibration(6, 0, 1430, 2023, 3451),
    }


def test_round_trip_writes_lerobots_layout(tmp_path):
    path = tmp_path / "robots" / "so101_follower" / "arm.json"
    cal = calibration_from_dict(json.loads(LEROBOT_FILE))
    save_calibration(path, cal)
    assert path.read_text() == LEROBOT_FILE
    assert load_calibration(path) == cal


def test_draccus_wrapped_files_are_accepted():
    wrapped = {"motors": json.loads(LEROBOT_FILE)}
    assert calibration_from_dict(wrapped) == calibration_from_dict(json.loads(LEROBOT_FILE))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "not valid JSON"),
        ("[]", "expected a map"),
        ('{"a": {"id": 1}}', "exactly the keys"),
        ('{"a": {"id": 1, "drive_mode": 0, "homing_offset": 0, "range_min": 1.5, "range_max": 2}}',
         "integer"),
        ('{"a": {"id": 1, "drive_mode": 0, "homing_offset": 0, "range_min": 9, "range_max": 9}}',
         "must be < range_max"),
    ],
)  # fmt: skip
def test_malformed_files_are_config_errors_naming_the_file(tmp_path, text, message):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_calibration(path)
    assert str(path) in str(info.value)


CAL = MotorCalibration(id=1, drive_mode=0, homing_offset=0, range_min=1000, range_max=3000)
INV = MotorCalibration(id=1, drive_mode=1, homing_offset=0, range_min=1000, range_max=3000)


@pytest.mark.parametrize(
    ("raw", "cal", "mode", "value"),
    [
        # RANGE_M100_100: ((clamp(raw) - min) / (max - min)) * 200 - 100, negated if drive_mode
        (2000, CAL, NormMode.RANGE_M100_100, 0.0),
        (1000, CAL, NormMode.RANGE_M100_100, -100.0),
        (2500, CAL, NormMode.RANGE_M100_100, 50.0),
        (500, CAL, NormMode.RANGE_M100_100, -100.0),  # clamped to range_min
        (2500, INV, NormMode.RANGE_M100_100, -50.0),
        # RANGE_0_100: ((clamp(raw) - min) / (max - min)) * 100, 100 - that if drive_mode
        (2500, CAL, NormMode.RANGE_0_100, 75.0),
        (2500, INV, NormMode.RANGE_0_100, 25.0),
        (3500, CAL, NormMode.RANGE_0_100, 100.0),
        # DEGREES: (raw - mid) * 360 / 4095, unclamped; LeRobot ignores drive_mode here
        (3000, CAL, NormMode.DEGREES, 1000 * 360 / 4095),
        (3000, INV, NormMode.DEGREES, 1000 * 360 / 4095),
        (4000, CAL, NormMode.DEGREES, 2000 * 360 / 4095),
    ],
)
def test_normalize_matches_lerobot(raw, cal, mode, value):
    assert normalize(raw, cal, mode) == pytest.approx(value, abs=1e-12)


@pytest.mark.parametrize(
    ("value", "cal", "mode", "raw"),
    [
        # RANGE_M100_100: int(((clamp(v) + 100) / 200) * (max - min) + min)
        (50.0, CAL, NormMode.RANGE_M100_100, 2500),
        (-100.0, CAL, NormMode.RANGE_M100_100, 1000),
        (150.0, CAL, NormMode.RANGE_M100_100, 3000),
        (-50.0, INV, NormMode.RANGE_M100_100, 2500),
        # int() truncates: ((33.3 + 100) / 200) * 2534 + 758 = 2446.91 -> 2446
        (33.3, MotorCalibration(1, 0, 0, 758, 3292), NormMode.RANGE_M100_100, 2446),
        # RANGE_0_100: int((clamp(v) / 100) * (max - min) + min), v -> 100 - v if drive_mode
        (75.0, CAL, NormMode.RANGE_0_100, 2500),
        (75.0, INV, NormMode.RANGE_0_100, 1500),
        (-5.0, CAL, NormMode.RANGE_0_100, 1000),
        # DEGREES: int(v * 4095 / 360 + mid); 87.9° -> 2999.97 -> 2999
        (0.0, CAL, NormMode.DEGREES, 2000),
        (87.9, CAL, NormMode.DEGREES, 2999),
        (-87.9, CAL, NormMode.DEGREES, 1000),  # 1000.03 -> 1000
    ],
)
def test_unnormalize_matches_lerobot(value, cal, mode, raw):
    assert unnormalize(value, cal, mode) == raw


@pytest.mark.parametrize("mode", list(NormMode))
@pytest.mark.parametrize("cal", [CAL, INV])
def test_round_trip_within_one_step(mode, cal):
    for raw in range(1000, 3001, 37):
        value = normalize(raw, cal, mode)
        back = unnormalize(value, cal, mode)
        assert abs(back - raw) <= 1
