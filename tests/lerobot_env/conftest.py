"""The LeRobot tests: real LeRobot code on tiny checkpoints built here, in LeRobot's own venv.

They run in the environment `scripts/lerobot_env.sh` builds (`.ci/run` does), never in the
main one: the main suite does not recurse into this folder (pyproject's norecursedirs), and
here LeRobot is imported at collection, so a missing LeRobot fails loudly instead of skipping.
No hub: HF_HUB_OFFLINE is set for this process and every child it starts.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
# LeRobot reads its calibration root once, at import, and its robots create their folder in
# it: keep both out of the home folder, for this process and its children (removed after).
os.environ["HF_LEROBOT_CALIBRATION"] = f"{tempfile.gettempdir()}/asyncinf-lerobot-cal-{os.getpid()}"

import lerobot.policies  # noqa: F401  (fails collection where LeRobot is missing)
import pytest
from lerobot_plugins import install

from asyncinf.policies.lerobot.tiny import make_tiny_checkpoint

JOINTS = [
    f"{m}.pos"
    for m in ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")
]  # fmt: skip  (the sim arm's)


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory) -> dict:
    """One tiny checkpoint per kind, for a 6-joint arm with one 96x128 camera "front"."""
    root = tmp_path_factory.mktemp("checkpoints")
    return {
        kind: make_tiny_checkpoint(kind, root / kind) for kind in ("act", "diffusion", "smolvla")
    }


CALIBRATION_ROOT = Path(os.environ["HF_LEROBOT_CALIBRATION"])


@pytest.fixture(scope="session", autouse=True)
def robot_plugins(tmp_path_factory) -> Path:
    """The robot plugins of lerobot_plugins.py installed for this session and its children, in a
    folder on sys.path and PYTHONPATH. Session-wide and first: LeRobot's registries are read
    once per process. Removed after."""
    root = install(tmp_path_factory.mktemp("site"))
    old_path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), old_path) if p)
    sys.path.insert(0, str(root))
    yield root
    sys.path.remove(str(root))
    if old_path is None:
        os.environ.pop("PYTHONPATH")
    else:
        os.environ["PYTHONPATH"] = old_path
    shutil.rmtree(root)
    shutil.rmtree(CALIBRATION_ROOT, ignore_errors=True)  # absent when no test made it
