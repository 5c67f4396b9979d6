"""Newest-wins observation slots, client → server.

Three roles among at least three slots: the one the client writes, the newest published
(`obs_latest`), and the one the server holds (`obs_leased`). The client writes only a slot
that is neither, so a leased frame is never overwritten however many newer ones arrive, and
the client never waits for the server.

Why the client may choose its next slot right after publishing (under the same lock): the
server can only lease `obs_latest`, which the client just set to another slot, or release.
So a slot that was neither latest nor leased then stays unleased until the client's next
publish. Every method must be called with the up-lock held.
"""

from __future__ import annotations

from asyncinf.transports.shm.layout import (
    NONE,
    W_OBS_LATEST,
    W_OBS_LEASED,
    W_OBS_SEQ,
    Area,
)


class ObsSlots:
    __slots__ = ("_words", "area", "slots", "views")

    def __init__(self, words: memoryview, raw: memoryview, area: Area) -> None:
        self._words = words
        self.area = area
        self.slots = area.slots
        self.views = [
            raw[area.slot_offset(i) : area.slot_offset(i) + area.slot_bytes]
            for i in range(area.slots)
        ]

    # --- client ----------------------------------------------------------------------------

    def free_slot(self) -> int:
        """A slot that is neither the newest published nor leased."""
        w = self._words
        latest, leased = w[W_OBS_LATEST], w[W_OBS_LEASED]
        for i in range(self.slots):
            if i not in (latest, leased):
                return i
        raise AssertionError("unreachable with >= 3 slots")

    def publish(self, slot: int, nbytes: int, sent_ns: int) -> int:
        """Make the frame written in `slot` the newest; returns the next slot to write."""
        w = self._words
        seq = w[W_OBS_SEQ] + 1
        entry = self.area.entry(slot)
        w[entry] = nbytes
        w[entry + 1] = sent_ns
        w[entry + 2] = seq
        w[W_OBS_SEQ] = seq
        w[W_OBS_LATEST] = slot
        return self.free_slot()

    # --- server ----------------------------------------------------------------------------

    def seq(self) -> int:
        return self._words[W_OBS_SEQ]

    def take_newest(self, seen_seq: int) -> tuple[int, int, int] | None:
        """Lease the newest frame if it is newer than `seen_seq`: (slot, nbytes, seq)."""
        w = self._words
        seq = w[W_OBS_SEQ]
        latest = w[W_OBS_LATEST]
        if seq <= seen_seq or latest == NONE:
            return None
        w[W_OBS_LEASED] = latest
        return latest, w[self.area.entry(latest)], seq

    def release(self, slot: int) -> None:
        w = self._words
        if w[W_OBS_LEASED] == slot:
            w[W_OBS_LEASED] = NONE
