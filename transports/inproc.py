"""Both ends of a session in one process: for tests and for trying a policy without processes.

Same semantics as the real transports (newest-wins observations with leases, ordered chunks
and errors, timeouts), minus the process boundary: `InProcChannel().ends()` gives a client
end and a server end. Users can drive a `RobotClient` tick by tick against it to test
their robot or policy adapters deterministically.
"""

from __future__ import annotations

import collections
import queue
import threading
import time

from asyncinf.runtime.errors import HandshakeError, PeerClosed
from asyncinf.runtime.messages import (
    ActionChunk,
    ErrorMessage,
    Handshake,
    HandshakeReply,
    Observation,
)
from asyncinf.transports.base import ClientTransport, Lease, ServerTransport


class InProcChannel:
    def __init__(self, max_chunks: int = 8) -> None:
        self._cond = threading.Condition()
        self._newest: Observation | None = None
        self._hello: Handshake | None = None
        self._reply: HandshakeReply | None = None
        self._down: collections.deque[ActionChunk | ErrorMessage] = collections.deque()
        self._max_chunks = max_chunks
        self._closed = False  # the client said goodbye
        self._server_closed = False

    def ends(self) -> tuple[InProcClient, InProcServer]:
        return InProcClient(self), InProcServer(self)

    def _wait(self, ready, timeout_s: float) -> bool:
        """Wait on the condition (held by the caller) until `ready()` or the timeout."""
        return self._cond.wait_for(ready, timeout=max(0.0, timeout_s))


class InProcClient(ClientTransport):
    def __init__(self, channel: InProcChannel) -> None:
        self._ch = channel

    def handshake(self, hello: Handshake, timeout_s: float) -> HandshakeReply:
        ch = self._ch
        with ch._cond:
            ch._hello, ch._reply = hello, None
            ch._cond.notify_all()
            if not ch._wait(lambda: ch._reply is not None or ch._server_closed, timeout_s):
                raise TimeoutError(f"no handshake reply within {timeout_s} s")
            if ch._reply is None:
                raise PeerClosed("server closed the in-process channel")
            reply = ch._reply
        if not reply.accepted:
            raise HandshakeError(reply.message)
        return reply

    def send_observation(self, observation: Observation) -> None:
        observation.sent_ns = time.monotonic_ns()
        with self._ch._cond:
            self._ch._newest = observation
            self._ch._cond.notify_all()

    def receive(self, timeout_s: float) -> ActionChunk | ErrorMessage | None:
        ch = self._ch
        with ch._cond:
            if not ch._wait(lambda: bool(ch._down) or ch._server_closed, timeout_s):
                return None
            if not ch._down:  # what the server sent before its goodbye is delivered first
                raise PeerClosed("server closed the in-process channel")
            msg = ch._down.popleft()
            ch._cond.notify_all()
            return msg

    def close(self) -> None:
        with self._ch._cond:
            self._ch._closed = True
            self._ch._cond.notify_all()


class InProcServer(ServerTransport):
    def __init__(self, channel: InProcChannel) -> None:
        self._ch = channel

    def accept(self, timeout_s: float) -> Handshake | None:
        ch = self._ch
        with ch._cond:
            if not ch._wait(lambda: ch._hello is not None, timeout_s):
                return None
            hello, ch._hello = ch._hello, None
            ch._closed = False
            return hello

    def reply(self, reply: HandshakeReply) -> None:
        with self._ch._cond:
            self._ch._reply = reply
            self._ch._cond.notify_all()

    def next_observation(self, timeout_s: float) -> Lease | None:
        ch = self._ch
        with ch._cond:
            if not ch._wait(lambda: ch._newest is not None or ch._closed, timeout_s):
                return None
            if ch._closed and ch._newest is None:
                raise PeerClosed("client closed the in-process channel")
            obs, ch._newest = ch._newest, None
        # The client never writes into an Observation it handed over, so no copy is needed.
        return Lease(obs, available_ns=obs.sent_ns, taken_ns=time.monotonic_ns())

    def publish_chunk(self, chunk: ActionChunk, timeout_s: float) -> None:
        ch = self._ch
        with ch._cond:
            if not ch._wait(lambda: len(ch._down) < ch._max_chunks, timeout_s):
                raise queue.Full(f"client took no chunk within {timeout_s} s")
            ch._down.append(chunk)
            ch._cond.notify_all()

    def send_error(self, error: ErrorMessage) -> None:
        with self._ch._cond:
            self._ch._down.append(error)
            self._ch._cond.notify_all()

    def close(self) -> None:
        """The goodbye: the client's next `receive` raises PeerClosed once it has the rest."""
        with self._ch._cond:
            self._ch._server_closed = True
            self._ch._cond.notify_all()
