"""The client's action queue, keyed by timestep (DESIGN §3).

The queue always holds the contiguous actions for timesteps `next_timestep … end-1`. A chunk
for `t0 … t0+T-1` arriving later: actions for timesteps already executed (< next_timestep)
are dropped, those overlapping queued ones are blended by the aggregate function, the rest
are appended. Nothing else is thrown away — in particular not a chunk's first action.

With real-time chunking the chunk already agrees with what was queued, so it *replaces* the
queue from `next_timestep` on (`replace`): how far into the chunk that is comes from the
timesteps, i.e. the true number of actions executed since its observation, never from the
delay the observation announced.
"""

from __future__ import annotations

import numpy as np

from asyncinf.runtime.aggregate import AggregateFn


class ActionQueue:
    def __init__(self, num_joints: int, aggregate: AggregateFn, capacity: int = 4096) -> None:
        self._buf = np.zeros((capacity, num_joints), np.float32)
        self._aggregate = aggregate
        self.next_timestep = 0  # the next action to execute
        self._len = 0
        self.stale_dropped = 0  # actions that arrived for timesteps already executed

    def __len__(self) -> int:
        return self._len

    def merge(self, t0: int, actions: np.ndarray) -> None:
        """Fold in a chunk whose first action is for timestep `t0`."""
        skip = self.next_timestep - t0
        if skip > 0:
            self.stale_dropped += min(skip, len(actions))
            actions, t0 = actions[skip:], self.next_timestep
        if len(actions) == 0:
            return
        start = t0 - self.next_timestep  # index of t0 in the queue (>= 0)
        if start > self._len:
            # A gap between the queue's end and the chunk cannot be executed in order: the
            # chunk starts the queue afresh at its own timestep. This only happens when the
            # caller jumps next_timestep, e.g. after a reset.
            self._len, self.next_timestep, start = 0, t0, 0
        overlap = min(self._len - start, len(actions))
        if overlap > 0:
            q = self._buf[start : start + overlap]
            q[:] = self._aggregate(q, actions[:overlap])
        tail = actions[overlap:]
        end = start + overlap + len(tail)
        if end > len(self._buf):
            grown = np.zeros((max(end, 2 * len(self._buf)), self._buf.shape[1]), np.float32)
            grown[: self._len] = self._buf[: self._len]
            self._buf = grown
        self._buf[start + overlap : end] = tail
        self._len = max(self._len, end)

    def replace(self, t0: int, actions: np.ndarray) -> None:
        """The queue becomes the chunk for `t0 …` from `next_timestep` on (RTC)."""
        skip = self.next_timestep - t0  # actions executed since the chunk's observation
        if skip < 0:  # a chunk for a later timestep: only after a reset, as in merge()
            self.next_timestep, skip = t0, 0
        self.stale_dropped += min(skip, len(actions))
        rest = actions[skip:]
        if len(rest) == 0:  # all of it ran already: keep what is queued
            return
        if len(rest) > len(self._buf):
            grown = max(len(rest), 2 * len(self._buf))
            self._buf = np.zeros((grown, self._buf.shape[1]), np.float32)
        self._buf[: len(rest)] = rest
        self._len = len(rest)

    def peek(self) -> np.ndarray | None:
        """The action for `next_timestep` (a view), or None when empty."""
        return self._buf[0] if self._len else None

    def queued(self) -> np.ndarray:
        """A copy of the actions for `next_timestep …`, float32 [len, A]."""
        return self._buf[: self._len].copy()

    def clear(self) -> None:
        """Drop every queued action (the server that computed them is gone)."""
        self._len = 0

    def pop(self) -> np.ndarray | None:
        """The action for `next_timestep` (advancing it), or None when empty (idle frame)."""
        if self._len == 0:
            return None
        action = self._buf[0].copy()
        # Shifting a few KiB per tick is cheaper than the bookkeeping of a ring here.
        self._buf[: self._len - 1] = self._buf[1 : self._len]
        self._len -= 1
        self.next_timestep += 1
        return action
