"""What both ends share: attaching, the locks, waiting on a doorbell, watching the peer.

Synchronisation is posix_ipc semaphores only, so it is correct on aarch64's weak memory
model as on x86-64:

- a per-direction *lock* (a semaphore with initial value 1) guards every shared index of
  that direction; the acquire/release pair is also the memory barrier that makes payload
  bytes written before a publish visible to whoever takes the lock next;
- a per-direction *doorbell* only wakes the consumer. The producer publishes under the
  lock, unlocks, rings. The consumer checks under the lock, and only when there is nothing
  waits on the doorbell, then checks again. A stale token costs one extra check; a missed
  token is impossible because the check follows the wait.

Blocking waits run in slices of at most `heartbeat_interval_s`; when a slice passes with no
wake-up the peer's pid and heartbeat are checked, so a dead peer is reported within about
`peer_timeout_s` + one slice. Nothing here sleeps.

An end is meant to be used from one thread (plus its heartbeat thread); `close()` must not
race a call of the same end running in another thread.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import TypeVar

import posix_ipc

from asyncinf.runtime.errors import (
    PayloadTooLarge,
    PeerClosed,
    PeerGone,
    SessionBusy,
    TransportError,
)
from asyncinf.runtime.logs import Throttle
from asyncinf.runtime.messages import Message
from asyncinf.transports import codec
from asyncinf.transports.shm import names
from asyncinf.transports.shm.config import MiB, ShmConfig, option
from asyncinf.transports.shm.integrity import Checksum, Guard
from asyncinf.transports.shm.layout import (
    W_CHUNK_HEAD,
    W_CHUNK_TAIL,
    W_CORRUPT,
    W_DNCTL_DROPPED,
    W_DNCTL_HEAD,
    W_DNCTL_TAIL,
    W_UPCTL_DROPPED,
    W_UPCTL_HEAD,
    W_UPCTL_TAIL,
    Layout,
    release_views,
)
from asyncinf.transports.shm.peer import WORDS, HeartbeatStamper
from asyncinf.transports.shm.ring import Ring
from asyncinf.transports.shm.segment import Segment
from asyncinf.transports.shm.slots import ObsSlots

log = logging.getLogger(__name__)
_throttled = Throttle(log)

T = TypeVar("T")
E = TypeVar("E", bound="ShmEnd")

_BusyError = posix_ipc.BusyError
_yield = os.sched_yield
_SignalError = posix_ipc.SignalError


class ShmEnd:
    """Base of `ShmClientTransport` and `ShmServerTransport`; use their `attach`."""

    SIDE = ""  # "client" or "server"
    PEER = ""
    OWN_LOCK = ""  # the lock that guards this side's pid word

    def __init__(self, segment: Segment) -> None:
        self._seg = segment
        self.name = segment.name
        self.layout: Layout = segment.layout
        cfg = self.layout.config
        w = self._w = segment.words
        raw, lay = segment.raw, self.layout
        self._guard = Guard(w, W_CORRUPT, segment.name, self.SIDE)
        g, checked = self._guard, cfg.checksum is not Checksum.NONE
        # Looked up once: an enum member's lookup costs ~0.1 µs on every frame.
        self._crc_on, self._crc_all = checked, cfg.checksum is Checksum.ALL
        # Both ends see all four areas alike; what each side may do with them is its own.
        self._obs = ObsSlots(w, raw, lay.obs, g)
        self._chunks = Ring(
            w, raw, lay.chunks, head=W_CHUNK_HEAD, tail=W_CHUNK_TAIL, guard=g,
            region="chunk ring", frame_region="chunk frame", checked=checked,
        )  # fmt: skip
        self._upctl = Ring(
            w, raw, lay.upctl, head=W_UPCTL_HEAD, tail=W_UPCTL_TAIL, dropped=W_UPCTL_DROPPED,
            guard=g, region="client→server control ring", checked=checked,
        )  # fmt: skip
        self._dnctl = Ring(
            w, raw, lay.dnctl, head=W_DNCTL_HEAD, tail=W_DNCTL_TAIL, dropped=W_DNCTL_DROPPED,
            guard=g, region="server→client control ring", checked=checked,
        )  # fmt: skip
        s = segment.sems
        self._up_lock = s[names.UP_LOCK]
        self._up_bell = s[names.UP_BELL]
        self._down_lock = s[names.DOWN_LOCK]
        self._down_bell = s[names.DOWN_BELL]
        self._space = s[names.CHUNK_SPACE]
        self._slice_s = cfg.heartbeat_interval_s
        self._spin_ns = cfg.spin_us * 1000
        self._peer_timeout_ns = round(cfg.peer_timeout_s * 1e9)
        self._peer_pid_w, self._peer_hb_w = WORDS[self.PEER]
        self._own_pid_w = WORDS[self.SIDE][0]
        self._heartbeat = HeartbeatStamper(self._w, self.SIDE, cfg.heartbeat_interval_s)
        self._next_peer_check_ns = 0
        self._down_seq = 0  # down_seq's lowest possible value (the server is its only writer)
        self._peer_closed: str | None = None  # the peer's goodbye, once seen
        self._peer_gone: str | None = None  # why the peer was declared gone, once it was
        self._had_peer = False  # a session was established: a detached peer means closed
        self._closed = False

    @classmethod
    def attach(cls: type[E], name: str, config: ShmConfig | None = None) -> E:
        """Open the session `name` created by the supervisor; only opens, never creates.

        The header is checked (magic, layout version, every size; and against `config`
        when given) and a mismatch raises LayoutError naming the field. Raises SessionBusy
        when a live process is already attached on this side.
        """
        segment = Segment.open(name, config)
        try:
            end = cls(segment)
            end._register()
        except BaseException:
            segment.close()
            raise
        log.debug("%s attached to %s (pid %d)", cls.SIDE, name, os.getpid())
        return end

    def _register(self) -> None:
        self._heartbeat.beat()  # a fresh pid must never look stale
        lock = self._lock_for(self.OWN_LOCK)
        self._acquire(lock)
        try:
            w = self._w
            pid = self._pid(self._own_pid_w, self.SIDE)
            if pid not in (0, os.getpid()) and names.pid_alive(pid):
                raise SessionBusy(f"session {self.name} already has a {self.SIDE} (pid {pid})")
            w[self._own_pid_w] = os.getpid()
            self._on_register()
        finally:
            lock.release()
        self._heartbeat.start()

    def _on_register(self) -> None:
        """Side-specific set-up, run under this side's lock."""

    def _lock_for(self, role: str) -> posix_ipc.Semaphore:
        return self._up_lock if role == names.UP_LOCK else self._down_lock

    # --- peer --------------------------------------------------------------------------------

    def _pid(self, word: int, side: str) -> int:
        """A pid word, range-checked: 0 (none) or a possible Linux pid."""
        return self._guard.index("pid word", f"{side}_pid", self._w[word], 0, names.PID_MAX)

    def _check_peer(self) -> None:
        """Raise PeerGone/PeerClosed when the peer has exited, hung, or detached."""
        if self._closed:
            raise TransportError(f"{self.SIDE} end of {self.name} is closed")
        if self._peer_closed is not None:
            raise PeerClosed(f"{self.PEER} said goodbye: {self._peer_closed}")
        if self._peer_gone is not None:
            raise PeerGone(self._peer_gone)
        self._guard.check()
        w = self._w
        pid = self._pid(self._peer_pid_w, self.PEER)
        if pid == 0:
            if self._had_peer:
                raise PeerClosed(f"{self.PEER} detached from {self.name}")
            return
        if not names.pid_alive(pid):
            self._peer_gone = f"{self.PEER} (pid {pid}) exited"
            raise PeerGone(self._peer_gone)
        age_ns = time.monotonic_ns() - w[self._peer_hb_w]
        if age_ns > self._peer_timeout_ns:
            self._peer_gone = (
                f"{self.PEER} (pid {pid}) sent no heartbeat for {age_ns / 1e9:.2f} s "
                f"(peer_timeout_s={self._peer_timeout_ns / 1e9:g})"
            )
            raise PeerGone(self._peer_gone)

    def _maybe_check_peer(self) -> None:
        """The peer check at most once per heartbeat interval, for calls that never block."""
        now = time.monotonic_ns()
        if now >= self._next_peer_check_ns:
            self._next_peer_check_ns = now + int(self._slice_s * 1e9)
            self._check_peer()

    # --- locks and waits ---------------------------------------------------------------------

    def _acquire(self, lock: posix_ipc.Semaphore) -> None:
        """Take a direction lock. Held for microseconds by a live peer, so a long wait means
        the holder died with it; bounded by peer_timeout_s either way. (The hot paths write
        its first step inline and call `_wait_lock` only when the lock is busy.)"""
        try:
            lock.acquire(0)
        except _BusyError:
            self._wait_lock(lock)

    def _wait_lock(self, lock: posix_ipc.Semaphore) -> None:
        """`_acquire` once the lock was found busy."""
        deadline = time.monotonic_ns() + self._peer_timeout_ns
        while True:
            try:
                lock.acquire(self._slice_s)
            except _BusyError:
                if self._closed:
                    raise TransportError(f"{self.SIDE} end of {self.name} is closed") from None
                pid = self._pid(self._peer_pid_w, self.PEER)
                if pid and not names.pid_alive(pid):
                    self._peer_gone = f"{self.PEER} (pid {pid}) exited holding a lock"
                    raise PeerGone(self._peer_gone) from None
                if time.monotonic_ns() > deadline:
                    raise TransportError(
                        f"a lock of session {self.name} was held for more than "
                        f"{self._peer_timeout_ns / 1e9:g} s: a process died holding it; "
                        "the session must be recreated"
                    ) from None
            except _SignalError:
                continue
            else:
                return

    def _wait(
        self,
        bell: posix_ipc.Semaphore,
        poll: Callable[[], T | None],
        timeout_s: float,
        watch_peer: bool = True,
    ) -> T | None:
        """`poll()` until it returns something or `timeout_s` passes, waiting on `bell`."""
        result = poll()
        if result is not None or timeout_s <= 0:
            return result
        now = time.monotonic_ns()
        deadline = now + int(timeout_s * 1e9)
        spin_end = min(now + self._spin_ns, deadline)
        slice_s = self._slice_s
        while True:
            woke = False
            # Bounded poll of the doorbell before blocking: a frame arriving within
            # spin_us costs no cross-core wake-up. Speed only; the wait below is the
            # mechanism.
            while now < spin_end:
                if bell.value > 0:
                    try:
                        bell.acquire(0)
                        woke = True
                        break
                    except _BusyError:
                        pass
                # The peer may be queued on this very core (the scheduler likes to wake a
                # process where its waker ran): let it run instead of spinning it out.
                _yield()
                now = time.monotonic_ns()
            if not woke:
                remaining_s = (deadline - now) / 1e9
                if remaining_s <= 0:
                    return None
                try:
                    bell.acquire(min(remaining_s, slice_s))
                    woke = True
                except _BusyError:
                    if self._closed:
                        raise TransportError(f"{self.SIDE} end of {self.name} is closed") from None
                    if watch_peer:
                        self._check_peer()
                except _SignalError:
                    pass
            if woke:
                # Tokens from frames this check will see anyway.
                while bell.value > 0:
                    try:
                        bell.acquire(0)
                    except _BusyError:
                        break
            result = poll()
            if result is not None:
                return result
            now = time.monotonic_ns()
            if now >= deadline:
                return None

    # --- control rings -----------------------------------------------------------------------

    def _push_control(
        self,
        ring: Ring,
        lock: posix_ipc.Semaphore,
        bell: posix_ipc.Semaphore,
        msg: Message,
        seq_word: int | None,
    ) -> None:
        """Append a control frame; when the ring is full the oldest frame is dropped.

        Control frames are small and rare, so they are copied in under the lock (the
        consumer also copies out under it, so a drop never tears a frame being read).
        """
        frame = codec.encode(msg)
        if len(frame) > ring.area.slot_bytes:
            raise_too_large("control", len(frame), ring.area.slot_bytes, "control_slot_bytes")
        crc = ring.crc(frame)
        self._acquire(lock)
        try:
            self._guard.check()
            if ring.count() >= ring.slots:
                ring.drop_oldest()
                _throttled.warning(
                    "%s: control ring full (%d): dropped the oldest message", self.name, ring.slots
                )
            seq = 0 if seq_word is None else self._next_seq(seq_word)
            pos = ring.head()
            ring.views[pos % ring.slots][: len(frame)] = frame
            ring.publish(pos, len(frame), seq, crc)
        finally:
            lock.release()
        bell.release()

    def _next_seq(self, word: int) -> int:
        """Take the next value of a sequence word only this end writes, checked never to go
        back (a stray write would misorder chunks and errors). Under its direction's lock."""
        w = self._w
        seq = w[word]
        if not self._down_seq <= seq <= 1 << 62:  # the guard's test, without its call
            self._guard.index("header index", "down_seq", seq, self._down_seq, 1 << 62)
        w[word] = self._down_seq = seq + 1
        return seq

    # --- close -------------------------------------------------------------------------------

    def _say_goodbye(self) -> None:
        """Side-specific goodbye, best effort."""

    def close(self) -> None:
        """Say goodbye, stop the heartbeat, detach and unmap. Never unlinks anything.

        Safe twice. Arrays still viewing slot memory keep the mapping alive until freed.
        """
        if self._closed:
            return
        try:
            self._say_goodbye()
        except (TransportError, OSError, ValueError) as exc:
            log.debug("%s: no goodbye sent: %s", self.name, exc)
        self._heartbeat.stop()
        try:
            lock = self._lock_for(self.OWN_LOCK)
            self._acquire(lock)
            try:
                if self._w[self._own_pid_w] == os.getpid():
                    self._w[self._own_pid_w] = 0
            finally:
                lock.release()
        except TransportError as exc:
            log.debug("%s: pid not cleared: %s", self.name, exc)
        self._closed = True
        self._release_views()
        self._seg.close()
        log.debug("%s detached from %s", self.SIDE, self.name)

    def _release_views(self) -> None:
        """Drop the slot views this end holds, so the mapping can close."""
        for area in (self._obs, self._chunks, self._upctl, self._dnctl):
            release_views(area.views)

    def __enter__(self: E) -> E:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name})"


def raise_too_large(what: str, nbytes: int, slot_bytes: int, field: str) -> None:
    """PayloadTooLarge naming the frame's size, the slot's size and the option to raise."""
    if field == "obs_slot_bytes":
        need = f"{option(field)}={-(-nbytes * 5 // 4 // MiB)}"
        sizes = f"{nbytes} B ({nbytes / MiB:.2f} MiB)", f"{slot_bytes} B ({slot_bytes / MiB:g} MiB)"
    else:
        need = f"{option(field)}={-(-nbytes // 4096) * 4096}"
        sizes = f"{nbytes} B", f"{slot_bytes} B"
    raise PayloadTooLarge(
        f"{what} frame of {sizes[0]} does not fit the shared-memory "
        f"{what} slot of {sizes[1]}; raise it with {need}"
    )
