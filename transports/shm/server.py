"""The policy's end of a shared-memory session."""

from __future__ import annotations

import logging
import queue
import time
from typing import NoReturn

import posix_ipc

from asyncinf.runtime.errors import (
    CodecError,
    PeerClosed,
    PeerGone,
    SchemaVersionError,
    SegmentCorrupt,
    TransportError,
)
from asyncinf.runtime.logs import Throttle
from asyncinf.runtime.messages import (
    ActionChunk,
    ErrorMessage,
    Goodbye,
    Handshake,
    HandshakeReply,
    Observation,
)
from asyncinf.transports import codec
from asyncinf.transports.base import Lease, ServerTransport, WhenFull
from asyncinf.transports.shm import names
from asyncinf.transports.shm.endpoint import ShmEnd, raise_too_large
from asyncinf.transports.shm.integrity import crc32
from asyncinf.transports.shm.layout import W_DOWN_SEQ
from asyncinf.transports.shm.segment import Segment

log = logging.getLogger(__name__)
_throttled = Throttle(log)
_BusyError = posix_ipc.BusyError


class ShmServerTransport(ShmEnd, ServerTransport):
    """Server end: leases the newest observation zero-copy; chunks down in FIFO order.

    Get one with `ShmServerTransport.attach(name)`. One lease at a time: release it
    before asking for the next observation.
    """

    SIDE = "server"
    PEER = "client"
    OWN_LOCK = names.DOWN_LOCK

    def __init__(self, segment: Segment) -> None:
        super().__init__(segment)
        lay = self.layout
        self._chunk_slot_bytes = lay.chunks.slot_bytes
        self._when_full = lay.config.when_full
        self._chunk_head = 0  # this end is the ring's only producer: a private copy
        self._seen_seq = 0
        self._lease_slot: int | None = None
        self._pending_hello: Handshake | None = None

    def _on_register(self) -> None:
        self._chunk_head = self._chunks.head()

    # --- handshake ---------------------------------------------------------------------------

    def accept(self, timeout_s: float) -> Handshake | None:
        """Wait for a client's handshake (any client: a missing one is not an error)."""
        self._check_closed()
        hello, self._pending_hello = self._pending_hello, None
        if hello is None:
            try:
                hello = self._wait(self._up_bell, self._poll_hello, timeout_s, watch_peer=False)
            except SegmentCorrupt:
                # Told once where it was found; this segment serves no one again (the
                # supervisor makes a new one). Wait out the timeout: the caller loops on it.
                self._wait(self._up_bell, lambda: None, timeout_s, watch_peer=False)
                return None
        if hello is not None:
            self._peer_closed = self._peer_gone = None
            self._had_peer = True
        return hello

    def _poll_hello(self) -> Handshake | None:
        while True:
            lock = self._up_lock
            self._acquire(lock)
            try:
                self._guard.check()
                if not self._upctl.count():
                    return None
                frame = self._upctl.take()
                # Observations published before this hello belong to no session of ours.
                seq = self._obs.skip_to_newest()
            finally:
                lock.release()
            msg = self._decode_control(frame)
            if isinstance(msg, Handshake):
                self._seen_seq = seq
                return msg
            log.debug("%s: ignored %s while waiting for a handshake", self.name, msg)

    def _decode_control(self, frame: bytearray) -> object:
        try:
            return codec.decode(frame)
        except SchemaVersionError as exc:
            # The client's very frame format differs: refuse here, naming both versions.
            self.reply(
                HandshakeReply(
                    accepted=False,
                    message=f"client speaks schema version {exc.theirs}, server speaks {exc.ours}",
                )
            )
            _throttled.warning("%s: refused a client of schema version %d", self.name, exc.theirs)
        except CodecError as exc:
            # Its CRC matched, or checksums are off: either way the segment is not to be trusted.
            self._guard.fail(self._upctl.region, f"undecodable frame: {exc}")
        return None

    def reply(self, reply: HandshakeReply) -> None:
        """Answer the handshake returned by `accept` (on the control ring, never blocks)."""
        self._check_closed()
        self._push_control(self._dnctl, self._down_lock, self._down_bell, reply, W_DOWN_SEQ)

    # --- observations ------------------------------------------------------------------------

    def next_observation(self, timeout_s: float) -> Lease | None:
        """Lease the newest observation not taken yet; None after `timeout_s`.

        The arrays are views on the slot: valid and unmodified until the lease is released.
        Raises PeerClosed after the client's goodbye, PeerGone when it died or hung.
        """
        if (
            self._closed
            or self._lease_slot is not None
            or self._peer_closed is not None
            or self._peer_gone is not None
        ):
            self._refuse_lease()
        try:
            lease = self._wait(self._up_bell, self._poll_observation, timeout_s)
        except PeerGone as exc:
            # A client that was only paused must learn, when it runs again, that its session
            # is over (instead of sending to a server waiting for a handshake): it reads this
            # after the chunks already sent, and detaches. The next handshake discards it.
            self._push_control(
                self._dnctl, self._down_lock, self._down_bell,
                Goodbye(f"session ended: {exc}"), W_DOWN_SEQ,
            )  # fmt: skip
            raise
        if lease is None:
            self._maybe_check_peer()
        return lease

    def _refuse_lease(self) -> NoReturn:
        """Why no observation may be leased now (one test of the four on the hot path)."""
        self._check_closed()
        if self._lease_slot is not None:
            raise RuntimeError("release the current lease before taking the next observation")
        self._check_peer()  # raises the verdict again
        raise AssertionError("unreachable: a verdict was set")

    def _check_observation(self, view: memoryview, sent_ns: int, crc: int, n: int) -> Observation:
        """Decode a leased frame, or raise SegmentCorrupt: nothing unchecked reaches a policy."""
        region = "observation frame"
        if self._crc_on:
            if self._crc_all and n != len(view):
                self._guard.fail(
                    region, f"the CRC covers {n} B of a {len(view)} B frame (--shm.checksum=all)"
                )
            if crc32(view[:n]) != crc:
                self._guard.frame(region, view[:n], crc)  # names both CRCs
        try:
            obs = codec.decode(view)
        except CodecError as exc:
            self._guard.fail(region, f"undecodable: {exc}")
        if type(obs) is not Observation:
            self._guard.fail(region, f"holds a {type(obs).__name__}")
        if obs.sent_ns != sent_ns or obs.timestep < 0 or obs.capture_ns < 0:
            self._guard.fail(
                region,
                f"timestep {obs.timestep}, capture_ns {obs.capture_ns}, sent_ns {obs.sent_ns} "
                f"(the table says {sent_ns})",
            )
        return obs

    def _poll_observation(self) -> Lease | None:
        """Control first (goodbye, a new client's hello), then lease the newest observation."""
        self._guard.check()
        if not (self._obs.newer_than(self._seen_seq) or self._upctl.pending()):
            return None  # nothing, as far as a look without the lock can tell
        lock, frame = self._up_lock, None
        try:
            lock.acquire(0)  # _acquire's first step, without its call
        except _BusyError:
            self._wait_lock(lock)
        try:
            self._guard.check()
            if self._upctl.count():
                frame = self._upctl.take()
            else:
                got = self._obs.take_newest(self._seen_seq)
                if got is None:
                    return None
                slot, nbytes, self._seen_seq, sent_ns, crc, crc_bytes = got
                self._lease_slot = slot
                taken_ns = time.monotonic_ns()
        finally:
            lock.release()
        if frame is None:
            try:
                obs = self._check_observation(
                    self._obs.views[slot][:nbytes], sent_ns, crc, crc_bytes
                )
            except BaseException:
                self._release_lease()
                raise
            return Lease(obs, sent_ns, taken_ns, self._release_lease)
        msg = self._decode_control(frame)
        if isinstance(msg, Goodbye):
            self._peer_closed = msg.reason or "goodbye"
            raise PeerClosed(f"client said goodbye: {self._peer_closed}")
        if isinstance(msg, Handshake):
            # A new client: the session we were serving is over; accept() returns this.
            self._pending_hello = msg
            raise PeerClosed("a new client sent a handshake: the previous session is over")
        return None

    def _release_lease(self) -> None:
        """Free the leased slot. Only the newest Lease can call this while its slot is leased
        (the next is refused until it is released, and each Lease calls at most once), so
        the slot needs no name."""
        slot, self._lease_slot = self._lease_slot, None
        if slot is None or self._closed:
            return
        lock = self._up_lock
        try:
            lock.acquire(0)  # _acquire's first step, without its call
        except _BusyError:
            self._wait_lock(lock)
        try:
            self._obs.release(slot)
        finally:
            lock.release()

    # --- chunks and errors -------------------------------------------------------------------

    def publish_chunk(self, chunk: ActionChunk, timeout_s: float) -> None:
        """Append a chunk to the FIFO. When it is full: wait up to `timeout_s` for the client
        (WhenFull.BLOCK) or not at all (WhenFull.ERROR), then raise queue.Full."""
        if self._closed:
            self._check_closed()
        # Encoded and checksummed privately, then copied in (a few KiB): the CRC is of what
        # the policy produced, so a stray write into the slot at any moment is caught.
        writer = codec.FrameWriter(chunk)
        nbytes = writer.nbytes
        if nbytes > self._chunk_slot_bytes:
            raise_too_large("chunk", nbytes, self._chunk_slot_bytes, "chunk_slot_bytes")
        frame = writer.tobytes()
        ring = self._chunks
        crc = crc32(frame) if self._crc_on else 0  # ring.crc(frame), without its call
        try:
            self._space.acquire(0)  # a free slot, most often at once
        except _BusyError:
            self._wait_space(timeout_s)
        ring.views[self._chunk_head % ring.slots][:nbytes] = frame  # free: we hold its token
        lock = self._down_lock
        try:
            lock.acquire(0)  # _acquire's first step, without its call
        except _BusyError:
            self._wait_lock(lock)
        try:
            self._guard.check()
            ring.publish(self._chunk_head, nbytes, self._next_seq(W_DOWN_SEQ), crc)
        finally:
            lock.release()
        self._chunk_head += 1
        self._down_bell.release()

    def _wait_space(self, timeout_s: float) -> None:
        """Take a free chunk slot when none was free at once (or raise queue.Full)."""
        space = self._space
        full = (
            f"chunk ring of {self.name} full ({self._chunks.slots} slots): the client takes "
            "no chunks"
        )
        if self._when_full is WhenFull.ERROR:
            raise queue.Full(f"{full} (--shm.when_full=error)")
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise queue.Full(f"{full} for {timeout_s} s")
            try:
                space.acquire(min(remaining, self._slice_s))
            except posix_ipc.BusyError:
                self._check_peer()
            except posix_ipc.SignalError:
                pass
            else:
                return

    def send_error(self, error: ErrorMessage) -> None:
        """Report an error, in order with the chunks but never behind a full chunk ring.

        Errors travel on the control ring; when the client has let that fill up too, the
        oldest unread control message is dropped (logged) so the newest error gets through.
        """
        self._check_closed()
        self._push_control(self._dnctl, self._down_lock, self._down_bell, error, W_DOWN_SEQ)

    # --- rest --------------------------------------------------------------------------------

    def _check_closed(self) -> None:
        if self._closed:
            raise TransportError(f"server end of {self.name} is closed")

    def _say_goodbye(self) -> None:
        self._release_lease()
        self._push_control(
            self._dnctl, self._down_lock, self._down_bell, Goodbye("server closed"), W_DOWN_SEQ
        )
