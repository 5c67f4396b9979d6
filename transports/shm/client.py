"""The robot's end of a shared-memory session."""

from __future__ import annotations

import logging
import time
from typing import NoReturn

import posix_ipc

from asyncinf.runtime.errors import (
    CodecError,
    HandshakeError,
    PeerClosed,
    PeerGone,
    SchemaVersionError,
    TransportError,
)
from asyncinf.runtime.messages import (
    SCHEMA_VERSION,
    ActionChunk,
    ErrorMessage,
    Goodbye,
    Handshake,
    HandshakeReply,
    Observation,
)
from asyncinf.transports import codec
from asyncinf.transports.base import ClientTransport
from asyncinf.transports.counters import ShmClientCounters
from asyncinf.transports.shm import names
from asyncinf.transports.shm.endpoint import ShmEnd, raise_too_large
from asyncinf.transports.shm.integrity import crc32
from asyncinf.transports.shm.segment import Segment

log = logging.getLogger(__name__)
_BusyError = posix_ipc.BusyError


class ShmClientTransport(ShmEnd, ClientTransport):
    """Client end: newest-wins observations up (never waits), chunks and errors down in order.

    Get one with `ShmClientTransport.attach(name)`.
    """

    SIDE = "client"
    PEER = "server"
    OWN_LOCK = names.UP_LOCK

    def __init__(self, segment: Segment) -> None:
        super().__init__(segment)
        self._obs_slot_bytes = self.layout.obs.slot_bytes
        self._want_reply = False
        self.observations_sent = 0
        self.observation_bytes = 0
        self.chunks_received = 0
        self.errors_received = 0

    # --- handshake ---------------------------------------------------------------------------

    def handshake(self, hello: Handshake, timeout_s: float) -> HandshakeReply:
        """Send `hello` on the control ring and wait for the server's reply.

        Raises HandshakeError when refused or when the schema versions differ,
        TimeoutError when no reply comes within `timeout_s`.
        """
        if self._closed:
            raise TransportError(f"client end of {self.name} is closed")
        deadline = time.monotonic() + timeout_s
        # A new session: whatever an earlier one left on the way down is not for us.
        self._acquire(self._down_lock)
        try:
            self._guard.check()  # a segment found corrupt serves no session again
            freed = self._chunks.discard_all()
            self._dnctl.discard_all()
        finally:
            self._down_lock.release()
        for _ in range(freed):
            self._space.release()
        self._peer_closed = self._peer_gone = None
        self._had_peer = False
        self._push_control(self._upctl, self._up_lock, self._up_bell, hello, None)
        self._want_reply = True
        try:
            while True:
                msg = self._wait(self._down_bell, self._poll, deadline - time.monotonic())
                if msg is None:
                    raise TimeoutError(
                        f"no handshake reply from the server of {self.name} within {timeout_s} s"
                    )
                if isinstance(msg, HandshakeReply):
                    break
                log.debug("%s: dropped %s from before the handshake", self.name, type(msg).__name__)
        finally:
            self._want_reply = False
        if msg.schema_version != SCHEMA_VERSION:
            raise HandshakeError(
                f"server speaks schema version {msg.schema_version}, this client speaks "
                f"{SCHEMA_VERSION}: {msg.message}"
            )
        if not msg.accepted:
            raise HandshakeError(f"server refused the session: {msg.message}")
        self._had_peer = True
        return msg

    # --- observations up ---------------------------------------------------------------------

    def send_observation(self, observation: Observation) -> None:
        """Encode straight into a free slot and publish it as the newest. Never waits for
        the server (only for the up-lock, held by anyone for microseconds)."""
        if self._closed or self._peer_closed is not None or self._peer_gone is not None:
            self._check_open()
        observation.sent_ns = sent_ns = time.monotonic_ns()
        frame = codec.FrameWriter(observation)
        nbytes = frame.nbytes
        if nbytes > self._obs_slot_bytes:
            slot_bytes = self._obs_slot_bytes
            raise_too_large("observation", nbytes, slot_bytes, "obs_slot_bytes")
        lock, obs = self._up_lock, self._obs
        try:
            lock.acquire(0)  # _acquire's first step, without its call
        except _BusyError:
            self._wait_lock(lock)
        try:
            self._guard.check()
            slot = obs.pick()
        finally:
            lock.release()
        view = obs.views[slot]
        frame.write(view)  # outside the lock: the server will not read it
        crc = crc_bytes = 0
        if self._crc_on:
            crc_bytes = nbytes if self._crc_all else frame.lead_bytes
            crc = crc32(view[:crc_bytes])
        try:
            lock.acquire(0)
        except _BusyError:
            self._wait_lock(lock)
        try:
            obs.publish(slot, nbytes, sent_ns, crc, crc_bytes)
        finally:
            lock.release()
        self._up_bell.release()
        self.observations_sent += 1
        self.observation_bytes += nbytes
        if sent_ns >= self._next_peer_check_ns:
            self._maybe_check_peer()

    # --- chunks and errors down --------------------------------------------------------------

    def receive(self, timeout_s: float) -> ActionChunk | ErrorMessage | None:
        """The next chunk or error in the order the server sent them; None after `timeout_s`.

        Raises PeerClosed after the server's goodbye, PeerGone when it died or hung.
        """
        if self._closed or self._peer_closed is not None or self._peer_gone is not None:
            self._check_open()
        msg = self._wait(self._down_bell, self._poll, timeout_s)
        if msg is None:
            self._maybe_check_peer()
            return None
        if type(msg) is ActionChunk:
            self.chunks_received += 1
        else:
            self.errors_received += 1
        return msg

    def _poll(self) -> ActionChunk | ErrorMessage | HandshakeReply | None:
        """Take the oldest frame of the two down rings (by sequence number), if any."""
        while True:
            self._guard.check()
            if not (self._chunks.pending() or self._dnctl.pending()):
                return None  # nothing, as far as a look without the lock can tell
            lock = self._down_lock
            try:
                lock.acquire(0)  # _acquire's first step, without its call
            except _BusyError:
                self._wait_lock(lock)
            try:
                self._guard.check()
                ctl_seq = self._dnctl.peek_seq()
                # Copied out under the lock: a chunk is a few KiB, and the slot is free at once.
                frame = self._chunks.take_before(ctl_seq)
                ring = self._chunks
                if frame is None:
                    if ctl_seq < 0:
                        return None
                    frame, ring = self._dnctl.take(), self._dnctl
            finally:
                lock.release()
            if ring is self._chunks:
                self._space.release()
            try:
                msg = codec.decode(frame)
            except CodecError as exc:
                self._refuse_frame(exc, ring.region)
            if type(msg) is ActionChunk or isinstance(msg, ErrorMessage):
                return msg
            if isinstance(msg, Goodbye):
                self._peer_closed = msg.reason or "goodbye"
                raise PeerClosed(f"server said goodbye: {self._peer_closed}")
            if isinstance(msg, HandshakeReply) and self._want_reply:
                return msg
            log.debug("%s: ignored %s", self.name, type(msg).__name__)

    def _refuse_frame(self, exc: CodecError, region: str) -> NoReturn:
        """Raise for a down frame that did not decode: a schema mismatch, or corruption."""
        if isinstance(exc, SchemaVersionError):
            raise HandshakeError(
                f"server speaks schema version {exc.theirs}, this client speaks {exc.ours}"
            ) from None
        # Its CRC matched, so the server wrote it so, or something wrote before the CRC was
        # taken: either way no frame of this segment is to be trusted.
        self._guard.fail(region, f"undecodable frame: {exc}")

    # --- rest --------------------------------------------------------------------------------

    def stats(self) -> ShmClientCounters:
        sent = self.observations_sent
        return ShmClientCounters(
            observations_sent=sent,
            bytes_per_observation=self.observation_bytes / sent if sent else 0.0,
            chunks_received=self.chunks_received,
            errors_received=self.errors_received,
            corruption_found=self._guard.found,
        )

    def _check_open(self) -> None:
        if self._closed:
            raise TransportError(f"client end of {self.name} is closed")
        if self._peer_closed is not None:
            raise PeerClosed(f"server said goodbye: {self._peer_closed}")
        if self._peer_gone is not None:
            raise PeerGone(self._peer_gone)

    def _say_goodbye(self) -> None:
        bye = Goodbye("client closed")
        self._push_control(self._upctl, self._up_lock, self._up_bell, bye, None)
