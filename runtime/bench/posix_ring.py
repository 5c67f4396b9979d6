"""The floor for the shm transport: the thinnest ring of the same layout, no codec, no checks.

One POSIX shared-memory segment (an observation area, then a chunk area) and two POSIX
semaphores as bells. A round trip does the work any shared-memory round trip must: the
sender writes the observation's S bytes and their length into the segment and rings; the
peer takes a zero-copy view of the S bytes, writes the 50×14 float32 chunk and rings back;
the sender copies the chunk out. Nothing else: no locks, leases, CRCs or liveness checks.

Each end waits as the shm transport does: it looks for a token for up to `spin_us`, giving
the core up between looks, and only then blocks on the semaphore. `posix_ring` in
`asyncinf bench transport` (bench/transport.py) spins as long as shm does by default, so
the two compare like with like; `posix_ring_block` blocks at once. On a VM the gap between
the two is large: a wake-up after the peer's vCPU has halted costs tens of µs, which a
spinning end never pays.

Objects are named like a session's (`asyncinf.<pid>-<hex>.g0.<role>`), so a run killed
before it could unlink them is cleaned up as any dead run's.
"""

from __future__ import annotations

import contextlib
import mmap
import os
from collections.abc import Iterator

import numpy as np
import posix_ipc

from asyncinf.runtime.bench.peer import spawned, spin
from asyncinf.transports.shm import names

HEADER = 8  # one int64: the observation's byte count, or STOP
STOP = -1
POLL_S = 1.0  # the peer's wait between looks at whether its parent is still there
SEGMENT, UP, DOWN = "ring", "ringup", "ringdown"


def _layout(obs_bytes: int, chunk_bytes: int) -> tuple[int, int]:
    """(offset of the chunk area, segment bytes): the chunk after the observation, aligned."""
    chunk_at = HEADER + -(-obs_bytes // 64) * 64
    return chunk_at, chunk_at + chunk_bytes


def _open(session: str, segment_bytes: int) -> tuple[memoryview, mmap.mmap]:
    """Map the segment; returns (its bytes, the mmap to close)."""
    shm = posix_ipc.SharedMemory(names.object_name(session, SEGMENT))
    try:
        mm = mmap.mmap(shm.fd, segment_bytes)
    finally:
        shm.close_fd()
    return memoryview(mm), mm


def _take(bell: posix_ipc.Semaphore, spin_ns: int, timeout_s: float) -> None:
    """Take a token of `bell`: look for one for up to `spin_ns`, then block up to `timeout_s`
    (posix_ipc.BusyError after it)."""

    def look() -> bool:
        if bell.value <= 0:
            return False
        try:
            bell.acquire(0)
        except posix_ipc.BusyError:
            return False  # a stale look
        return True

    if not (spin_ns and spin(look, spin_ns)):
        bell.acquire(timeout_s)


def _peer(session: str, obs_bytes: int, chunk_shape: tuple[int, ...], spin_ns: int) -> None:
    """Child: answer each observation with a chunk until told to stop or orphaned."""
    chunk = np.zeros(chunk_shape, np.float32)
    chunk_at, segment_bytes = _layout(obs_bytes, chunk.nbytes)
    raw, mm = _open(session, segment_bytes)
    up = posix_ipc.Semaphore(names.object_name(session, UP))
    down = posix_ipc.Semaphore(names.object_name(session, DOWN))
    length = np.frombuffer(raw[:HEADER], np.int64)
    out = np.frombuffer(raw[chunk_at : chunk_at + chunk.nbytes], np.float32).reshape(chunk_shape)
    parent, obs = os.getppid(), None
    try:
        while True:
            try:
                _take(up, spin_ns, POLL_S)
            except posix_ipc.BusyError:
                if os.getppid() != parent:
                    return
                continue
            n = int(length[0])
            if n == STOP:
                return
            obs = np.frombuffer(raw[HEADER : HEADER + n], np.uint8)  # zero-copy, as shm's decode
            np.copyto(out, chunk)
            down.release()
    finally:
        del length, out, obs
        up.close()
        down.close()
        raw.release()
        mm.close()


class _Sender:
    """The sender's end: `self(arrays)` is one round trip. `close` drops its views of the
    segment, so the mapping can be closed even while a caller still holds this object."""

    def __init__(
        self, raw: memoryview, obs_bytes: int, chunk_shape: tuple[int, ...], up, down, *,
        spin_ns: int,
    ):  # fmt: skip
        chunk_at, _ = _layout(obs_bytes, int(np.prod(chunk_shape)) * 4)
        self._spin_ns = spin_ns
        self._length = np.frombuffer(raw[:HEADER], np.int64)
        self._obs = np.frombuffer(raw[HEADER : HEADER + obs_bytes], np.uint8)
        end = chunk_at + int(np.prod(chunk_shape)) * 4
        self._chunk = np.frombuffer(raw[chunk_at:end], np.float32).reshape(chunk_shape)
        self._up, self._down = up, down
        self.objects: tuple[str, ...] = ()  # the posix_ipc names of the ring's objects

    def __call__(self, arrays: list[np.ndarray], timeout_s: float) -> np.ndarray:
        offset = 0
        for arr in arrays:
            n = arr.nbytes
            np.copyto(self._obs[offset : offset + n], arr.reshape(-1).view(np.uint8))
            offset += n
        self._length[0] = offset
        self._up.release()
        try:
            _take(self._down, self._spin_ns, timeout_s)
        except posix_ipc.BusyError:
            raise TimeoutError(f"posix_ring: no chunk within {timeout_s} s") from None
        return self._chunk.copy()

    def stop(self) -> None:
        self._length[0] = STOP
        self._up.release()

    def close(self) -> None:
        self._length = self._obs = self._chunk = None


@contextlib.contextmanager
def posix_ring(obs_bytes: int, chunk_shape: tuple[int, ...], spin_us: int = 0) -> Iterator[_Sender]:
    """Create the ring, start its peer in a spawned child, and yield the sender: each
    `sender(arrays, timeout_s)` writes the arrays' bytes (at most `obs_bytes` in all),
    rings, waits for the chunk and returns a copy of it. Both ends spin up to `spin_us`
    before they block. Every object is unlinked on the way out, also on failure."""
    spin_ns = spin_us * 1000
    _, segment_bytes = _layout(obs_bytes, int(np.prod(chunk_shape)) * 4)
    session = names.session_name(names.make_run_id(), 0)
    with contextlib.ExitStack() as stack:
        shm = posix_ipc.SharedMemory(
            names.object_name(session, SEGMENT), posix_ipc.O_CREX, 0o600, segment_bytes
        )
        stack.callback(shm.unlink)
        shm.close_fd()
        bells = []
        for role in (UP, DOWN):
            name = names.object_name(session, role)
            bell = posix_ipc.Semaphore(name, posix_ipc.O_CREX, 0o600)
            stack.callback(posix_ipc.unlink_semaphore, name)
            stack.callback(bell.close)
            bells.append(bell)
        raw, mm = _open(session, segment_bytes)
        stack.callback(mm.close)
        stack.callback(raw.release)
        sender = _Sender(raw, obs_bytes, chunk_shape, *bells, spin_ns=spin_ns)
        sender.objects = tuple(names.object_name(session, r) for r in (SEGMENT, UP, DOWN))
        stack.callback(sender.close)
        peer_args = (session, obs_bytes, chunk_shape, spin_ns)
        with spawned(_peer, peer_args, "posix-ring", sender.stop):
            yield sender
