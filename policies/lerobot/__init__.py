"""LeRobot checkpoints as asyncinf policies: `--policy.type=act|diffusion|smolvla|pi0|…`.

Every type LeRobot's policy factory knows (policy plugins included) is served by one adapter,
`LeRobotPolicy`, loaded the way LeRobot loads a checkpoint: its config, its policy class, its
own pre/post processors. Nothing here imports LeRobot or torch until such a type is asked for,
and then only in the server process: the robot side never needs them.

- `compat.py`: the one place that knows where LeRobot's names live in each version;
- `checkpoint.py`: from `--policy.path` to a loaded policy and processors, with one-line errors;
- `policy.py`: the adapter (observation → LeRobot batch → chunk);
- `tiny.py`: tiny random checkpoints made at test time, for tests and trying a setup out.
"""

from __future__ import annotations

from typing import Any


def policy_class(name: str) -> Any:
    """The policy registry's fallback: LeRobotPolicy where LeRobot is installed (which
    checks, after the checkpoint's files and LeRobot's slow import, that it knows `name`)."""
    from asyncinf.policies.lerobot import compat  # noqa: PLC0415

    compat.require(name)
    from asyncinf.policies.lerobot.policy import LeRobotPolicy  # noqa: PLC0415

    return LeRobotPolicy
