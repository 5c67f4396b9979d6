"""A single-producer single-consumer ring of frame slots (chunks, and the two control rings).

Index bookkeeping only: every method here must be called with the direction's lock held,
which is what orders the payload bytes before the index that publishes them. Heads and
tails are counts that only grow; slot i of the ring is count % slots.
"""

from __future__ import annotations

from asyncinf.transports.shm.layout import Area


class Ring:
    __slots__ = ("_dropped", "_head", "_tail", "_words", "area", "slots", "views")

    def __init__(
        self,
        words: memoryview,
        raw: memoryview,
        area: Area,
        *,
        head: int,
        tail: int,
        dropped: int | None = None,
    ) -> None:
        self._words = words
        self._head, self._tail, self._dropped = head, tail, dropped
        self.area = area
        self.slots = area.slots
        self.views = area.views(raw)

    def head(self) -> int:
        return self._words[self._head]

    def count(self) -> int:
        w = self._words
        return w[self._head] - w[self._tail]

    def peek_seq(self) -> int:
        """The oldest frame's sequence number, or -1 when the ring is empty."""
        w = self._words
        tail = w[self._tail]
        if w[self._head] == tail:
            return -1
        return w[self.area.entry(tail % self.slots) + 1]

    def publish(self, slot: int, nbytes: int, seq: int) -> None:
        """Make the frame already written in `slot` (= head % slots) visible."""
        w = self._words
        entry = self.area.entry(slot)
        w[entry] = nbytes
        w[entry + 1] = seq
        w[self._head] += 1

    def take(self) -> bytearray:
        """Copy the oldest frame out and free its slot."""
        w = self._words
        tail = w[self._tail]
        slot = tail % self.slots
        nbytes = w[self.area.entry(slot)]
        frame = bytearray(self.views[slot][:nbytes])
        w[self._tail] = tail + 1
        return frame

    def drop_oldest(self) -> None:
        """Free the oldest frame unread (control rings only: they never block the producer)."""
        if self._dropped is None:
            raise AssertionError("this ring never drops")
        w = self._words
        w[self._tail] += 1
        w[self._dropped] += 1

    def discard_all(self) -> int:
        """Free every frame (a new session starts); returns how many."""
        w = self._words
        n = w[self._head] - w[self._tail]
        w[self._tail] = w[self._head]
        return n
