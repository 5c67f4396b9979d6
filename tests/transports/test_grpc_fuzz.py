"""Malformed messages thrown at a live server on loopback.

Each gets a typed answer — an `Error` message (`bad_observation` when the session can go
on, `protocol` when it cannot) and, for the fatal ones, the stream's status code — and the
server then serves the next valid session. Memory stays bounded across many bad sessions.
"""

import math
import queue
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asyncinf.runtime.errors import SessionBusy
from asyncinf.runtime.messages import Handshake, Observation, PolicySpec
from asyncinf.transports.grpc import asyncinf_pb2 as pb
from asyncinf.transports.grpc import convert
from asyncinf.transports.grpc.client import GrpcClientTransport
from asyncinf.transports.grpc.config import GrpcClientConfig, GrpcServerConfig
from asyncinf.transports.grpc.server import GrpcServerTransport
from asyncinf.transports.grpc.service import SESSION_METHOD
from asyncinf.transports.testing import EchoServer

HELLO = Handshake(["a.pos", "b.pos"], {"front": (8, 8, 3)}, PolicySpec(actions_per_chunk=4), 30)


class RawSession:
    """A stream that sends whatever bytes it is given and collects what comes back."""

    def __init__(self, port: int) -> None:
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self._out: queue.Queue[bytes | None] = queue.Queue()
        self._in: queue.Queue[object] = queue.Queue()

        def requests():
            while (item := self._out.get(timeout=20)) is not None:
                yield item

        self.call = self.channel.stream_stream(SESSION_METHOD)(requests())
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for raw in self.call:
                down = pb.Down.FromString(raw)
                if down.WhichOneof("msg") != "heartbeat":
                    self._in.put(down)
            self._in.put("end")
        except grpc.RpcError as exc:
            self._in.put(exc)

    def send(self, raw: bytes) -> None:
        self._out.put(raw)

    def next(self, timeout_s: float = 5.0) -> object:
        return self._in.get(timeout=timeout_s)

    def close(self) -> None:
        self._out.put(None)
        self.channel.close()


@pytest.fixture(scope="module")
def server():
    srv = GrpcServerTransport(
        GrpcServerConfig(port=0, heartbeat_interval_s=0.2, handshake_timeout_s=2.0)
    )
    with EchoServer(srv, chunk_shape=(4, 2), poll_s=0.02) as echo:
        yield srv, echo
    srv.close()


def _valid_session_works(port: int) -> None:
    """A well-behaved client gets served; the raw stream before it was cancelled abruptly, so
    the server may take a moment to notice that session's end (then it answers busy)."""
    deadline = time.monotonic() + 10
    while True:
        client = GrpcClientTransport(GrpcClientConfig(target=f"127.0.0.1:{port}"))
        try:
            client.handshake(HELLO, 10)
            break
        except SessionBusy:
            client.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
    try:
        client.send_observation(Observation(5, 0, np.zeros(2, np.float32)))
        msg = client.receive(10)
        assert msg is not None and msg.timestep == 5
    finally:
        client.close()


def _up_obs(state=("<f4", [2], bytes(8)), images=None) -> bytes:
    up = pb.Up()
    o = up.observation
    o.timestep = 1
    o.state.dtype, shape, o.state.data = state
    o.state.shape.extend(shape)
    for cam, (dtype, dims, data) in (images or {}).items():
        t = o.images[cam].raw
        t.dtype, t.data = dtype, data
        t.shape.extend(dims)
    return up.SerializeToString()


def _up_jpeg(data: bytes, h: int, w: int) -> bytes:
    up = pb.Up()
    img = up.observation.images["front"]
    img.jpeg, img.height, img.width = data, h, w
    up.observation.state.dtype = "<f4"
    return up.SerializeToString()


HELLO_BYTES = convert.handshake_to_up(HELLO, "fuzz")
FRAME_OK = ("|u1", [8, 8, 3], bytes(192))

JPEG_BOMB = b"\xff\xd8\xff\xc0\x00\x11\x08\xea\x60\xea\x60\x03" + bytes(40)

# Malformed observations: the session answers with bad_observation and goes on.
BAD_OBSERVATIONS = {
    "object dtype": _up_obs(state=("|O", [2], bytes(16))),
    "complex dtype": _up_obs(state=("<c8", [2], bytes(16))),
    "dtype garbage": _up_obs(state=("not a dtype \x00", [2], bytes(8))),
    "state float64": _up_obs(state=("<f8", [2], bytes(16))),
    "shape/bytes mismatch": _up_obs(state=("<f4", [3], bytes(8))),
    "negative dim": _up_obs(images={"front": ("|u1", [8, -8, 3], bytes(0))}),
    "image 2 dims": _up_obs(images={"front": ("|u1", [8, 24], bytes(192))}),
    "truncated image data": _up_obs(images={"front": ("|u1", [8, 8, 3], bytes(100))}),
    "huge claimed shape": _up_obs(images={"front": ("|u1", [10**6, 10**6, 3], b"")}),
    "too many dims": _up_obs(state=("<f4", [1] * 12, bytes(4))),
    "jpeg not a jpeg": _up_jpeg(b"GIF89a" + bytes(50), 8, 8),
    # A frame header claiming 60000x60000: refused before the decoder allocates 10 GB.
    "jpeg bomb": _up_jpeg(JPEG_BOMB, 60000, 60000),
    "image without data": pb.Up(
        observation=pb.Observation(images={"front": pb.Image(height=8)})
    ).SerializeToString(),
}


@pytest.mark.parametrize("name", sorted(BAD_OBSERVATIONS))
def test_malformed_observation_gets_bad_observation_and_the_session_goes_on(server, name) -> None:
    srv, _ = server
    s = RawSession(srv.port)
    try:
        s.send(HELLO_BYTES)
        reply = s.next()
        assert isinstance(reply, pb.Down) and reply.reply.accepted
        s.send(BAD_OBSERVATIONS[name])
        err = s.next()
        assert isinstance(err, pb.Down), err
        assert err.WhichOneof("msg") == "error", err
        assert err.error.code in ("bad_observation", "protocol"), err.error
        if err.error.code == "bad_observation":
            s.send(_up_obs(images={"front": FRAME_OK}))
            chunk = s.next()
            assert isinstance(chunk, pb.Down) and chunk.WhichOneof("msg") == "chunk"
    finally:
        s.close()
    _valid_session_works(srv.port)


def _fatal(status: grpc.StatusCode, *messages: bytes):
    return (status, messages)


TRUNCATED = _up_obs(images={"front": FRAME_OK})
PROTOCOL_VIOLATIONS = {
    "observation before handshake": _fatal(
        grpc.StatusCode.FAILED_PRECONDITION, _up_obs(images={"front": FRAME_OK})
    ),
    "two handshakes": _fatal(grpc.StatusCode.FAILED_PRECONDITION, HELLO_BYTES, HELLO_BYTES),
    "garbage bytes": _fatal(grpc.StatusCode.INVALID_ARGUMENT, b"\xff\xfe\xfd\xfc" * 8),
    "empty message": _fatal(grpc.StatusCode.INVALID_ARGUMENT, b""),
    "truncated message": _fatal(grpc.StatusCode.INVALID_ARGUMENT, TRUNCATED[: len(TRUNCATED) // 2]),
    "truncated handshake": _fatal(grpc.StatusCode.INVALID_ARGUMENT, HELLO_BYTES[:-3]),
    "bad camera shape": _fatal(
        grpc.StatusCode.INVALID_ARGUMENT,
        pb.Up(handshake=pb.Handshake(cameras={"c": pb.Shape(dims=[-1, 2, 3])})).SerializeToString(),
    ),
    "options not json": _fatal(
        grpc.StatusCode.INVALID_ARGUMENT,
        pb.Up(
            handshake=pb.Handshake(policy=pb.PolicySpec(options_json="{nope"))
        ).SerializeToString(),
    ),
}


@pytest.mark.parametrize("name", sorted(PROTOCOL_VIOLATIONS))
def test_protocol_violation_gets_error_and_status_then_the_server_serves_on(server, name) -> None:
    srv, _ = server
    status, messages = PROTOCOL_VIOLATIONS[name]
    s = RawSession(srv.port)
    try:
        for raw in messages:
            s.send(raw)
        seen = []
        while True:
            item = s.next()
            seen.append(item)
            if not isinstance(item, pb.Down):
                break
        errors = [d for d in seen if isinstance(d, pb.Down) and d.WhichOneof("msg") == "error"]
        assert errors and errors[-1].error.code == "protocol" and errors[-1].error.fatal
        assert isinstance(seen[-1], grpc.RpcError), seen
        assert seen[-1].code() == status, seen[-1]
    finally:
        s.close()
    _valid_session_works(srv.port)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(st.binary(max_size=64), min_size=1, max_size=4))
def test_random_bytes_after_handshake_never_break_the_server(server, messages) -> None:
    srv, _ = server
    s = RawSession(srv.port)
    try:
        s.send(HELLO_BYTES)
        for raw in messages:
            s.send(raw)
        s.send(convert.goodbye_up("done"))
        while isinstance(s.next(), pb.Down):
            pass  # until the stream ends, normally or with a status
    finally:
        s.close()
    _valid_session_works(srv.port)


def _rss_bytes() -> int:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * 4096


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs /proc")
def test_memory_stays_bounded_across_bad_sessions(server) -> None:
    srv, _ = server
    big_lie = _up_obs(images={"front": ("|u1", [4096, 4096, 3], bytes(1 << 20))})

    def one_round() -> None:
        s = RawSession(srv.port)
        try:
            s.send(HELLO_BYTES)
            s.next()
            for raw in (big_lie, BAD_OBSERVATIONS["huge claimed shape"], b"\xff" * 64):
                s.send(raw)
            while isinstance(s.next(), pb.Down):
                pass
        finally:
            s.close()

    for _ in range(10):
        one_round()
    before = _rss_bytes()
    for _ in range(60):
        one_round()
    growth = _rss_bytes() - before
    assert growth < 64 * 2**20, f"RSS grew by {growth / 2**20:.0f} MiB over 60 bad sessions"
    assert math.isfinite(growth)
    _valid_session_works(srv.port)
