"""A policy that fails on demand, for testing error paths end to end (`--policy.type=fake`).

Its actions repeat the observed state (the robot holds), so it is safe on real hardware too.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from asyncinf.policies.policy import Policy
from asyncinf.runtime.errors import PolicyError
from asyncinf.runtime.messages import Handshake, Observation, PolicySpec


class FakePolicy(Policy):
    default_options = {
        "fail_on_load": False,  # raise in the constructor (a boot error)
        "load_s": 0.0,  # take this long to load, like a large checkpoint
        "fail_every": 0,  # raise on every n-th prediction (0: never)
        "nan_every": 0,  # return a NaN action on every n-th prediction (0: never)
        "latency_ms": 0.0,
        "history": False,  # claim an observation history per robot (one session at a time)
    }

    @property
    def keeps_session_state(self) -> bool:
        return bool(self.options["history"])

    def __init__(self, spec: PolicySpec, features: Handshake) -> None:
        super().__init__(spec, features)
        time.sleep(self.options["load_s"])  # stands in for reading weights
        if self.options["fail_on_load"]:
            raise PolicyError("fake policy: failing at load as asked (--policy.fail_on_load)")
        self.calls = 0
        self._warming = False

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
        actions = np.tile(inputs.state, (self.chunk_size, 1))
        if self.options["nan_every"] and self.calls % self.options["nan_every"] == 0:
            actions[0, 0] = np.nan
        return actions

    def reset(self) -> None:
        self.calls = 0
