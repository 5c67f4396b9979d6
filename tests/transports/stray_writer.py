"""A test's own read-write mapping of a live shared-memory segment: the stray writer of the
corruption tests, on a session of this process (`test_shm_integrity.py`) or on the segment of
a running `up --local` (`test_faults_shm_corruption.py`)."""

from __future__ import annotations

import mmap
import struct

import posix_ipc

from asyncinf.transports.shm import ShmSession, names
from asyncinf.transports.shm import layout as L


class StrayWriter:
    """Reads and writes the segment's 8-byte words and bytes, past every check of ours."""

    def __init__(self, mm: mmap.mmap, layout: L.Layout) -> None:
        self.mm = mm
        self.layout = layout

    @classmethod
    def of_session(cls, session: ShmSession) -> StrayWriter:
        shm = posix_ipc.SharedMemory(names.object_name(session.name, names.SEGMENT))
        try:
            return cls(mmap.mmap(shm.fd, session.layout.segment_bytes), session.layout)
        finally:
            shm.close_fd()

    @classmethod
    def of_run(cls, run_pid: int) -> StrayWriter:
        """The segment of the run whose supervisor is `run_pid`, its layout read off it."""
        seg = next(
            o
            for o in names.list_objects()
            if o.pid == run_pid and o.role == names.SEGMENT and not o.semaphore
        )
        with open(seg.path, "r+b") as f:
            mm = mmap.mmap(f.fileno(), 0)
        words = memoryview(mm)[: len(mm) // 8 * 8].cast("q")
        try:
            layout = L.read_layout(
                seg.session, words=words, raw=memoryview(mm),
                actual_bytes=len(mm), generation=seg.generation,
            )  # fmt: skip
        finally:
            words.release()
        return cls(mm, layout)

    def word(self, index: int) -> int:
        return struct.unpack_from("<q", self.mm, index * 8)[0]

    def poke(self, index: int, value: int) -> None:
        struct.pack_into("<q", self.mm, index * 8, value)

    def write(self, offset: int, data: bytes) -> None:
        self.mm[offset : offset + len(data)] = data

    def entry(self, area: L.Area, slot: int, field: int = 0) -> int:
        return self.word(area.entry(slot) + field)

    def close(self) -> None:
        self.mm.close()
