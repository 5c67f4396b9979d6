"""Where LeRobot is not installed (the base install, this suite's venv), its policy types are
refused before any process starts (and at load) with the way to install it, and the robot
side never tries to import it."""

import importlib.util
import subprocess
import sys

import pytest

from asyncinf.policies.policy import POLICIES, make_policy
from asyncinf.runtime.errors import PolicyError
from asyncinf.runtime.messages import Handshake, PolicySpec


def test_this_environment_has_no_lerobot():
    assert importlib.util.find_spec("lerobot") is None  # tests/lerobot_env cover the other case


def test_a_lerobot_type_names_the_builtins_and_how_to_install_lerobot():
    hello = Handshake(["a.pos"], {}, PolicySpec("act", "/ckpt"), 30.0)
    with pytest.raises(PolicyError, match=r"'act' is not a built-in policy .*scripted") as info:
        make_policy(hello.policy, hello)
    assert "Serving a LeRobot checkpoint" in str(info.value)
    assert POLICIES.names() == ["fake", "scripted", "tiny_torch"]


def test_up_local_with_a_lerobot_type_is_a_config_error_before_any_process_starts(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "asyncinf.runtime.cli", "up", "--local", "--robot.type=fake",
         "--policy.type=act", f"--policy.path={tmp_path}", "--duration=3"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 78, r.stderr  # a missing extra, like grpcio's: no restart helps
    assert "need LeRobot installed" in r.stderr and "Traceback" not in r.stderr
    assert "server started" not in r.stderr
