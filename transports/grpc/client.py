"""The robot's end over gRPC: never blocks the control loop, and reconnects by itself.

Threads and hand-offs:
- `send_observation` swaps the observation into a newest-wins slot (a short lock, no I/O).
  The stream's request generator — run by gRPC on its own thread — takes it (its frames
  already fitted by the client loop), JPEG-encodes them if asked, serializes and sends it; it
  sends a heartbeat whenever it has had nothing to send for `heartbeat_interval_s`. The
  caller must not modify a handed-over observation's arrays afterwards. `send_observation`
  then waits (at most `HANDOFF_WAIT_S`) until the sender has serialized it: that thread needs
  the GIL, and a control loop going on with its tick would hold it for the rest of the tick
  (measured: a 2 ms tick body added 2 ms to every round trip).
- A reader thread per stream parses what arrives; chunks and errors go to a queue that
  `receive(timeout_s)` takes from, in order.
- `report` (the loop's counters, for the server's metrics) is kept and sent in a heartbeat
  at most once per `heartbeat_interval_s`, also while observations flow.
- A supervisor thread watches the stream: a server silent beyond `heartbeat_timeout_s`, a
  broken stream or a server goodbye ends it.

Reconnect semantics (`reconnect=True`, the default): when the stream is lost, the transport
backs off (`reconnect_backoff_s`, doubling up to `reconnect_backoff_max_s`, with jitter),
reconnects and re-handshakes with the same Handshake and client id (so the server lets it
replace its own stale session), and carries on. Meanwhile `receive` returns None and
`send_observation` drops what it is given (counted in `observations_dropped`: nothing stale
is sent after the reconnect). Chunks and errors of a stream that has ended are never handed
out, even those read before it broke (`stale_dropped`): through a balancer the next stream
is another replica's session, and the dead one's actions must not run after the break. A
draining server's goodbye ("server draining: ...") is not a failure: the transport
reconnects at once, without backing off, and lands on another replica. The loop sees
`connected` turn False and back True (so it can hold the robot while the server is away),
and `disconnects` and `reconnects` count up. Only what cannot heal raises, from `receive` and
`send_observation`: a refused re-handshake (`HandshakeError`), a refused token
(`Unauthenticated`), giving up after `reconnect_give_up_s` (`PeerGone`). With
`reconnect=False` a lost stream raises `PeerGone` (or `PeerClosed` on a server goodbye).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import queue
import random
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc

from asyncinf.runtime.errors import (
    CodecError,
    ConfigError,
    HandshakeError,
    PeerClosed,
    PeerGone,
    ServerDraining,
    ServerNotServing,
    SessionBusy,
    TransportError,
    Unauthenticated,
)
from asyncinf.runtime.images import import_cv2
from asyncinf.runtime.messages import (
    SCHEMA_VERSION,
    ActionChunk,
    ClientReport,
    ErrorMessage,
    Handshake,
    HandshakeReply,
    Observation,
)
from asyncinf.transports.base import ClientTransport
from asyncinf.transports.counters import GrpcClientCounters
from asyncinf.transports.grpc import asyncinf_pb2 as pb
from asyncinf.transports.grpc import convert
from asyncinf.transports.grpc.config import GrpcClientConfig, is_loopback
from asyncinf.transports.grpc.service import CLIENT_ID_KEY, INFO_METHOD, SESSION_METHOD

log = logging.getLogger(__name__)

_FAILED = object()  # queued after the last message once the transport has failed for good
CLOSE_WAIT_S = 1.0  # on close: how long the server has to acknowledge our goodbye
MAX_REPORTED_ROUNDTRIPS = 256  # per report; older ones are dropped when reports back up
# How long send_observation lets the sender thread run before the loop goes on (a raw
# 640×480 frame serializes in ~0.4 ms here; a JPEG takes longer and is not waited for).
HANDOFF_WAIT_S = 0.002


def channel_options(config: GrpcClientConfig) -> list[tuple[str, Any]]:
    """The gRPC channel arguments of the client, each set on purpose (see config.py)."""
    opts: list[tuple[str, Any]] = [
        ("grpc.max_send_message_length", config.max_message_bytes),
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.keepalive_time_ms", int(config.keepalive_time_s * 1000)),
        ("grpc.keepalive_timeout_ms", int(config.keepalive_timeout_s * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        # We reconnect and re-handshake ourselves; gRPC's transparent retries would replay
        # a stream's messages, and its default reconnect backoff grows to two minutes.
        ("grpc.enable_retries", 0),
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", int(config.reconnect_backoff_max_s * 1000)),
    ]
    if config.tls_server_name:
        opts.append(("grpc.ssl_target_name_override", config.tls_server_name))
    return [*opts, *config.extra_options]


def make_channel(config: GrpcClientConfig) -> grpc.Channel:
    options = channel_options(config)
    if not config.tls:
        return grpc.insecure_channel(config.target, options=options)

    def read(path: str | None) -> bytes | None:
        return None if path is None else Path(path).read_bytes()

    creds = grpc.ssl_channel_credentials(
        root_certificates=read(config.tls_ca),
        private_key=read(config.tls_key),
        certificate_chain=read(config.tls_cert),
    )
    return grpc.secure_channel(config.target, creds, options=options)


def auth_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    return () if token is None else (("authorization", f"Bearer {token}"),)


def server_info(config: GrpcClientConfig, timeout_s: float) -> dict[str, Any]:
    """Ask a server whether it is up and busy (a unary call with a deadline).

    Raises PeerGone when it cannot be reached in time, Unauthenticated on a refused token.
    """
    channel = make_channel(config)
    try:
        call = channel.unary_unary(
            INFO_METHOD,
            request_serializer=pb.InfoRequest.SerializeToString,
            response_deserializer=pb.ServerInfo.FromString,
        )
        info = call(
            pb.InfoRequest(),
            timeout=timeout_s,
            metadata=auth_metadata(config.load_token()),
            wait_for_ready=True,
        )
    except grpc.RpcError as exc:
        raise _status_error(exc, config.target, handshaking=True) from None
    finally:
        channel.close()
    return {
        "schema_version": info.schema_version,
        "busy": info.busy,
        "active_session": info.active_session,
    }


class _Unreachable(PeerGone):
    """The stream failed before the server answered, as an unreachable server's does: retried
    a while."""


# Before any answer: UNAVAILABLE (not listening yet, TLS mismatch), or INTERNAL, which is how
# a balancer's reset stream arrives when the replica it picked goes away under the handshake
# (nginx: "Stream removed", RST_STREAM). A server that answered never ends a stream so.
_UNREACHABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL})


def _code(exc: grpc.RpcError) -> grpc.StatusCode:
    return exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN


def _details(exc: grpc.RpcError) -> str:
    return (exc.details() if isinstance(exc, grpc.Call) else str(exc)) or ""


# How a server loading its policy or draining refuses a new stream (UNAVAILABLE + these).
NOT_SERVING_PREFIXES = ("server starting", "server draining")


def _not_serving(exc: grpc.RpcError) -> bool:
    return _code(exc) is grpc.StatusCode.UNAVAILABLE and _details(exc).startswith(
        NOT_SERVING_PREFIXES
    )


def _draining(reason: str) -> bool:
    """A goodbye that asks us to reconnect elsewhere (the server is draining)."""
    return reason.startswith(NOT_SERVING_PREFIXES[1])


def _status_error(exc: grpc.RpcError, target: str, *, handshaking: bool) -> TransportError:
    """A typed error for a failed call's status."""
    code, details = _code(exc), _details(exc)
    if _not_serving(exc):
        return ServerNotServing(f"server at {target}: {details}")
    if code is grpc.StatusCode.UNAUTHENTICATED:
        return Unauthenticated(f"server at {target} refused our credentials: {details}")
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED and details.startswith("server busy"):
        return SessionBusy(f"server at {target}: {details}")
    if code is grpc.StatusCode.FAILED_PRECONDITION and handshaking:
        return HandshakeError(f"server at {target} refused the session: {details}")
    if code is grpc.StatusCode.DEADLINE_EXCEEDED and handshaking:
        return PeerGone(f"server at {target} did not answer in time: {details}")
    return PeerGone(f"stream to {target} lost ({code.name}): {details}")


class _Link:
    """One stream: its call, its handshake reply and its health."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.call: Any = None  # grpc's call object: response iterator + cancel()
        self.reply: HandshakeReply | None = None
        self.replied = threading.Event()
        self.ready = False  # accepted: observations may flow
        self.ended = threading.Event()
        self.error: TransportError | None = None
        self.ended_ns = 0  # monotonic: when the stream was found broken or closed
        self.last_rx_ns = time.monotonic_ns()
        self.delivering = False  # reader blocked on a full receive queue: not the server's fault

    def end(self, error: TransportError) -> None:
        if not self.ended.is_set():
            self.error = error
            self.ended_ns = time.monotonic_ns()
            self.ended.set()

    def cancel(self) -> None:
        if self.call is not None:
            self.call.cancel()


class GrpcClientTransport(ClientTransport):
    """A client end; nothing is connected until `handshake()`."""

    def __init__(self, config: GrpcClientConfig) -> None:
        self.config = config
        token = config.load_token()
        if config.image_codec == "jpeg":
            import_cv2()  # fail now, not on the first frame
        if token and not config.tls and not is_loopback(config.host):
            log.warning(
                "sending the bearer token to %s without TLS: anyone on the path can read it; "
                "use --tls-ca",
                config.target,
            )
        self.client_id = config.client_id or uuid.uuid4().hex
        self._metadata = ((CLIENT_ID_KEY, self.client_id), *auth_metadata(token))
        self._limits = convert.Limits(config.max_tensor_elements, config.max_message_bytes)
        self._channel = make_channel(config)
        self._session = self._channel.stream_stream(SESSION_METHOD)  # bytes in, bytes out
        self._cond = threading.Condition()
        self._pending: Observation | None = None
        self._given = 0  # observations put in the slot, and how many of them the sender has
        self._serialized = 0  # taken and serialized (or failed to): the hand-off's progress
        self._control: collections.deque[bytes] = collections.deque()
        self._inbox: queue.Queue[Any] = queue.Queue(maxsize=config.receive_queue_depth)
        self._closed = threading.Event()
        self._hello: Handshake | None = None
        self._link: _Link | None = None
        self._links = 0
        self._failure: TransportError | None = None
        self._supervisor: threading.Thread | None = None
        self._readers: list[threading.Thread] = []
        self._hb_seq = 0
        self._lost_ns = 0  # ended_ns of the last stream lost
        self._report: ClientReport | None = None  # not sent yet (guarded by _cond)
        self.reply: HandshakeReply | None = None
        # Counters (read them any time; written by the transport's threads).
        self.observations_sent = 0
        self.observations_replaced = 0  # overwritten in the slot by a newer one (newest wins)
        self.observations_dropped = 0  # handed over while disconnected
        self.observations_failed = 0  # could not be encoded (reported as an ErrorMessage)
        self.bytes_sent = 0  # serialized observation messages, as sent
        self.raw_image_bytes = 0  # the same observations' images as captured
        self.chunks_received = 0
        self.errors_received = 0
        self.disconnects = 0
        self.reconnects = 0
        self.drains = 0  # of disconnects: a draining server's goodbye
        self.stale_dropped = 0  # chunks and errors of an ended stream, not handed out
        self.last_disconnect_reason = ""

    # --- ClientTransport ---------------------------------------------------------------------

    def handshake(self, hello: Handshake, timeout_s: float) -> HandshakeReply:
        """Connect (within `connect_timeout_s`) and agree with the server within `timeout_s`.

        Raises HandshakeError (refused: schema, policy, image shapes), SessionBusy (or
        ServerNotServing: loading its policy, draining; both worth asking again),
        Unauthenticated, PeerGone (unreachable) or TimeoutError (no answer in time).
        """
        if self._hello is not None:
            raise TransportError("handshake() was done; after a reconnect it is redone itself")
        if self._closed.is_set():
            raise PeerClosed("transport closed")
        link, reply = self._open_link(hello, time.monotonic() + timeout_s)
        self._hello = hello
        self._install(link, reply)
        self._supervisor = threading.Thread(
            target=self._supervise, name="asyncinf-grpc-supervisor", daemon=True
        )
        self._supervisor.start()
        return reply

    def send_observation(self, observation: Observation) -> None:
        if self._failure is not None:
            raise self._failure
        if self._hello is None:
            raise TransportError("send_observation() before handshake()")
        observation.sent_ns = time.monotonic_ns()
        with self._cond:
            if self._closed.is_set():
                raise PeerClosed("transport closed")
            link = self._link
            if link is None or not link.ready or link.ended.is_set():
                self.observations_dropped += 1
                return
            if self._pending is not None:
                self.observations_replaced += 1
            self._pending = observation
            self._given += 1
            given = self._given
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._serialized >= given, HANDOFF_WAIT_S)

    def report(self, report: ClientReport) -> None:
        with self._cond:
            if self._report is not None:  # not sent yet: keep its round trips too
                both = self._report.roundtrip_ns + report.roundtrip_ns
                report.roundtrip_ns = both[-MAX_REPORTED_ROUNDTRIPS:]
            self._report = report

    def receive(self, timeout_s: float) -> ActionChunk | ErrorMessage | None:
        if self._hello is None:
            raise TransportError("receive() before handshake()")
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            try:
                get = self._inbox.get
                link, msg = get(timeout=remaining) if remaining > 0 else get(block=False)
            except queue.Empty:
                link, msg = None, _FAILED if self._failure is not None else None
            if msg is _FAILED:
                self._queue_failed_marker()
                raise self._failure
            if link is None or not link.ended.is_set():
                return msg
            self.stale_dropped += 1  # read before its stream broke: from a dead session

    def close(self) -> None:
        if self._closed.is_set():
            return
        with self._cond:
            self._closed.set()
            link = self._link
            if link is not None and link.ready and not link.ended.is_set():
                self._control.append(convert.goodbye_up("client closing"))
            self._cond.notify_all()
        if link is not None:
            link.ended.wait(CLOSE_WAIT_S)  # the server ends the stream on our goodbye
            link.cancel()
        self._channel.close()
        for t in (self._supervisor, *self._readers):
            if t is not None and t is not threading.current_thread():
                t.join(CLOSE_WAIT_S)
        log.info(
            "gRPC client closed: %d observations sent, %.0f B each on average",
            self.observations_sent,
            self.bytes_sent / max(1, self.observations_sent),
        )

    # --- what the loop may look at -------------------------------------------------------

    @property
    def connected(self) -> bool:
        link = self._link
        return link is not None and link.ready and not link.ended.is_set()

    def stats(self) -> GrpcClientCounters:
        """Counters for the run summary, bytes per observation included."""
        n = max(1, self.observations_sent)
        return GrpcClientCounters(
            transport="grpc",
            image_codec=self.config.image_codec,
            observations_sent=self.observations_sent,
            observations_replaced=self.observations_replaced,
            observations_dropped=self.observations_dropped,
            observations_failed=self.observations_failed,
            bytes_sent=self.bytes_sent,
            bytes_per_observation=self.bytes_sent / n,
            raw_image_bytes_per_observation=self.raw_image_bytes / n,
            chunks_received=self.chunks_received,
            errors_received=self.errors_received,
            disconnects=self.disconnects,
            reconnects=self.reconnects,
            drains=self.drains,
            stale_dropped=self.stale_dropped,
            last_disconnect_reason=self.last_disconnect_reason,
        )

    @property
    def last_disconnect_ns(self) -> int:
        """Monotonic time the last stream was found broken or closed; 0: never."""
        link = self._link
        return link.ended_ns if link is not None and link.ended.is_set() else self._lost_ns

    # --- connecting ----------------------------------------------------------------------

    def _open_link(self, hello: Handshake, deadline: float) -> tuple[_Link, HandshakeReply]:
        """Open a stream and handshake on it; the link is cancelled if anything fails.

        A server that cannot be reached (UNAVAILABLE before any answer: not listening yet,
        TLS mismatch) is retried with a short backoff for up to `connect_timeout_s`.
        """
        cfg = self.config
        connect_deadline = min(deadline, time.monotonic() + cfg.connect_timeout_s)
        delay_s = 0.05
        while True:
            link = self._start_link(hello)
            try:
                reply = self._await_reply(link, deadline)
                self._check_reply(reply)
            except _Unreachable as exc:
                link.cancel()
                if time.monotonic() + delay_s >= connect_deadline:
                    raise PeerGone(
                        f"cannot reach {cfg.target} within {cfg.connect_timeout_s:g} s "
                        f"({exc}): is `asyncinf serve` running there, and do the TLS "
                        "settings match?"
                    ) from None
                if self._closed.wait(delay_s):
                    raise PeerClosed("transport closed") from None
                delay_s = min(2 * delay_s, 1.0)
                continue
            except BaseException:
                link.end(PeerClosed("handshake abandoned"))
                link.cancel()
                raise
            return link, reply

    def _start_link(self, hello: Handshake) -> _Link:
        self._links += 1
        link = _Link(self._links)
        first = convert.handshake_to_up(hello, self.client_id)
        link.call = self._session(self._requests(link, first), metadata=self._metadata)
        reader = threading.Thread(
            target=self._read, args=(link,), name=f"asyncinf-grpc-read-{link.number}", daemon=True
        )
        self._readers = [t for t in self._readers if t.is_alive()]
        self._readers.append(reader)
        reader.start()
        return link

    def _await_reply(self, link: _Link, deadline: float) -> HandshakeReply:
        while not (link.replied.is_set() or link.ended.is_set()):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"server at {self.config.target} did not answer the handshake")
            if self._closed.is_set():
                raise PeerClosed("transport closed")
            link.replied.wait(min(remaining, 0.1))
        if not link.replied.is_set():
            raise link.error
        return link.reply

    def _check_reply(self, reply: HandshakeReply) -> None:
        """Refuse what cannot work."""
        target = self.config.target
        if not reply.accepted:
            versions = (
                ""
                if reply.schema_version == SCHEMA_VERSION
                else f" (client speaks schema version {SCHEMA_VERSION}, "
                f"server {reply.schema_version})"
            )
            raise HandshakeError(
                f"server at {target} refused the session: {reply.message}{versions}"
            )
        if reply.schema_version != SCHEMA_VERSION:
            raise HandshakeError(
                f"server at {target} speaks schema version {reply.schema_version}, "
                f"this client {SCHEMA_VERSION}"
            )

    def _install(self, link: _Link, reply: HandshakeReply) -> None:
        with self._cond:
            self._link = link
            self.reply = reply
            self._pending = None
            link.ready = True
            self._cond.notify_all()
        log.info(
            "session with %s: image shapes %s, %d actions per chunk, codec %s",
            self.config.target,
            reply.image_shapes,
            reply.actions_per_chunk,
            self.config.image_codec,
        )

    def _supervise(self) -> None:
        cfg = self.config
        while not self._closed.is_set():
            link = self._link
            if not link.ended.wait(cfg.heartbeat_interval_s):
                silent_s = (time.monotonic_ns() - link.last_rx_ns) / 1e9
                if silent_s > cfg.heartbeat_timeout_s and not link.delivering:
                    link.end(PeerGone(f"server silent for {silent_s:.1f} s"))
                    link.cancel()
                continue
            if self._closed.is_set():
                return
            self._on_lost(link)
            error = link.error
            if not cfg.reconnect or isinstance(error, HandshakeError):
                self._fail(error)
                return
            if not self._reconnect(drained=isinstance(error, ServerDraining)):
                return

    def _on_lost(self, link: _Link) -> None:
        with self._cond:
            if self._pending is not None:
                self.observations_dropped += 1
                self._pending = None
            self.disconnects += 1
            self._lost_ns = link.ended_ns
            self.last_disconnect_reason = str(link.error)
            self._cond.notify_all()
        if isinstance(link.error, ServerDraining):
            self.drains += 1
            log.info("%s: reconnecting (through a balancer: to another replica)", link.error)
        else:
            log.warning("lost the server at %s: %s", self.config.target, link.error)

    def _reconnect(self, drained: bool = False) -> bool:
        """Back off and reconnect until it works; a drained session's first try is at once
        (the server asked us to go: nothing is wrong with trying now)."""
        cfg = self.config
        started = time.monotonic()
        attempt = 0
        while True:
            delay = min(cfg.reconnect_backoff_max_s, cfg.reconnect_backoff_s * 2**attempt)
            jitter = random.uniform(0.5, 1.0)  # noqa: S311
            if (attempt or not drained) and self._closed.wait(delay * jitter):
                return False
            attempt += 1
            try:
                budget = cfg.connect_timeout_s + cfg.handshake_timeout_s
                link, reply = self._open_link(self._hello, time.monotonic() + budget)
            except HandshakeError as exc:
                if not isinstance(exc, SessionBusy):
                    self._fail(exc)
                    return False
                error: Exception = exc
            except (TransportError, TimeoutError) as exc:
                error = exc
            else:
                self._install(link, reply)
                self.reconnects += 1
                log.warning(
                    "reconnected to %s after %.1f s (attempt %d); re-handshake accepted",
                    cfg.target,
                    time.monotonic() - started,
                    attempt,
                )
                return True
            if self._closed.is_set():
                return False
            log.info("reconnect attempt %d to %s failed: %s", attempt, cfg.target, error)
            waited = time.monotonic() - started
            if cfg.reconnect_give_up_s is not None and waited >= cfg.reconnect_give_up_s:
                self._fail(
                    PeerGone(
                        f"server at {cfg.target} unreachable for {waited:.0f} s; "
                        f"last error: {error}"
                    )
                )
                return False

    def _fail(self, error: TransportError) -> None:
        """The transport cannot go on: `receive` and `send_observation` raise `error`."""
        log.error("gRPC transport to %s failed: %s", self.config.target, error)
        with self._cond:
            self._failure = error
            self._pending = None
            self._cond.notify_all()
        self._queue_failed_marker()

    def _queue_failed_marker(self) -> None:
        # When full, receive() raises once it has drained the queue and found it empty.
        with contextlib.suppress(queue.Full):
            self._inbox.put_nowait((None, _FAILED))

    # --- the stream's two directions -------------------------------------------------------

    def _requests(self, link: _Link, first: bytes) -> Iterator[bytes]:
        """Run by gRPC's sender thread: the handshake, then observations and heartbeats."""
        hb_ns = int(self.config.heartbeat_interval_s * 1e9)
        yield first
        last_tx = last_beat = time.monotonic_ns()
        while True:
            obs = None
            with self._cond:
                while True:
                    if link.ended.is_set():
                        return
                    if self._control:
                        data = self._control.popleft()
                        break
                    if self._closed.is_set():
                        return
                    if link.ready and self._pending is not None:
                        obs, self._pending = self._pending, None
                        given = self._given
                        break
                    now = time.monotonic_ns()
                    next_ns = last_tx + hb_ns  # a heartbeat when nothing else was sent
                    report = self._report if link.ready else None
                    if report is not None:  # and one per interval with the loop's report
                        next_ns = min(next_ns, last_beat + hb_ns)
                    if now >= next_ns:
                        self._hb_seq += 1
                        if report is not None:
                            self._report = None
                        data = convert.heartbeat_up(self._hb_seq, now, report)
                        last_beat = now
                        break
                    self._cond.wait((next_ns - now) / 1e9)
            if obs is not None:
                data = self._encode(obs)
                with self._cond:
                    self._serialized = given
                    self._cond.notify_all()
                if data is None:
                    continue
            last_tx = time.monotonic_ns()
            yield data

    def _encode(self, obs: Observation) -> bytes | None:
        try:
            cfg = self.config
            data = convert.observation_to_up(obs, cfg.image_codec, cfg.jpeg_quality)
        except (CodecError, ConfigError, ValueError) as exc:
            self.observations_failed += 1
            log.error("observation for timestep %d not sent: %s", obs.timestep, exc)
            self._deliver(ErrorMessage("bad_observation", f"not sent: {exc}", obs.timestep), None)
            return None
        self.observations_sent += 1
        self.bytes_sent += len(data)
        self.raw_image_bytes += sum(img.nbytes for img in obs.images.values())
        return data

    def _read(self, link: _Link) -> None:
        target = self.config.target
        try:
            for raw in link.call:
                link.last_rx_ns = time.monotonic_ns()
                down = convert.parse_down(raw)
                kind = down.WhichOneof("msg")
                if kind == "chunk":
                    self.chunks_received += 1
                    self._deliver(convert.chunk_from_proto(down.chunk, self._limits), link)
                elif kind == "error":
                    self.errors_received += 1
                    self._deliver(convert.error_from_proto(down.error), link)
                elif kind == "reply":
                    link.reply = convert.reply_from_proto(down.reply, self._limits)
                    link.replied.set()
                elif kind == "goodbye":
                    reason = down.goodbye.reason
                    said = f"server at {target} said goodbye: {reason}"
                    link.end(ServerDraining(said) if _draining(reason) else PeerClosed(said))
            link.end(PeerClosed(f"server at {target} ended the session"))
        except grpc.RpcError as exc:
            unreachable = _code(exc) in _UNREACHABLE_CODES and not _not_serving(exc)
            if not link.replied.is_set() and unreachable:
                link.end(_Unreachable(f"{_code(exc).name}: {_details(exc)}"))
            else:
                link.end(_status_error(exc, target, handshaking=not link.ready))
        except CodecError as exc:
            link.end(PeerGone(f"server at {target} sent a malformed message: {exc}"))
            link.cancel()

    def _deliver(self, msg: ActionChunk | ErrorMessage, link: _Link | None) -> None:
        """Queue for receive(); waits (never drops) while the loop is not taking them."""
        while True:
            try:
                self._inbox.put((link, msg), timeout=0.1)
            except queue.Full:
                if self._closed.is_set():
                    return
                if link is not None:
                    link.delivering = True
            else:
                if link is not None:
                    link.delivering = False
                    link.last_rx_ns = time.monotonic_ns()
                return


def open_client(spec: dict[str, Any]) -> GrpcClientTransport:
    """A client transport from a plain map of `GrpcClientConfig` fields."""
    return GrpcClientTransport(GrpcClientConfig.from_dict(spec))
