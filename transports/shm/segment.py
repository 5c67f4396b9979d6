"""A session's kernel objects as one process holds them: the mapped segment and five semaphores.

`create_objects` is the owner's half (O_CREX); `Segment.open` is a child's (existing objects
only, header checked before anything else is touched). Neither unlinks: that is the
owner's `ShmSession.unlink`.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import mmap
import os

import posix_ipc

from asyncinf.runtime.errors import LayoutError, TransportError
from asyncinf.transports.shm import names
from asyncinf.transports.shm.config import ShmConfig
from asyncinf.transports.shm.layout import W_TABLES, Layout, read_layout, write_header

log = logging.getLogger(__name__)


# Initial values: locks free, doorbells silent, every chunk slot free.
_LOCKS = (names.UP_LOCK, names.DOWN_LOCK)
_BELLS = (names.UP_BELL, names.DOWN_BELL)


def _map(fd: int, length: int, populate: bool) -> mmap.mmap:
    flags = mmap.MAP_SHARED
    if populate:
        # Fault every page in now, not on the first frame of a control loop.
        flags |= getattr(mmap, "MAP_POPULATE", 0)
    return mmap.mmap(fd, length, flags=flags, prot=mmap.PROT_READ | mmap.PROT_WRITE)


class Segment:
    """The mapped segment (`raw`, `words`: i64 view) and the semaphores, by role."""

    def __init__(
        self,
        name: str,
        layout: Layout,
        mm: mmap.mmap,
        sems: dict[str, posix_ipc.Semaphore],
    ) -> None:
        self.name = name
        self.layout = layout
        self._mm: mmap.mmap | None = mm
        self.raw: memoryview | None = memoryview(mm)
        self.words: memoryview | None = self.raw[: len(mm) // 8 * 8].cast("q")
        self.sems = sems

    @classmethod
    def open(cls, name: str, expected: ShmConfig | None = None) -> Segment:
        """Open an existing session's objects and check its header."""
        generation = names.session_generation(name)
        try:
            shm = posix_ipc.SharedMemory(names.object_name(name, names.SEGMENT))
        except posix_ipc.ExistentialError:
            raise TransportError(
                f"no shared-memory session {name}: not created yet, or its supervisor "
                "has removed it"
            ) from None
        try:
            size = os.fstat(shm.fd).st_size
            if size < W_TABLES * 8:
                raise LayoutError(
                    f"shared-memory segment {name}: header field 'segment_bytes' expected "
                    f">= {W_TABLES * 8}, got {size}"
                )
            mm = _map(shm.fd, size, populate=True)
        finally:
            shm.close_fd()
        seg = cls(name, None, mm, {})  # type: ignore[arg-type]
        try:
            seg.layout = read_layout(
                name,
                words=seg.words,
                raw=seg.raw,
                actual_bytes=size,
                generation=generation,
                expected=expected,
            )
            for role in names.SEMAPHORES:
                try:
                    seg.sems[role] = posix_ipc.Semaphore(names.object_name(name, role))
                except posix_ipc.ExistentialError:
                    raise TransportError(
                        f"shared-memory session {name} has no {role} semaphore: "
                        "half removed; the supervisor must create a new session"
                    ) from None
        except BaseException:
            seg.close()
            raise
        return seg

    def close(self) -> None:
        """Unmap and close the handles (never unlinks). Safe twice and on a half-open one."""
        for sem in self.sems.values():
            with contextlib.suppress(posix_ipc.ExistentialError):
                sem.close()
        self.sems = {}
        mm, self._mm = self._mm, None
        for view in (self.words, self.raw):
            if view is not None:
                view.release()
        self.words = self.raw = None
        if mm is not None:
            try:
                mm.close()
            except BufferError:
                # Arrays decoded from the slots are still alive somewhere: unmapping now
                # would pull the memory from under them. The mapping goes with them.
                log.debug("%s: decoded arrays still alive; unmapped when they are freed", self)

    def __repr__(self) -> str:
        return f"Segment({self.name})"


def create_objects(name: str, layout: Layout, created: list[str]) -> Segment:
    """Create (O_CREX) the segment and semaphores of a new session, header written.

    Each object's role is appended to `created` as soon as it exists, so the caller can
    unlink exactly what this call made if it fails half-way.
    """
    flags = posix_ipc.O_CREX
    try:
        shm = posix_ipc.SharedMemory(
            names.object_name(name, names.SEGMENT), flags, mode=0o600, size=layout.segment_bytes
        )
    except posix_ipc.ExistentialError:
        raise TransportError(f"shared-memory session {name} already exists") from None
    created.append(names.SEGMENT)
    try:
        try:
            # Reserve the pages now: a full /dev/shm then fails here, clearly, instead of
            # killing a child with SIGBUS on its first frame.
            os.posix_fallocate(shm.fd, 0, layout.segment_bytes)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.ENOMEM):
                raise
            raise TransportError(
                f"cannot reserve {layout.segment_bytes / 2**20:.1f} MiB in /dev/shm for "
                f"session {name}: {exc.strerror}; free space there or lower --shm.obs_slot_mb"
            ) from None
        mm = _map(shm.fd, layout.header_bytes, populate=False)
    finally:
        shm.close_fd()
    seg = Segment(name, layout, mm, {})
    try:
        write_header(seg.words, seg.raw, layout, os.getpid())
        initial = {names.CHUNK_SPACE: layout.config.chunk_slots}
        initial.update(dict.fromkeys(_LOCKS, 1))
        initial.update(dict.fromkeys(_BELLS, 0))
        for role in names.SEMAPHORES:
            try:
                sem = posix_ipc.Semaphore(
                    names.object_name(name, role), flags, mode=0o600, initial_value=initial[role]
                )
            except posix_ipc.ExistentialError:
                raise TransportError(
                    f"semaphore {names.object_name(name, role)} already exists"
                ) from None
            created.append(role)
            seg.sems[role] = sem
    except BaseException:
        seg.close()
        raise
    return seg
