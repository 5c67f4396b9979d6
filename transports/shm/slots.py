"""Newest-wins observation slots, client → server.

Three roles among at least three slots: the one the client writes, the newest published
(`obs_latest`), and the one the server holds (`obs_leased`). The client writes only a slot
that is neither, so a leased frame is never overwritten however many newer ones arrive, and
the client never waits for the server.

One exception keeps the client's writes cache-warm: once the server has taken the newest
frame (`obs_taken_seq == obs_seq`) and released it, that slot is stale for the server too,
and the client may write it again. The server only leases a frame newer than what it took,
and only the client's next publish makes one, so the slot stays untouched meanwhile.

Every index is range-checked when read, and the entry of the frame the server leases must
carry the sequence number it was published as (integrity.py); a failure raises
SegmentCorrupt. Every method must be called with the up-lock held.
"""

from __future__ import annotations

from asyncinf.transports.shm.integrity import Guard
from asyncinf.transports.shm.layout import (
    NONE,
    W_OBS_LATEST,
    W_OBS_LEASED,
    W_OBS_SEQ,
    W_OBS_TAKEN,
    Area,
)
from asyncinf.transports.shm.ring import MIN_FRAME_BYTES

REGION = "observation table"


class ObsSlots:
    __slots__ = ("_entries", "_guard", "_words", "area", "slots", "views")

    def __init__(self, words: memoryview, raw: memoryview, area: Area, guard: Guard) -> None:
        self._words = words
        self._guard = guard
        self.area = area
        self.slots = area.slots
        self.views = area.views(raw)
        self._entries = tuple(area.entry(i) for i in range(area.slots))  # word of each entry

    def _state(self) -> tuple[int, int, int, int]:
        """(seq, taken, latest, leased), checked: 0 <= taken <= seq, slots in range or -1,
        and a published frame once seq > 0."""
        w, top = self._words, self.slots - 1
        seq, latest, leased, taken = w[W_OBS_SEQ], w[W_OBS_LATEST], w[W_OBS_LEASED], w[W_OBS_TAKEN]
        # One test on the hot path; the one that failed is named below.
        if 0 <= taken <= seq <= 1 << 62 and NONE <= leased <= top and 0 <= latest <= top:
            return seq, taken, latest, leased
        g = self._guard
        g.index(REGION, "obs_seq", seq, 0, 1 << 62)
        g.index(REGION, "obs_taken_seq", taken, 0, max(seq, 0))
        g.index(REGION, "obs_latest", latest, NONE if seq == 0 else 0, top)
        g.index(REGION, "obs_leased", leased, NONE, top)
        return seq, taken, latest, leased

    def newer_than(self, seen_seq: int) -> bool:
        """Whether a frame newer than `seen_seq` may be there, read without the lock: a hint
        that spares an empty poll its lock (a stale False costs nothing: the client rings
        after publishing, and the server checks under the lock after every wake-up)."""
        return self._words[W_OBS_SEQ] != seen_seq

    # --- client ----------------------------------------------------------------------------

    def pick(self) -> int:
        """A slot the server will not read until it is published again."""
        seq, taken, latest, leased = self._state()
        if latest not in (NONE, leased) and taken == seq:
            return latest  # taken and released: stale for both sides, and warm in cache
        for i in range(self.slots):
            if i not in (latest, leased):
                return i
        raise AssertionError("unreachable with >= 3 slots")

    def publish(self, slot: int, nbytes: int, sent_ns: int, crc: int, crc_bytes: int) -> None:
        """Make the frame written in `slot` the newest."""
        w = self._words
        seq = w[W_OBS_SEQ] + 1
        entry = self._entries[slot]
        w[entry] = nbytes
        w[entry + 1] = sent_ns
        w[entry + 2] = seq
        w[entry + 3] = crc
        w[entry + 4] = crc_bytes
        w[W_OBS_SEQ] = seq
        w[W_OBS_LATEST] = slot

    # --- server ----------------------------------------------------------------------------

    def skip_to_newest(self) -> int:
        """Mark everything published so far as taken (a new session starts); returns seq."""
        seq = self._state()[0]
        self._words[W_OBS_TAKEN] = seq
        return seq

    def take_newest(self, seen_seq: int) -> tuple[int, int, int, int, int, int] | None:
        """Lease the newest frame if it is newer than `seen_seq`:
        (slot, nbytes, seq, sent_ns, crc, crc_bytes), the entry's words checked."""
        seq, _taken, latest, _leased = self._state()
        g = self._guard
        if seq < seen_seq:
            g.fail(REGION, f"obs_seq = {seq} went back (the server took {seen_seq})")
        if seq == seen_seq:
            return None
        w = self._words
        entry = self._entries[latest]
        nbytes, sent_ns, entry_seq, crc, crc_bytes = w[entry : entry + 5]
        # One test on the hot path; the one that failed is named below.
        ok = entry_seq == seq and MIN_FRAME_BYTES <= nbytes <= self.area.slot_bytes
        if not (ok and 0 <= crc_bytes <= nbytes):
            if entry_seq != seq:
                g.fail(REGION, f"slot {latest} holds frame {entry_seq}, obs_seq says {seq}")
            g.index(REGION, "frame_bytes", nbytes, MIN_FRAME_BYTES, self.area.slot_bytes)
            g.index(REGION, "crc_bytes", crc_bytes, 0, nbytes)
        w[W_OBS_LEASED] = latest
        w[W_OBS_TAKEN] = seq
        return latest, nbytes, seq, sent_ns, crc, crc_bytes

    def release(self, slot: int) -> None:
        w = self._words
        if w[W_OBS_LEASED] == slot:
            w[W_OBS_LEASED] = NONE
