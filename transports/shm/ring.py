"""A single-producer single-consumer ring of frame slots (chunks, and the two control rings).

Index bookkeeping only: every method here must be called with the direction's lock held,
which is what orders the payload bytes before the index that publishes them. Heads and
tails are counts that only grow; slot i of the ring is count % slots.

Nothing read back from the segment is trusted: the indexes are range-checked on every read,
each entry must carry the position the reader expects, and a frame's CRC is checked on the
reader's private copy before it is decoded (integrity.py). A failure raises SegmentCorrupt.
"""

from __future__ import annotations

from asyncinf.transports.shm.integrity import Guard, crc32
from asyncinf.transports.shm.layout import Area

# The smallest frame: the codec's 8-byte prefix.
MIN_FRAME_BYTES = 8


class Ring:
    __slots__ = (
        "_checked",
        "_dropped",
        "_entries",
        "_frame_region",
        "_guard",
        "_head",
        "_seen",
        "_tail",
        "_words",
        "area",
        "region",
        "slots",
        "views",
    )

    def __init__(
        self,
        words: memoryview,
        raw: memoryview,
        area: Area,
        *,
        head: int,
        tail: int,
        guard: Guard,
        region: str,
        checked: bool,
        frame_region: str | None = None,
        dropped: int | None = None,
    ) -> None:
        self._words = words
        self._head, self._tail, self._dropped = head, tail, dropped
        self._guard = guard
        self.region = region
        self._frame_region = frame_region or region  # a bad CRC's region
        self._checked = checked  # CRC on (the segment's checksum is not none)
        self._seen = (0, 0)  # the highest (head, tail) this end has read: they only grow
        self.area = area
        self.slots = area.slots
        self.views = area.views(raw)
        self._entries = tuple(area.entry(i) for i in range(area.slots))  # word of each entry

    def _indexes(self) -> tuple[int, int]:
        """(head, tail), checked: neither went back, and tail <= head <= tail + slots."""
        w = self._words
        seen_head, seen_tail = self._seen
        tail = w[self._tail]
        head = w[self._head]
        # One test on the hot path; the one that failed is named below.
        if not (seen_tail <= tail <= head <= tail + self.slots and seen_head <= head):
            g = self._guard
            if tail < seen_tail:
                g.fail(self.region, f"tail = {tail} went back (it was {seen_tail})")
            g.index(self.region, "head", head, max(tail, seen_head), tail + self.slots)
        self._seen = head, tail
        return head, tail

    def pending(self) -> bool:
        """Whether a frame may be waiting, read without the lock: a hint that spares an empty
        poll its lock. A stale False costs nothing: the producer rings after publishing,
        and the consumer checks under the lock after every wake-up."""
        w = self._words
        return w[self._head] != w[self._tail]

    def _set_tail(self, tail: int) -> None:
        self._words[self._tail] = tail
        self._seen = max(self._seen[0], tail), tail

    def head(self) -> int:
        return self._indexes()[0]

    def count(self) -> int:
        head, tail = self._indexes()
        return head - tail

    def _entry(self, tail: int) -> int:
        """Word index of the oldest frame's entry, checked to be the one published at `tail`."""
        entry = self._entries[tail % self.slots]
        pos = self._words[entry + 2]
        if pos != tail:
            self._guard.fail(self.region, f"the entry at tail {tail} was published at {pos}")
        return entry

    def peek_seq(self) -> int:
        """The oldest frame's sequence number, or -1 when the ring is empty."""
        head, tail = self._indexes()
        if head == tail:
            return -1
        return self._words[self._entry(tail) + 1]

    def publish(self, pos: int, nbytes: int, seq: int, crc: int) -> None:
        """Make the frame already written in slot `pos % slots` visible; `pos` must be the
        head (this end is the only producer, so a different head is a stray write)."""
        head, _tail = self._indexes()
        if head != pos:
            self._guard.fail(self.region, f"head = {head}, its only producer has {pos}")
        w = self._words
        entry = self._entries[pos % self.slots]
        w[entry] = nbytes
        w[entry + 1] = seq
        w[entry + 2] = pos
        w[entry + 3] = crc
        w[self._head] = pos + 1
        self._seen = pos + 1, self._seen[1]

    def crc(self, frame: memoryview | bytes | bytearray) -> int:
        """The CRC to publish `frame` with (0 when checksums are off)."""
        return crc32(frame) if self._checked else 0

    def take(self) -> bytearray:
        """Copy the oldest frame out, check it, and free its slot."""
        _head, tail = self._indexes()
        return self._take(tail, self._entry(tail))

    def take_before(self, seq: int) -> bytearray | None:
        """`take()` if the oldest frame's sequence number is below `seq` (another ring's
        oldest, -1 when that one is empty); None when this ring is empty or not first."""
        head, tail = self._indexes()
        if head == tail:
            return None
        entry = self._entry(tail)
        if 0 <= seq < self._words[entry + 1]:
            return None
        return self._take(tail, entry)

    def _take(self, tail: int, entry: int) -> bytearray:
        w = self._words
        nbytes, top = w[entry], self.area.slot_bytes
        if not MIN_FRAME_BYTES <= nbytes <= top:  # the guard's test, without its call
            self._guard.index(self.region, "frame_bytes", nbytes, MIN_FRAME_BYTES, top)
        frame = bytearray(self.views[tail % self.slots][:nbytes])
        if self._checked and crc32(frame) != w[entry + 3]:
            self._guard.frame(self._frame_region, frame, w[entry + 3])  # names both CRCs
        # _set_tail(tail + 1), without its call: the head just read is past the tail.
        w[self._tail] = tail + 1
        self._seen = self._seen[0], tail + 1
        return frame

    def drop_oldest(self) -> None:
        """Free the oldest frame unread (control rings only: they never block the producer)."""
        if self._dropped is None:
            raise AssertionError("this ring never drops")
        _head, tail = self._indexes()
        self._set_tail(tail + 1)
        self._words[self._dropped] += 1

    def discard_all(self) -> int:
        """Free every frame (a new session starts); returns how many."""
        head, tail = self._indexes()
        self._set_tail(head)
        return head - tail
