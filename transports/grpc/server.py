"""The policy server's end over gRPC: one instance serves successive sessions.

Threads and hand-offs:
- gRPC runs each `Session` stream's response generator (`_write`) on one of its handler
  threads; our reader thread (`_read`) consumes the request stream of the same session.
- The reader parses and checks each message, puts observations in a newest-wins slot and
  handshakes where `accept()` finds them. Outgoing messages (reply, chunks, errors, goodbye)
  wait in one ordered queue that `_write` drains, sending a heartbeat whenever it is idle.
- One lock and condition guard it all; nothing blocks while holding it.

Session lifecycle: a stream takes one of `max_sessions` session slots when it opens (one
more concurrent stream is refused with RESOURCE_EXHAUSTED naming a holder, unless it comes
from the client id of a session held — a reconnect — which replaces its own stale session).
The server loop serves each accepted session on one of `max_sessions` lanes (`lanes()`); the
transport's own session methods are lane 0's, for a caller that serves one at a time.
A stream must send a Handshake within `handshake_timeout_s`. A wrong schema version is
refused right here, naming both versions; anything else is handed to the server loop
through `accept()`/`reply()`. The session ends on the client's goodbye (`PeerClosed`), on
silence beyond `heartbeat_timeout_s`, a broken stream, a protocol violation (`PeerGone`), or
when its lane calls `accept()` again.

Health (`grpc.health.v1`, the official `grpcio-health-checking` servicer): Check and Watch
answer for the whole server ("") and for the AsyncInference service, without a token, so a
balancer, `grpc_health_probe` or Kubernetes can probe. SERVING while `set_serving(True)`
(a bare transport starts so; `asyncinf serve` holds it NOT_SERVING while the policy loads),
NOT_SERVING for good after `drain()`. While not serving, a new stream is refused with
UNAVAILABLE "server starting: ..." or "server draining: ..." — the client retries those like
a busy server (`ServerNotServing`); a session already running goes on until `close()`.

Protocol violations (observation before handshake, two handshakes, undecodable bytes, an
empty message, a client not reading its errors) get an `Error` message with code
`protocol` and then the stream's status (FAILED_PRECONDITION, INVALID_ARGUMENT, ...). A
malformed observation (bad tensor, bad JPEG) only gets an `Error` with code
`bad_observation`: the session goes on with the next one.
"""

from __future__ import annotations

import collections
import datetime
import hmac
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from asyncinf.runtime.errors import (
    CodecError,
    ConfigError,
    PeerClosed,
    PeerGone,
    TransportError,
)
from asyncinf.runtime.messages import (
    SCHEMA_VERSION,
    ActionChunk,
    ErrorMessage,
    Handshake,
    HandshakeReply,
    Observation,
)
from asyncinf.transports.base import LanedServerTransport, Lease, ServerTransport, WhenFull
from asyncinf.transports.grpc import asyncinf_pb2 as pb
from asyncinf.transports.grpc import convert, wire
from asyncinf.transports.grpc.config import GrpcServerConfig, is_loopback
from asyncinf.transports.grpc.service import CLIENT_ID_KEY, SERVICE, SESSION_METHOD

log = logging.getLogger(__name__)

HEALTH_PREFIX = "/grpc.health.v1.Health/"
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# The goodbye a draining server's session gets: the client reconnects (through the balancer).
DRAIN_GOODBYE = "server draining: reconnect to another replica"

# Outgoing errors beyond the chunk bound: a client that sends garbage and never reads the
# answers is cut off here instead of growing our memory.
MAX_PENDING_CONTROL = 64


def server_options(config: GrpcServerConfig) -> list[tuple[str, Any]]:
    """The gRPC channel arguments of the server, each set on purpose (see config.py)."""
    return [
        ("grpc.max_send_message_length", config.max_message_bytes),
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.keepalive_time_ms", int(config.keepalive_time_s * 1000)),
        ("grpc.keepalive_timeout_ms", int(config.keepalive_timeout_s * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        (
            "grpc.http2.min_ping_interval_without_data_ms",
            int(config.min_client_ping_interval_s * 1000),
        ),
        # gRPC's Linux default lets a second server bind the same port and silently share
        # its clients; we want "address in use" instead.
        ("grpc.so_reuseport", 0),
        *config.extra_options,
    ]


def _utc(wall_s: float) -> str:
    return datetime.datetime.fromtimestamp(wall_s, datetime.timezone.utc).strftime(
        "%Y-%m-%d %H:%M:%S UTC"
    )


class _Session:
    """One stream's state. Guarded by the transport's condition."""

    def __init__(self, peer: str, client_id: str, context: grpc.ServicerContext) -> None:
        self.id = uuid.uuid4().hex[:12]
        self.peer = peer
        self.client_id = client_id
        self.context = context
        self.opened_wall_s = time.time()
        self.opened_ns = time.monotonic_ns()
        self.last_rx_ns = self.opened_ns
        self.hello: Handshake | None = None
        self.accepted = False  # taken by accept()
        self.slot: tuple[Observation, int] | None = None  # newest observation, available_ns
        self.out: collections.deque[tuple[bytes, bool]] = collections.deque()  # (msg, is_chunk)
        self.out_chunks = 0
        self.end_error: TransportError | None = None
        self.status: tuple[grpc.StatusCode, str] | None = None  # abort the stream with this
        self.observations_received = 0
        self.observations_replaced = 0
        self.announced = False  # told to `events` as opened (and so, later, as ended)

    @property
    def ended(self) -> bool:
        return self.end_error is not None

    def describe(self) -> str:
        age_s = (time.monotonic_ns() - self.opened_ns) / 1e9
        return f"{self.peer} since {_utc(self.opened_wall_s)} ({age_s:.0f} s)"


class _TokenInterceptor(grpc.ServerInterceptor):
    """Every call must carry `authorization: Bearer <token>`; otherwise UNAUTHENTICATED."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

        def deny(_request: Any, context: grpc.ServicerContext) -> None:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")

        self._deny_unary = grpc.unary_unary_rpc_method_handler(deny)
        self._deny_stream = grpc.stream_stream_rpc_method_handler(deny)

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        got = ""
        for key, value in details.invocation_metadata or ():
            if key == "authorization" and isinstance(value, str):
                got = value
        # Health probes carry no token (Kubernetes' cannot); they only learn SERVING or not.
        if details.method.startswith(HEALTH_PREFIX) or hmac.compare_digest(
            got.encode(), self._expected
        ):
            return continuation(details)
        log.warning("refused a call to %s: missing or wrong bearer token", details.method)
        return self._deny_stream if details.method == SESSION_METHOD else self._deny_unary


class GrpcServerTransport(LanedServerTransport):
    """Listens at construction; `port` is the bound port (useful with port 0)."""

    def __init__(self, config: GrpcServerConfig) -> None:
        self.config = config
        token = config.load_token()
        self._limits = convert.Limits(config.max_tensor_elements, config.max_message_bytes)
        self._cond = threading.Condition()
        self._open: list[_Session] = []  # streams holding a session slot, oldest first
        self._lanes = [_Lane(self) for _ in range(config.max_sessions)]
        self._closing = False
        self._serving = True
        self._draining = False
        self._hb_seq = 0
        self.sessions_opened = 0
        self.sessions_refused_busy = 0
        self.sessions_refused_not_serving = 0
        self.protocol_errors = 0
        self.bad_observations = 0
        self.observations_received = 0  # valid ones, over all sessions
        self.observations_replaced = 0  # overwritten in the slot before the loop took them
        self._server = grpc.server(
            futures.ThreadPoolExecutor(config.max_workers, thread_name_prefix="asyncinf-grpc"),
            options=server_options(config),
            interceptors=[_TokenInterceptor(token)] if token else [],
            maximum_concurrent_rpcs=config.max_workers,
        )
        self._server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    SERVICE,
                    {
                        "Session": grpc.stream_stream_rpc_method_handler(self._session_rpc),
                        "Info": grpc.unary_unary_rpc_method_handler(
                            self._info_rpc,
                            request_deserializer=pb.InfoRequest.FromString,
                            response_serializer=pb.ServerInfo.SerializeToString,
                        ),
                    },
                ),
            )
        )
        self._health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        self._report_health()
        try:
            self.port = self._bind(config)
            self._server.start()
        except BaseException:
            self._server.stop(None)
            raise
        if not is_loopback(config.host) and not (config.tls and token):
            log.warning(
                "listening on %s without %s: anyone who can reach this address can drive the "
                "robot's policy; use --tls-cert/--tls-key and --token-file for remote use",
                config.address,
                " or ".join(
                    w for w, on in (("TLS", config.tls), ("a token", bool(token))) if not on
                ),
            )
        log.info(
            "gRPC policy server listening on %s:%d (%s, %s)",
            config.host,
            self.port,
            "TLS" if config.tls else "plaintext",
            "token required" if token else "no token",
        )

    def _bind(self, config: GrpcServerConfig) -> int:
        try:
            if config.tls:
                ca = Path(config.tls_client_ca).read_bytes() if config.tls_client_ca else None
                creds = grpc.ssl_server_credentials(
                    [(Path(config.tls_key).read_bytes(), Path(config.tls_cert).read_bytes())],
                    root_certificates=ca,
                    require_client_auth=ca is not None,
                )
                port = self._server.add_secure_port(config.address, creds)
            else:
                port = self._server.add_insecure_port(config.address)
        except RuntimeError:  # newer grpc raises "Failed to bind", older returns 0
            port = 0
        if port == 0:
            raise ConfigError(
                f"--host={config.host} --port={config.port}: cannot listen on {config.address} "
                "(address in use, not this host's, or a TLS file gRPC refused); "
                "choose another port (--port=0 picks a free one) or host"
            )
        return port

    # --- ServerTransport -----------------------------------------------------------------

    def set_serving(self, serving: bool) -> None:
        with self._cond:
            self._serving = serving
        self._report_health()

    def drain(self) -> None:
        with self._cond:
            if self._draining:
                return
            self._draining = True
        self._health.enter_graceful_shutdown()  # NOT_SERVING, and no later set() undoes it
        log.info("draining: health NOT_SERVING, no new sessions taken")

    def _report_health(self) -> None:
        status = _SERVING if self._serving else _NOT_SERVING
        for name in ("", SERVICE):
            self._health.set(name, status)

    def lanes(self) -> list[ServerTransport]:
        return list(self._lanes)

    @property
    def _current(self) -> _Session | None:
        """The session lane 0 serves (what a single-session caller accepted)."""
        return self._lanes[0].current

    def stats(self) -> dict[str, Any]:
        """Counters for the server's summary."""
        return {
            "transport": "grpc",
            "port": self.port,
            "sessions_opened": self.sessions_opened,
            "sessions_refused_busy": self.sessions_refused_busy,
            "sessions_refused_not_serving": self.sessions_refused_not_serving,
            "protocol_errors": self.protocol_errors,
            "bad_observations": self.bad_observations,
            "observations_received": self.observations_received,
            "observations_replaced": self.observations_replaced,
        }

    def close(self) -> None:
        with self._cond:
            if self._closing:
                return
            self._closing = True
            why = DRAIN_GOODBYE if self._draining else "server shutting down"
            for s in self._live():
                s.out.append((convert.goodbye_down(why), False))
                self._end(s, PeerClosed(why))
            self._cond.notify_all()
        # The grace lets the writer flush the goodbye; then every stream is cancelled.
        self._health.enter_graceful_shutdown()  # ends open Watch calls with NOT_SERVING
        self._server.stop(self.config.stop_grace_s).wait(self.config.stop_grace_s + 5.0)
        log.info("gRPC policy server on port %d stopped", self.port)

    # --- state helpers (call with the condition held) ------------------------------------

    def _end(self, s: _Session, error: TransportError) -> None:
        if s.end_error is None:
            s.end_error = error
            log.info("session %s from %s ended: %s", s.id, s.peer, error)
            if s.announced:
                self.events.ended(s.id)
        self._cond.notify_all()

    def _push_control(self, s: _Session, data: bytes) -> None:
        if len(s.out) - s.out_chunks >= MAX_PENDING_CONTROL:
            self._violation(s, grpc.StatusCode.RESOURCE_EXHAUSTED, "client is not reading")
            return
        s.out.append((data, False))
        self._cond.notify_all()

    def _violation(self, s: _Session, code: grpc.StatusCode, message: str) -> None:
        self.protocol_errors += 1
        log.warning("session %s from %s: protocol error: %s", s.id, s.peer, message)
        self.events.error(s.id, "protocol")
        if s.status is None:
            s.status = (code, message)
            err = ErrorMessage("protocol", message, fatal=True)
            s.out.append((convert.error_to_down(err), False))
        self._end(s, PeerGone(f"protocol error: {message}"))

    # --- gRPC handlers ---------------------------------------------------------------------

    def _info_rpc(self, _request: pb.InfoRequest, _context: grpc.ServicerContext) -> pb.ServerInfo:
        with self._cond:
            live = self._live()
            return pb.ServerInfo(
                schema_version=SCHEMA_VERSION,
                busy=len(live) >= self.config.max_sessions,
                active_session="; ".join(s.describe() for s in live),
            )

    def _live(self) -> list[_Session]:
        return [s for s in self._open if not s.ended]

    def _session_rpc(
        self, requests: Iterator[bytes], context: grpc.ServicerContext
    ) -> Iterator[bytes]:
        client_id = ""
        for key, value in context.invocation_metadata() or ():
            if key == CLIENT_ID_KEY and isinstance(value, str):
                client_id = value[:64]
        with self._cond:
            if self._closing:
                context.abort(grpc.StatusCode.UNAVAILABLE, "server shutting down")
            if self._draining or not self._serving:
                self.sessions_refused_not_serving += 1
                msg = (
                    "server draining: it is stopping; connect to another replica"
                    if self._draining
                    else "server starting: the policy is loading; ask again shortly"
                )
                log.warning("refused %s: %s", context.peer(), msg)
                context.abort(grpc.StatusCode.UNAVAILABLE, msg)
            live = self._live()
            mine = [h for h in live if client_id and h.client_id == client_id]
            if mine and self.config.allow_takeover:
                held = mine[0]
                log.info("client %s reconnected; replacing its session %s", client_id, held.id)
                self._end(held, PeerGone("replaced by a reconnect of the same client"))
                held.status = (grpc.StatusCode.ABORTED, "replaced by a newer stream")
            elif len(live) >= self.config.max_sessions:
                self.sessions_refused_busy += 1
                held = live[0]
                most = self.config.max_sessions
                msg = (
                    f"server busy: serving session {held.id} from {held.describe()}"
                    + (f" and {len(live) - 1} more" if len(live) > 1 else "")
                    + ("; it serves one session at a time" if most == 1 else
                       f"; it serves at most {most} sessions at a time (--max_sessions)")
                )  # fmt: skip
                log.warning("refused %s: %s", context.peer(), msg)
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, msg)
            s = _Session(context.peer(), client_id, context)
            self._open.append(s)
            self.sessions_opened += 1
        log.info("stream opened by %s (session %s)", s.peer, s.id)
        # When the RPC terminates for any reason (client cancel, deadline, shutdown).
        context.add_callback(lambda: self._on_rpc_done(s))
        threading.Thread(
            target=self._read, args=(s, requests), name=f"asyncinf-grpc-read-{s.id}", daemon=True
        ).start()
        try:
            yield from self._write(s, context)
        finally:
            with self._cond:
                self._end(s, PeerGone("stream closed"))
                if s in self._open:
                    self._open.remove(s)
                self._cond.notify_all()

    def _on_rpc_done(self, s: _Session) -> None:
        with self._cond:
            self._end(s, PeerGone(f"stream from {s.peer} closed or cancelled"))

    def _write(self, s: _Session, context: grpc.ServicerContext) -> Iterator[bytes]:
        cfg = self.config
        hb_ns = int(cfg.heartbeat_interval_s * 1e9)
        last_tx = time.monotonic_ns()
        while True:
            with self._cond:
                while not s.out and not s.ended:
                    now = time.monotonic_ns()
                    if now - s.last_rx_ns > cfg.heartbeat_timeout_s * 1e9:
                        self._end(
                            s, PeerGone(f"client silent for over {cfg.heartbeat_timeout_s} s")
                        )
                        s.status = (grpc.StatusCode.DEADLINE_EXCEEDED, "client went silent")
                        break
                    if s.hello is None and now - s.opened_ns > cfg.handshake_timeout_s * 1e9:
                        self._violation(
                            s,
                            grpc.StatusCode.DEADLINE_EXCEEDED,
                            f"no handshake within {cfg.handshake_timeout_s} s of opening",
                        )
                        break
                    if now - last_tx >= hb_ns:
                        break
                    self._cond.wait((hb_ns - (now - last_tx)) / 1e9)
                if s.out:
                    data, is_chunk = s.out.popleft()
                    if is_chunk:
                        s.out_chunks -= 1
                        self._cond.notify_all()
                elif s.ended:
                    break
                else:
                    self._hb_seq += 1
                    data = convert.heartbeat_down(self._hb_seq, time.monotonic_ns())
            last_tx = time.monotonic_ns()
            yield data
        if s.status is not None and context.is_active():
            context.abort(*s.status)

    def _read(self, s: _Session, requests: Iterator[bytes]) -> None:
        try:
            for raw in requests:
                if not self._on_up(s, raw):
                    return
            with self._cond:
                self._end(s, PeerGone("client closed its stream without a goodbye"))
        except Exception as exc:  # noqa: BLE001  (gRPC raises RpcError or its own internals)
            with self._cond:
                self._end(s, PeerGone(f"stream broke: {type(exc).__name__}: {exc}"))

    def _on_up(self, s: _Session, raw: bytes) -> bool:
        """Handle one client message; False when the session is over."""
        now = time.monotonic_ns()
        up = obs = span = None
        problem = ""
        try:
            span = wire.observation_span(raw)  # the common case, without copying frames
            if span is None:
                up = convert.parse_up(raw)
        except CodecError as exc:
            with self._cond:
                s.last_rx_ns = now
                self._violation(s, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            return False
        if span is not None:
            try:
                obs = convert.observation_at(raw, span, self._limits)
            except (CodecError, ConfigError) as exc:
                problem = str(exc)
        kind = "observation" if up is None else up.WhichOneof("msg")
        if kind == "observation":
            if up is not None:  # an observation mixed with other fields: the generic path
                try:
                    obs = convert.observation_from_proto(up.observation, self._limits)
                except (CodecError, ConfigError) as exc:
                    problem = str(exc)
            with self._cond:
                s.last_rx_ns = now
                if s.ended:
                    return False
                if s.hello is None:
                    self._violation(
                        s, grpc.StatusCode.FAILED_PRECONDITION, "observation before handshake"
                    )
                    return False
                if obs is None:
                    self.bad_observations += 1
                    log.warning("session %s: bad observation: %s", s.id, problem)
                    self.events.error(s.id, "bad_observation")
                    err = ErrorMessage("bad_observation", problem)
                    self._push_control(s, convert.error_to_down(err))
                    return not s.ended
                s.observations_received += 1
                self.observations_received += 1
                if s.slot is not None:
                    s.observations_replaced += 1
                    self.observations_replaced += 1
                s.slot = (obs, now)
                self._cond.notify_all()
            return True
        with self._cond:
            s.last_rx_ns = now
            if s.ended:
                return False
            if kind == "heartbeat":
                if up.heartbeat.HasField("report") and s.announced:
                    self.events.client_report(s.id, convert.report_from_proto(up.heartbeat.report))
                return True
            if kind == "goodbye":
                self._end(s, PeerClosed(f"client said goodbye: {up.goodbye.reason}"))
                return False
            # kind == "handshake"
            if s.hello is not None:
                self._violation(s, grpc.StatusCode.FAILED_PRECONDITION, "second handshake")
                return False
            try:
                hello = convert.handshake_from_proto(up.handshake, self._limits)
            except CodecError as exc:
                self._violation(s, grpc.StatusCode.INVALID_ARGUMENT, f"bad handshake: {exc}")
                return False
            if hello.schema_version != SCHEMA_VERSION:
                msg = (
                    f"client speaks schema version {hello.schema_version}, "
                    f"server speaks {SCHEMA_VERSION}; upgrade the older side"
                )
                refused = HandshakeReply(accepted=False, message=msg)
                s.out.append((convert.reply_to_down(refused, s.id), False))
                s.status = (grpc.StatusCode.FAILED_PRECONDITION, msg)
                self._end(s, PeerGone(msg))
                return False
            s.hello = hello
            self._cond.notify_all()
            return True


class _Lane(ServerTransport):
    """One of the server loop's lanes (`lanes()`): the session it accepted, one at a time.

    All lanes share the transport's sessions, condition and counters; a lane takes the next
    handshake no other lane has taken. Closing is the transport's."""

    def __init__(self, transport: GrpcServerTransport) -> None:
        self._t = transport
        self.current: _Session | None = None  # the session this lane accepted

    def accept(self, timeout_s: float) -> Handshake | None:
        deadline = time.monotonic() + timeout_s
        with self._t._cond:
            self._abandon_current()
            while True:
                for s in self._t._open:  # the oldest handshake no lane has taken
                    if s.hello is not None and not s.accepted and not s.ended:
                        s.accepted = True
                        self.current = s
                        return s.hello
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._t._closing:
                    return None
                self._t._cond.wait(remaining)

    def reply(self, reply: HandshakeReply) -> None:
        with self._t._cond:
            s = self._require_current()
            s.out.append((convert.reply_to_down(reply, s.id), False))
            if reply.accepted and s.hello is not None and not s.ended:
                s.announced = True
                self._t.events.opened(s.id, s.hello)
            if not reply.accepted:
                # The server loop logs the refusal in one line; this adds who it was, with -v.
                log.debug("refused session %s", s.describe())
                s.end_error = PeerGone(f"session refused: {reply.message}")  # logged: not again
                self._t._end(s, s.end_error)
                self.current = None
            self._t._cond.notify_all()

    def next_observation(self, timeout_s: float) -> Lease | None:
        deadline = time.monotonic() + timeout_s
        with self._t._cond:
            s = self._require_current()
            while s.slot is None:
                if s.end_error is not None:
                    raise s.end_error
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._t._cond.wait(remaining)
            if s.end_error is not None:
                raise s.end_error
            (obs, available_ns), s.slot = s.slot, None
        return Lease(obs, available_ns, time.monotonic_ns())

    def publish_chunk(self, chunk: ActionChunk, timeout_s: float) -> None:
        data = convert.chunk_to_down(chunk)
        deadline = time.monotonic() + timeout_s
        with self._t._cond:
            s = self._require_current()
            while True:
                if s.end_error is not None:
                    raise s.end_error
                if s.out_chunks < self._t.config.chunk_queue_depth:
                    break
                remaining = deadline - time.monotonic()
                if self._t.config.when_full is WhenFull.ERROR or remaining <= 0:
                    raise queue.Full(
                        f"{s.out_chunks} chunks are waiting for the client "
                        f"(chunk_queue_depth={self._t.config.chunk_queue_depth})"
                    )
                self._t._cond.wait(remaining)
            s.out.append((data, True))
            s.out_chunks += 1
            self._t._cond.notify_all()
        self._t.events.chunk(s.id, chunk)

    def send_error(self, error: ErrorMessage) -> None:
        data = convert.error_to_down(error)
        with self._t._cond:
            s = self._require_current()
            if s.end_error is not None:
                raise s.end_error
            self._t._push_control(s, data)
        self._t.events.error(s.id, error.code)

    def _require_current(self) -> _Session:
        s = self.current
        if s is None:
            raise PeerGone("no session: call accept() first (or the session was refused)")
        return s

    def _abandon_current(self) -> None:
        s, self.current = self.current, None
        if s is not None and not s.ended:
            self._t._end(s, PeerGone("the server loop left the session"))
            s.status = (grpc.StatusCode.ABORTED, "the server ended the session")

    def close(self) -> None:
        """Nothing of its own: the transport closes every session."""


def open_server(spec: dict[str, Any]) -> GrpcServerTransport:
    """A listening server transport from a plain map of `GrpcServerConfig` fields."""
    return GrpcServerTransport(GrpcServerConfig.from_dict(spec))
