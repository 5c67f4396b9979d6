"""The simulated arm's model: its joints and limits, its kinematic chain, its dynamics.

Joints track the commanded target with first-order dynamics (time constant `tau_s`) under a
velocity limit (`max_velocity`), integrated in closed form over the time that elapsed since
the previous step: the result does not depend on how often the loop calls, so a 30 Hz and a
200 Hz loop see the same arm. The chain says which joints pitch, pan, roll and grip, for the
cameras' drawing and for where gravity takes a released arm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# LeRobot's SO-101 follower joints, in degrees (gripper: 0 closed .. 100 open).
SO101_JOINTS = (
    "shoulder_pan.pos",
    "shoulder_lift.pos",
    "elbow_flex.pos",
    "wrist_flex.pos",
    "wrist_roll.pos",
    "gripper.pos",
)
# Roughly the calibrated ranges of an SO-101 in LeRobot's degree mode.
SO101_LIMITS = {
    "shoulder_pan.pos": (-110.0, 110.0),
    "shoulder_lift.pos": (-100.0, 100.0),
    "elbow_flex.pos": (-100.0, 100.0),
    "wrist_flex.pos": (-100.0, 100.0),
    "wrist_roll.pos": (-160.0, 160.0),
    "gripper.pos": (0.0, 100.0),
}
GENERIC_LIMITS = (-180.0, 180.0)


def joint_names_for(num_joints: int) -> list[str]:
    """SO-101 names for 6 joints, `joint_{i}.pos` otherwise."""
    if num_joints == len(SO101_JOINTS):
        return list(SO101_JOINTS)
    return [f"joint_{i}.pos" for i in range(num_joints)]


def track(
    x: np.ndarray, target: np.ndarray, dt_s: float, tau_s: float, max_velocity: float
) -> np.ndarray:
    """Positions after `dt_s` of dx/dt = clip((target - x) / tau, ±max_velocity), exactly.

    Far from the target (|e| > max_velocity·tau) a joint moves at the velocity limit until
    |e| = max_velocity·tau, then decays exponentially; solving each phase in closed form keeps
    the result independent of the step size.
    """
    e = target - x
    d = np.abs(e)
    knee = max_velocity * tau_s
    t_linear = np.maximum(d - knee, 0.0) / max_velocity  # time spent at the limit
    t_exp = np.maximum(dt_s - t_linear, 0.0)
    d_after = np.where(
        dt_s <= t_linear,
        d - max_velocity * dt_s,
        np.minimum(d, knee) * np.exp(-t_exp / tau_s),
    )
    return target - np.sign(e) * d_after


@dataclass(frozen=True)
class Chain:
    """How joint values map to the side view: which joints pitch, pan, roll, grip."""

    pitch: tuple[int, ...]  # indices of pitch joints, base to tip
    offsets_deg: tuple[float, ...]  # per pitch joint: added to its value (pose at zero)
    lengths: tuple[float, ...]  # per pitch joint: its link, as a fraction of min(H, W)
    pan: int | None = None
    roll: int | None = None
    gripper: int | None = None

    @staticmethod
    def for_joints(names: list[str]) -> Chain:
        if tuple(names) == SO101_JOINTS:
            # Zero pose: upper arm up, forearm and wrist forward (an arm reaching out).
            return Chain((1, 2, 3), (0.0, 90.0, 0.0), (0.25, 0.22, 0.08), pan=0, roll=4, gripper=5)
        n = len(names)
        return Chain(tuple(range(n)), (0.0,) + (20.0,) * (n - 1), (0.62 / n,) * n)

    def absolute_deg(self, q: np.ndarray) -> list[float]:
        """Each pitch link's angle from vertical-up, clockwise (towards +x in the image)."""
        out, theta = [], 0.0
        for i, off in zip(self.pitch, self.offsets_deg, strict=True):
            theta += float(q[i]) + off
            out.append(theta)
        return out

    def hanging(self, q: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Where gravity takes a released arm: each pitch link as close to straight down as
        its limits allow, falling towards the side it already leans to."""
        goal = q.copy()
        parent = 0.0
        for k, (i, off) in enumerate(zip(self.pitch, self.offsets_deg, strict=True)):
            now = self.absolute_deg(goal)[k]
            down = now - (now % 360.0 - 180.0)  # the nearest straight-down angle
            goal[i] = np.clip(down - parent - off, lo[i], hi[i])
            parent += float(goal[i]) + off
        return goal
