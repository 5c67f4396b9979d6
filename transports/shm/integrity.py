"""Catching a stray write into a session's segment before it moves the robot.

The two ends trust nothing they read back from shared memory: every frame carries a CRC-32
in its table entry (chunks and control always; observations over their header and state,
images too with `--shm.checksum=all`), every ring entry names the position it was
published at, and every index and pid word is range-checked when read. Any failure means
some other process wrote into the segment, so none of it can be trusted any more: the end
that finds it raises `SegmentCorrupt`, and first marks the segment `corrupt` in its header so
the other end's next call raises too. The session ends on both sides through their ordinary
"peer lost" paths; the supervisor makes a new segment (a new generation) for the next one.

The CRC is zlib's CRC-32, computed by ISA-L (`isal`, SIMD: ~0.1 µs for a 3 KiB chunk frame,
~0.13 ms for a 3.7 MB observation fresh from another core, on this project's VMs) where it
has a wheel, else by zlib itself (~0.8 µs and ~1 ms): the same values either way, so the two
ends may differ. Images are checked only when asked.
"""

from __future__ import annotations

import enum
import logging
from typing import NoReturn

from asyncinf.runtime.errors import SegmentCorrupt

try:
    from isal.isal_zlib import crc32
except ImportError:  # a platform without isal's wheels (pyproject's marker)
    from zlib import crc32

log = logging.getLogger(__name__)


class Checksum(str, enum.Enum):
    """What the CRC covers (`--shm.checksum`)."""

    FRAMES = "frames"  # chunk and control frames whole; observations' header and state
    ALL = "all"  # and observations' images too (~0.13 ms per 3.7 MB on each side)
    NONE = "none"  # no CRC at all (for measuring its cost); indexes are still checked


CHECKSUM_CODES = {Checksum.NONE: 0, Checksum.FRAMES: 1, Checksum.ALL: 2}

# Where the damage was found; the code is what the `corrupt` header word carries.
REGIONS = {
    1: "observation table",
    2: "observation frame",
    3: "chunk ring",
    4: "chunk frame",
    5: "client→server control ring",
    6: "server→client control ring",
    7: "pid word",
    8: "header index",
}
REGION = {name: code for code, name in REGIONS.items()}
_SIDES = {1: "client", 2: "server"}
_SIDE = {name: code for code, name in _SIDES.items()}


class Guard:
    """One end's verdicts on its segment; `words` is the segment's i64 view."""

    __slots__ = ("_side", "_word", "_words", "found", "name")

    def __init__(self, words: memoryview, word: int, name: str, side: str) -> None:
        self._words = words
        self._word = word  # the header's `corrupt` word
        self.name = name
        self._side = side
        self.found = 0  # corruption this end found itself

    def fail(self, region: str, detail: str) -> NoReturn:
        """Mark the segment corrupt (first finder wins), log once, raise SegmentCorrupt."""
        w = self._words
        if w[self._word] == 0:
            w[self._word] = REGION[region] + 16 * _SIDE[self._side]
            self.found += 1
            log.error(
                "shared memory of session %s is corrupt (%s: %s): ending the session",
                self.name, region, detail,
            )  # fmt: skip
        raise SegmentCorrupt(f"shared memory of {self.name} corrupt: {region}: {detail}")

    def check(self) -> None:
        """Raise SegmentCorrupt if either end has marked the segment corrupt."""
        code = self._words[self._word]
        if code:
            raise SegmentCorrupt(f"shared memory of {self.name} corrupt: {describe(code)}")

    def index(self, region: str, what: str, value: int, lo: int, hi: int) -> int:
        """`value` if lo <= value <= hi, else the segment is corrupt."""
        if not lo <= value <= hi:
            self.fail(region, f"{what} = {value}, outside [{lo}, {hi}]")
        return value

    def frame(self, region: str, buf: memoryview | bytearray, want: int) -> None:
        """The CRC of `buf` must be `want` (as stored in its table entry)."""
        got = crc32(buf)
        if got != want:
            self.fail(
                region, f"CRC-32 {got:#010x} of {len(buf)} B, table says {want & 0xFFFFFFFF:#010x}"
            )


def describe(code: int) -> str:
    """The `corrupt` word as words: which region, found by which end."""
    region = REGIONS.get(code % 16)
    side = _SIDES.get(code // 16)
    if region is None or side is None:
        return f"the header's corrupt word holds {code}"
    return f"{region} (found by the {side})"
