"""The transport contract (transports/base.py), one module for every implementation.

Each case runs over `inproc`, `shm` and `grpc`. A transport plugs in with a factory
returning a `Pair`: both ends of one fresh session (unique names, free ports), plus what the
shared cases cannot do generically:
- `settle(n)`: wait until the server side has seen the last of the `n` observations sent
  so far (a no-op where sending is synchronous, as in shared memory);
- `drop_client()` / `drop_server()`: make that end vanish without a goodbye, as a crash would;
  None where an end cannot vanish (in-process, both ends are objects of one process), and
  the peer-loss cases run over the others only;
- `close()`: release everything, whatever state the ends are in.
Peer loss must then be reported as `PeerGone` within `LOSS_DEADLINE_S`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest

from asyncinf.runtime.errors import HandshakeError, PeerClosed, PeerGone, TransportError
from asyncinf.runtime.messages import (
    NO_RTC,
    ActionChunk,
    ErrorMessage,
    HandshakeReply,
    Observation,
    PolicySpec,
)
from asyncinf.runtime.testing import hello, wait_until
from asyncinf.transports.base import ClientTransport, ServerTransport
from asyncinf.transports.inproc import InProcChannel

LOSS_DEADLINE_S = 10.0
CAMERA = (24, 32, 3)


@dataclass
class Pair:
    client: ClientTransport
    server: ServerTransport
    settle: Callable[[int], None]
    drop_client: Callable[[], None] | None
    drop_server: Callable[[], None] | None
    close: Callable[[], None]


def grpc_pair() -> Pair:
    from asyncinf.transports.grpc.client import GrpcClientTransport
    from asyncinf.transports.grpc.config import GrpcClientConfig
    from asyncinf.transports.grpc.testing import FAST, fast_server

    server = fast_server(chunk_queue_depth=8)
    client = GrpcClientTransport(
        GrpcClientConfig(target=f"127.0.0.1:{server.port}", reconnect=False, **FAST)
    )

    def settle(n: int) -> None:
        wait_until(
            lambda: (
                client.observations_sent
                + client.observations_replaced
                + client.observations_dropped
                >= n
            ),
            what="the client's sender",
        )
        wait_until(
            lambda: server.observations_received >= client.observations_sent, what="the server"
        )

    def drop_client() -> None:
        client._link.cancel()  # the stream dies without a goodbye

    def drop_server() -> None:
        server._server.stop(None)  # every stream cancelled, no goodbye

    def close() -> None:
        client.close()
        server.close()

    return Pair(client, server, settle, drop_client, drop_server, close)


def shm_pair() -> Pair:
    from asyncinf.transports import shm

    # Beats fast, so a silent end is declared gone within a second.
    config = shm.ShmConfig(heartbeat_interval_s=0.05, peer_timeout_s=0.5)
    session = shm.ShmSession.create(shm.make_run_id(), 0, config)
    client = shm.ShmClientTransport.attach(session.name)
    server = shm.ShmServerTransport.attach(session.name)

    def vanish(end) -> Callable[[], None]:
        # Both ends live in this process, so the pid check cannot fire: stopping the end's
        # heartbeat without a goodbye is the crash (or hang) the peer must notice. Killing
        # a real peer process is covered by test_shm_processes.py.
        return end._heartbeat.stop

    def close() -> None:
        client.close()
        server.close()
        session.unlink()

    return Pair(client, server, lambda _n: None, vanish(client), vanish(server), close)


def inproc_pair() -> Pair:
    client, server = InProcChannel().ends()

    def close() -> None:
        client.close()
        server.close()

    return Pair(client, server, lambda _n: None, None, None, close)


PAIRS = {"inproc": inproc_pair, "shm": shm_pair, "grpc": grpc_pair}
LOSSY = sorted(name for name in PAIRS if name != "inproc")  # an end can vanish


@pytest.fixture(params=sorted(PAIRS))
def pair(request):
    p = PAIRS[request.param]()
    yield p
    p.close()


@pytest.fixture(params=LOSSY)
def lossy_pair(request):
    p = PAIRS[request.param]()
    yield p
    p.close()


def obs(t: int) -> Observation:
    img = np.full(CAMERA, t % 256, np.uint8)
    return Observation(t, time.monotonic_ns(), np.array([t, t], np.float32), {"front": img})


def chunk(t: int) -> ActionChunk:
    return ActionChunk(t, np.full((4, 2), t, np.float32))


@pytest.fixture
def session(pair):
    """`pair` after an accepted handshake."""
    return _handshake(pair)


@pytest.fixture
def lossy_session(lossy_pair):
    """`lossy_pair` after an accepted handshake."""
    return _handshake(lossy_pair)


def _handshake(pair: Pair) -> Pair:
    server = pair.server

    def answer() -> None:
        got = server.accept(10)
        assert got is not None and got.joint_names == ["a.pos", "b.pos"]
        server.reply(HandshakeReply(True, {"front": CAMERA}, ["a.pos", "b.pos"], 4))

    t = threading.Thread(target=answer)
    t.start()
    reply = pair.client.handshake(hello({"front": CAMERA}), 10)
    t.join(10)
    assert reply.accepted and reply.image_shapes == {"front": CAMERA}
    assert reply.action_names == ["a.pos", "b.pos"] and reply.actions_per_chunk == 4
    return pair


def test_observation_reaches_the_server_intact(session) -> None:
    sent = obs(3)
    session.client.send_observation(sent)
    assert sent.sent_ns > 0
    lease = session.server.next_observation(10)
    assert lease is not None
    with lease:
        got = lease.observation
        assert got.timestep == 3 and got.sent_ns == sent.sent_ns
        np.testing.assert_array_equal(got.state, sent.state)
        np.testing.assert_array_equal(got.images["front"], sent.images["front"])
        assert lease.available_ns <= lease.taken_ns


def test_rtc_fields_reach_the_server_intact(session) -> None:
    sent = obs(5)
    sent.inference_delay = 3
    sent.prev_chunk_left_over = np.linspace(-1, 1, 10, dtype=np.float32).reshape(5, 2)
    session.client.send_observation(sent)
    lease = session.server.next_observation(10)
    assert lease is not None
    with lease:
        got = lease.observation
        assert got.inference_delay == 3 and got.prev_chunk_left_over.dtype == np.float32
        np.testing.assert_array_equal(got.prev_chunk_left_over, sent.prev_chunk_left_over)
    session.client.send_observation(obs(6))  # without RTC: the markers of none
    with session.server.next_observation(10) as lease:
        assert lease.observation.inference_delay == NO_RTC
        assert lease.observation.prev_chunk_left_over.size == 0


def test_newest_observation_wins(session) -> None:
    for t in range(10):
        session.client.send_observation(obs(t))
    session.settle(10)
    lease = session.server.next_observation(10)
    with lease:
        assert lease.observation.timestep == 9
    assert session.server.next_observation(0.05) is None


def test_a_held_lease_is_never_overwritten(session) -> None:
    session.client.send_observation(obs(1))
    lease = session.server.next_observation(10)
    kept = lease.observation.images["front"].copy()
    for t in range(2, 12):
        session.client.send_observation(obs(t))
    session.settle(11)
    np.testing.assert_array_equal(lease.observation.images["front"], kept)
    lease.release()
    with session.server.next_observation(10) as newest:
        assert newest.observation.timestep == 11


def chunks_and_errors(server: ServerTransport, n: int, timeout_s: float) -> list:
    """Sends `n` replies, every third an error (the others `chunk(t)`); what it sent."""
    sent: list[ActionChunk | ErrorMessage] = []
    for t in range(n):
        if t % 3 == 2:
            e = ErrorMessage("inference", f"failure {t}", t)
            server.send_error(e)
            sent.append(e)
        else:
            server.publish_chunk(chunk(t), timeout_s)
            sent.append(chunk(t))
    return sent


def assert_same_reply(got: ActionChunk | ErrorMessage, sent: ActionChunk | ErrorMessage) -> None:
    assert type(got) is type(sent)
    if isinstance(sent, ErrorMessage):
        assert got == sent
    else:
        assert got.timestep == sent.timestep
        np.testing.assert_array_equal(got.actions, sent.actions)


def test_chunks_and_errors_arrive_in_order_every_one(session) -> None:
    sent = chunks_and_errors(session.server, 6, 5)
    got = []
    while len(got) < len(sent):
        msg = session.client.receive(10)
        assert msg is not None, f"only {len(got)} of {len(sent)} arrived"
        got.append(msg)
    for s, g in zip(sent, got, strict=True):
        assert_same_reply(g, s)
    assert session.client.receive(0.05) is None


def test_timeouts_return_none(pair) -> None:
    t0 = time.monotonic()
    assert pair.server.accept(0.1) is None
    assert time.monotonic() - t0 >= 0.09


def test_receive_and_next_observation_time_out(session) -> None:
    t0 = time.monotonic()
    assert session.client.receive(0.1) is None
    assert session.server.next_observation(0.1) is None
    assert time.monotonic() - t0 >= 0.18
    assert session.client.receive(0) is None


def test_client_goodbye_is_peer_closed_on_the_server(session) -> None:
    session.client.close()
    with pytest.raises(PeerClosed):
        _poll_server(session.server)


def test_server_goodbye_is_peer_closed_on_the_client(session) -> None:
    session.server.close()
    with pytest.raises(PeerClosed):
        _poll_client(session.client)


def test_lost_client_is_detected(lossy_session) -> None:
    lossy_session.drop_client()
    with pytest.raises(PeerGone):
        _poll_server(lossy_session.server)


def test_lost_server_is_detected(lossy_session) -> None:
    lossy_session.drop_server()
    with pytest.raises(TransportError) as info:
        _poll_client(lossy_session.client)
    assert isinstance(info.value, PeerGone | PeerClosed)


def _poll_server(server: ServerTransport) -> None:
    deadline = time.monotonic() + LOSS_DEADLINE_S
    while time.monotonic() < deadline:
        lease = server.next_observation(0.05)
        if lease is not None:
            lease.release()
    raise AssertionError(f"no error within {LOSS_DEADLINE_S} s")


def _poll_client(client: ClientTransport) -> None:
    deadline = time.monotonic() + LOSS_DEADLINE_S
    while time.monotonic() < deadline:
        client.receive(0.05)
    raise AssertionError(f"no error within {LOSS_DEADLINE_S} s")


# --- a real PolicyServer behind each transport: what it refuses, and that it goes on ----------


@pytest.fixture
def served(pair):
    """A PolicyServer (fake policy, chunks of 4) serving `pair.server` on a thread."""
    from asyncinf.runtime.server import PolicyCache, PolicyServer, ServerConfig

    cache = PolicyCache()
    server = PolicyServer(cache, ServerConfig(poll_s=0.02))
    stop = threading.Event()
    thread = threading.Thread(target=server.serve, args=(pair.server, stop.is_set))
    thread.start()
    yield pair.client, cache
    stop.set()
    thread.join(10)
    assert not thread.is_alive()


BAD_OBSERVATIONS = {
    "nan state": lambda o: setattr(o, "state", np.array([np.nan, 1], np.float32)),
    "inf state": lambda o: setattr(o, "state", np.array([1, -np.inf], np.float32)),
    "state of 3 joints": lambda o: setattr(o, "state", np.zeros(3, np.float32)),
    "frame of another size": lambda o: o.images.update(front=np.zeros((48, 64, 3), np.uint8)),
    "camera missing": lambda o: o.images.clear(),
    "camera extra": lambda o: o.images.update(wrist=np.zeros(CAMERA, np.uint8)),
    "rtc fields without --rtc": lambda o: setattr(o, "inference_delay", 2),
}


@pytest.mark.parametrize("bad", sorted(BAD_OBSERVATIONS))
def test_server_refuses_what_the_handshake_did_not_announce_and_goes_on(served, bad) -> None:
    client, cache = served
    assert client.handshake(hello({"front": CAMERA}), 10).accepted
    policy = cache.get(hello({"front": CAMERA}))  # the one serving this session
    sent = obs(1)
    BAD_OBSERVATIONS[bad](sent)
    client.send_observation(sent)
    reply = client.receive(10)
    assert isinstance(reply, ErrorMessage), reply
    assert reply.code == "bad_observation" and reply.timestep == 1 and not reply.fatal
    assert policy.calls == 0  # never reached the policy
    client.send_observation(obs(2))  # the session survives
    chunk = client.receive(10)
    assert isinstance(chunk, ActionChunk) and chunk.timestep == 2
    assert np.isfinite(chunk.actions).all() and policy.calls == 1


LIMITED = {
    "actions_per_chunk": dict(policy=PolicySpec("fake", actions_per_chunk=10**7)),
    "joints": dict(joint_names=[f"j{i}" for i in range(257)]),
    "cameras": dict(cameras={f"c{i}": (8, 8, 3) for i in range(17)}),
    "height": dict(cameras={"front": (5000, 8, 3)}),
    "name": dict(joint_names=["a" * 129, "b"]),
    "task": dict(task="x" * 5000),
}


@pytest.mark.parametrize("what", sorted(LIMITED))
def test_handshake_beyond_a_limit_is_refused_in_one_line(served, what, caplog) -> None:
    client, cache = served
    with caplog.at_level("INFO"), pytest.raises(HandshakeError) as info:
        client.handshake(hello(**LIMITED[what]), 10)
    said = str(info.value)
    assert "handshake refused" in said and "\n" not in said and len(said) < 400
    refusals = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 1 and refusals[0].exc_info is None
    assert cache.info() == {}  # nothing was built for it
    assert client.handshake(hello(), 10).accepted  # the next client is served
