"""The LeRobot tests: real LeRobot code on tiny checkpoints built here, in LeRobot's own venv.

They run in the environment `scripts/lerobot_env.sh` builds (`.ci/run` does), never in the
main one: the main suite does not recurse into this folder (pyproject's norecursedirs), and
here LeRobot is imported at collection, so a missing LeRobot fails loudly instead of skipping.
No hub: HF_HUB_OFFLINE is set for this process and every child it starts.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import lerobot.policies  # noqa: F401  (fails collection where LeRobot is missing)
import pytest

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
