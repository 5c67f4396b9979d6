"""Newest-wins observation slots, client → server.

Three roles among at least three slots: the one the client writes, the newest published
(`obs_latest`), and the one the server holds (`obs_leased`). The client writes only a slot
that is neither, so a leased frame is never overwritten however many newer ones arrive, and
the client never waits for the server.

One exception keeps the client's writes cache-warm: once the server has taken the newest
frame (`obs_taken_seq == obs_seq`) and released it, that slot is stale for the server too,
and the client may write it again. The server only leases a frame newer than what it took,
and only the client's next publish makes one, so the slot stays untouched meanwhile.

Every method must be called with the up-lock held.
"""

from __future__ import annotations

from asyncinf.transports.shm.layout import (
    NONE,
    W_OBS_LATEST,
    W_OBS_LEASED,
    W_OBS_SEQ,
    W_OBS_TAKEN,
    Area,
)


class ObsSlots:
    __slots__ = ("_words", "area", "slots", "views")

    def __init__(self, words: memoryview, raw: memoryview, area: Area) -> None:
        self._words = words
        self.area = area
        self.slots = area.slots
        self.views = area.views(raw)

    # --- client ----------------------------------------------------------------------------

    def pick(self) -> int:
        """A slot the server will not read until it is published again."""
        w = self._words
        latest, leased = w[W_OBS_LATEST], w[W_OBS_LEASED]
        if latest not in (NONE, leased) and w[W_OBS_TAKEN] == w[W_OBS_SEQ]:
            return latest  # taken and released: stale for both sides, and warm in cache
        for i in range(self.slots):
            if i not in (latest, leased):
                return i
        raise AssertionError("unreachable with >= 3 slots")

    def publish(self, slot: int, nbytes: int, sent_ns: int) -> None:
        """Make the frame written in `slot` the newest."""
        w = self._words
        seq = w[W_OBS_SEQ] + 1
        entry = self.area.entry(slot)
        w[entry] = nbytes
        w[entry + 1] = sent_ns
        w[entry + 2] = seq
        w[W_OBS_SEQ] = seq
        w[W_OBS_LATEST] = slot

    # --- server ----------------------------------------------------------------------------

    def skip_to_newest(self) -> int:
        """Mark everything published so far as taken (a new session starts); returns seq."""
        w = self._words
        seq = w[W_OBS_SEQ]
        w[W_OBS_TAKEN] = seq
        return seq

    def take_newest(self, seen_seq: int) -> tuple[int, int, int] | None:
        """Lease the newest frame if it is newer than `seen_seq`: (slot, nbytes, seq)."""
        w = self._words
        seq = w[W_OBS_SEQ]
        latest = w[W_OBS_LATEST]
        if seq <= seen_seq or latest == NONE:
            return None
        w[W_OBS_LEASED] = latest
        w[W_OBS_TAKEN] = seq
        return latest, w[self.area.entry(latest)], seq

    def release(self, slot: int) -> None:
        w = self._words
        if w[W_OBS_LEASED] == slot:
            w[W_OBS_LEASED] = NONE
