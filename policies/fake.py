"""A policy that fails on demand, for testing error paths end to end (`--policy.type=fake`).

Its actions repeat the observed state (the robot holds), so it is safe on real hardware too.
With `--policy.history=true` they are the mean of the last HISTORY observed states instead (a
robot's observation history, the first observation filling it, as LeRobot's Diffusion does):
what it returns shows whose history it saw.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import numpy as np

from asyncinf.policies.policy import Policy
from asyncinf.runtime.errors import PolicyError
from asyncinf.runtime.messages import Handshake, Observation, PolicySpec

HISTORY = 2  # states kept with --policy.history (Diffusion's default n_obs_steps)


class FakePolicy(Policy):
    default_options = {
        "fail_on_load": False,  # raise in the constructor (a boot error)
        "load_s": 0.0,  # take this long to load, like a large checkpoint
        "fail_every": 0,  # raise on every n-th prediction (0: never)
        "nan_every": 0,  # return a NaN action on every n-th prediction (0: never)
        "latency_ms": 0.0,
        "history": False,  # keep an observation history per robot (see above)
    }

    @property
    def keeps_session_state(self) -> bool:
        return bool(self.options["history"])

    def session_state(self) -> Any:
        return self._history

    def restore_session_state(self, state: Any) -> None:
        self._history = deque(maxlen=HISTORY) if state is None else state

    def __init__(self, spec: PolicySpec, features: Handshake) -> None:
        super().__init__(spec, features)
        time.sleep(self.options["load_s"])  # stands in for reading weights
        if self.options["fail_on_load"]:
            raise PolicyError("fake policy: failing at load as asked (--policy.fail_on_load)")
        self.calls = 0
        self._warming = False
        self._history: deque[np.ndarray] = deque(maxlen=HISTORY)

    def warmup(self) -> None:
        """Warm-up never fails: fail_every/nan_every count the calls that serve clients."""
        self._warming = True
        try:
            super().warmup()
        finally:
            self._warming = False

    def predict_chunk(self, inputs: Observation) -> Any:
        if self._warming:
            return np.tile(inputs.state, (self.chunk_size, 1))
        self.calls += 1
        if self.options["latency_ms"]:
            time.sleep(self.options["latency_ms"] / 1000)  # stands in for model compute
        if self.options["fail_every"] and self.calls % self.options["fail_every"] == 0:
            raise RuntimeError(f"fake policy: failing call {self.calls} as asked")
        state = np.asarray(inputs.state, np.float32)
        if self.keeps_session_state:
            if self._history:
                self._history.append(state)
            else:  # a new session: its first observation fills the history
                self._history.extend([state] * HISTORY)
            state = np.mean(self._history, axis=0)
        actions = np.tile(state, (self.chunk_size, 1))
        if self.options["nan_every"] and self.calls % self.options["nan_every"] == 0:
            actions[0, 0] = np.nan
        return actions

    def reset(self) -> None:
        self.calls = 0
        self._history.clear()
