"""A deterministic closed-loop trajectory (`--policy.type=scripted`), no model.

Each joint has a reference that moves on a sine: `center + amplitude·sin(2π·t/period + phase)`
with `t = timestep / fps` and a per-joint phase, so the arm visibly moves and every joint
differently. The chunk starts from the observed state and closes the gap to the reference
exponentially (time constant `converge_s`): action `k` of a chunk for timestep `t` is

    ref(t+k) + (state − ref(t)) · exp(−(k+1) / (converge_s·fps))

It depends on the observation only (state and timestep): the same observation gives the same
bytes, and a robot that lags or is pushed is pulled back onto the reference. Joints named
`gripper…` oscillate about 50 (LeRobot's 0..100 gripper range); others about 0.

`latency_ms` emulates a slow model: `predict_chunk` takes at least that long.

`disagreement` makes successive chunks disagree the way a real model's do: each chunk's
actions are shifted by its own offset per joint, uniform in ±disagreement (joint units),
drawn from `seed` and the chunk's timestep (so the same observation still gives the same
bytes). It supports real-time chunking the way the RTC hook asks (`Policy.supports_rtc`):
given the previous chunk's tail, action i is `w_i·tail[i] + (1 − w_i)·own[i]` with LeRobot's
prefix weights (`asyncinf.runtime.rtc.prefix_weights`: 1 over the first `inference_delay`
actions, then down to 0 at the execution horizon, or at the tail's end if that is sooner).
"""

from __future__ import annotations

import math
import time
from typing import Any, ClassVar

import numpy as np

from asyncinf.policies.policy import Policy
from asyncinf.runtime.errors import PolicyError, PolicyOptionError
from asyncinf.runtime.messages import Handshake, Observation, PolicySpec, RtcInput
from asyncinf.runtime.rtc import prefix_weights


def _number(options: dict[str, Any], name: str, low: float, allow_zero: bool) -> float:
    """A finite real option ≥ low (> low unless `allow_zero`), else PolicyOptionError naming it."""
    value = options[name]
    ok = (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (value >= low if allow_zero else value > low)
    )
    if not ok:
        bound = f">= {low:g}" if allow_zero else f"> {low:g}"
        raise PolicyOptionError(f"--policy.{name}={value!r}: must be a number {bound}")
    return float(value)


class ScriptedPolicy(Policy):
    """Sine references per joint, approached from the observed state; see the module docstring."""

    default_options = {
        "latency_ms": 0.0,  # predict_chunk takes at least this long (emulates a slow model)
        "period_s": 4.0,  # period of the references
        "amplitude": 30.0,  # joint units (degrees; gripper 0..100, capped at 50)
        "converge_s": 0.5,  # time constant of closing the gap between state and reference
        "fps": None,  # timestep rate; None: the client's fps from the handshake
        "disagreement": 0.0,  # per-chunk offset, uniform in ±this (joint units); 0: none
        "seed": 0,  # of the per-chunk offsets
    }
    supports_rtc = True

    # name -> (lower bound, bound included)
    _BOUNDS: ClassVar = {
        "latency_ms": (0.0, True),
        "period_s": (0.0, False),
        "amplitude": (0.0, True),
        "converge_s": (0.0, False),
        "fps": (0.0, False),
        "disagreement": (0.0, True),
    }

    @classmethod
    def check_options(cls, spec: PolicySpec) -> None:
        super().check_options(spec)
        options = {**cls.default_options, **spec.options}
        for name, (low, allow_zero) in cls._BOUNDS.items():
            if options[name] is not None:
                _number(options, name, low, allow_zero)
        seed = options["seed"]
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise PolicyOptionError(f"--policy.seed={seed!r}: must be an integer >= 0")

    def __init__(self, spec: PolicySpec, features: Handshake) -> None:
        super().__init__(spec, features)
        o = self.options
        self.latency_s = float(o["latency_ms"]) / 1e3  # all in range: check_options
        self.period_s = float(o["period_s"])
        amplitude = float(o["amplitude"])
        self.converge_s = float(o["converge_s"])
        self.disagreement = float(o["disagreement"])
        self.seed = int(o["seed"])
        if o["fps"] is None:
            if not (isinstance(features.fps, (int, float)) and features.fps > 0):
                raise PolicyError(
                    f"the client's fps ({features.fps!r}) is not > 0; give --policy.fps"
                )
            self.fps = float(features.fps)
        else:
            self.fps = float(o["fps"])
        if self.chunk_size < 1:
            raise PolicyError(f"--actions_per_chunk={self.chunk_size}: must be >= 1")
        grip = np.array([n.startswith("gripper") for n in self.joint_names])
        self._center = np.where(grip, 50.0, 0.0)
        self._amplitude = np.where(grip, min(amplitude, 50.0), amplitude)
        self._phase = np.arange(len(self.joint_names)) * (math.pi / 3)
        k = np.arange(self.chunk_size, dtype=np.float64)
        self._decay = np.exp(-(k + 1) / (self.converge_s * self.fps))[:, None]  # [T, 1]
        self._steps = k

    def reference(self, timesteps: np.ndarray) -> np.ndarray:
        """The reference of every joint at the given timesteps, float64 [len, A]."""
        t_s = np.asarray(timesteps, np.float64)[:, None] / self.fps
        return self._center + self._amplitude * np.sin(
            2 * math.pi * t_s / self.period_s + self._phase
        )

    def predict_chunk(self, inputs: Observation, rtc: RtcInput | None = None) -> np.ndarray:
        deadline = time.monotonic() + self.latency_s
        state = np.asarray(inputs.state, np.float64)
        if state.shape != (len(self.joint_names),):
            raise PolicyError(
                f"observation state has shape {state.shape}, expected ({len(self.joint_names)},)"
            )
        ref = self.reference(inputs.timestep + self._steps)
        actions = ref + (state - ref[0]) * self._decay
        if self.disagreement:
            rng = np.random.default_rng([self.seed, inputs.timestep])
            actions += rng.uniform(-self.disagreement, self.disagreement, len(self.joint_names))
        if rtc is not None and len(rtc.prev_chunk_left_over):
            tail = np.asarray(rtc.prev_chunk_left_over, np.float64)[: len(actions)]
            k = len(tail)
            w = prefix_weights(
                rtc.inference_delay,
                min(rtc.settings.execution_horizon, k),
                len(actions),
                rtc.settings.prefix_attention_schedule,
            )[:k, None]
            actions[:k] = w * tail + (1 - w) * actions[:k]
        actions = actions.astype(np.float32)
        # Emulated model time, measured from the call: the one place sleeping is the point.
        while (remaining := deadline - time.monotonic()) > 0:
            time.sleep(remaining)
        return actions
