"""The transport interface: what the client end and the server end of a session can do.

Two implementations: `shm` (same host, shared memory) and `grpc` (remote). The client and
server loops are written against these classes only, so they run over either.

Semantics every implementation keeps:
- `ClientTransport.send_observation` never blocks: the newest observation replaces one the
  server has not taken yet ("newest wins").
- Chunks and errors reach the client in the order the server sent them, every one.
- `ServerTransport.next_observation` returns a `Lease`: the observation stays valid and
  unmodified until the lease is released, however many newer observations arrive meanwhile.
- Every blocking call takes a timeout; a dead peer raises `PeerGone`, an orderly goodbye
  raises `PeerClosed` (both `ConnectionError`s).
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Callable
from types import TracebackType

from asyncinf.runtime.messages import (
    ActionChunk,
    ClientReport,
    ErrorMessage,
    Handshake,
    HandshakeReply,
    Observation,
)
from asyncinf.transports.counters import ClientCounters, NoCounters


class WhenFull(enum.Enum):
    """Back-pressure policy of the server → client chunk queue (chunks are never dropped)."""

    BLOCK = "block"  # wait up to the call's timeout for the client to drain, then raise Full
    ERROR = "error"  # raise queue.Full at once


class Lease:
    """An observation the server holds; its arrays may be views on transport memory.

    Use it as a context manager or call `release()`; do not keep the arrays after that.
    """

    __slots__ = ("_release", "available_ns", "observation", "taken_ns")

    def __init__(
        self,
        observation: Observation,
        available_ns: int,
        taken_ns: int,
        release: Callable[[], None] | None = None,
    ) -> None:
        self.observation = observation
        self.available_ns = available_ns  # server clock: when it became available to take
        self.taken_ns = taken_ns  # server clock: when the server took it
        self._release = release

    @property
    def queue_wait_ns(self) -> int:
        return max(0, self.taken_ns - self.available_ns)

    def release(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class _Closable(abc.ABC):
    @abc.abstractmethod
    def close(self) -> None:
        """Release this end's resources. Safe to call twice and on a half-open end."""

    def __enter__(self):  # returns the concrete subclass
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class ClientTransport(_Closable):
    """The robot's end of a session."""

    # Streams lost so far (a self-healing transport counts them): a change tells the loop
    # that its queued actions came from a session that is gone, even one healed between ticks.
    disconnects: int = 0

    @abc.abstractmethod
    def handshake(self, hello: Handshake, timeout_s: float) -> HandshakeReply:
        """Send `hello` and wait for the server's reply. Raises HandshakeError if refused."""

    @abc.abstractmethod
    def send_observation(self, observation: Observation) -> None:
        """Hand over an observation without blocking; sets `observation.sent_ns`."""

    @abc.abstractmethod
    def receive(self, timeout_s: float) -> ActionChunk | ErrorMessage | None:
        """The next chunk or error in order, or None when none arrived within `timeout_s`."""

    @property
    def connected(self) -> bool:
        """False while a self-healing transport is reconnecting (the robot should hold)."""
        return True

    def report(self, report: ClientReport) -> None:
        """Tell the server what the loop counts, for its metrics; never blocks, may be
        dropped or merged. A transport that carries no reports ignores it."""

    def stats(self) -> ClientCounters:
        """Counters for the run summary (e.g. bytes per observation); none by default."""
        return NoCounters()


class SessionEvents:
    """What a server transport tells an observer (e.g. Prometheus metrics) about its sessions,
    from its own threads: every method must be quick and must not raise. No-ops here."""

    def opened(self, session: str, hello: Handshake) -> None:
        """A session was accepted (its handshake answered yes)."""

    def chunk(self, session: str, chunk: ActionChunk) -> None:
        """A chunk was queued for the client."""

    def error(self, session: str, code: str) -> None:
        """An error was sent to the client (`ErrorMessage.code`, or `protocol`)."""

    def client_report(self, session: str, report: ClientReport) -> None:
        """The client told what its loop counts."""

    def ended(self, session: str) -> None:
        """An accepted session is over."""


class ServerTransport(_Closable):
    """The policy's end of a session."""

    # Told about sessions, chunks, errors and client reports; set before serving.
    events: SessionEvents = SessionEvents()
    session_label: str = ""  # the robot it serves, where known (the server's summary)

    @abc.abstractmethod
    def accept(self, timeout_s: float) -> Handshake | None:
        """Wait for a client's handshake; None when none arrived within `timeout_s`."""

    @abc.abstractmethod
    def reply(self, reply: HandshakeReply) -> None:
        """Answer the handshake returned by `accept`."""

    @abc.abstractmethod
    def next_observation(self, timeout_s: float) -> Lease | None:
        """The newest observation not taken yet, or None after `timeout_s`."""

    @abc.abstractmethod
    def publish_chunk(self, chunk: ActionChunk, timeout_s: float) -> None:
        """Queue a chunk for the client; raises queue.Full per the channel's WhenFull policy."""

    @abc.abstractmethod
    def send_error(self, error: ErrorMessage) -> None:
        """Report an error to the client (never blocks on a full chunk queue)."""

    def lanes(self) -> list[ServerTransport]:
        """The ends the server loop serves at once, a session at a time on each: this one
        alone, or (`--max_sessions`) as many as the transport takes sessions at once. They
        share this transport's lifetime: only this one is closed."""
        return [self]

    def set_serving(self, serving: bool) -> None:
        """Whether new sessions are taken and health checks say SERVING (a transport with a
        health service refuses new sessions, retryably, while not serving)."""

    def drain(self) -> None:
        """Stop for good: report NOT_SERVING and refuse new sessions; the current one goes on
        until `close()`, whose goodbye tells its client to reconnect elsewhere."""


class LanedServerTransport(ServerTransport):
    """A server end of several lanes (`lanes()`, at least one) whose own session methods
    are its first lane's, for a caller that serves one session at a time."""

    @abc.abstractmethod
    def lanes(self) -> list[ServerTransport]: ...

    def accept(self, timeout_s: float) -> Handshake | None:
        return self.lanes()[0].accept(timeout_s)

    def reply(self, reply: HandshakeReply) -> None:
        self.lanes()[0].reply(reply)

    def next_observation(self, timeout_s: float) -> Lease | None:
        return self.lanes()[0].next_observation(timeout_s)

    def publish_chunk(self, chunk: ActionChunk, timeout_s: float) -> None:
        self.lanes()[0].publish_chunk(chunk, timeout_s)

    def send_error(self, error: ErrorMessage) -> None:
        self.lanes()[0].send_error(error)
