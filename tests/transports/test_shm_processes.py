"""The shared-memory transport between real processes: back-pressure, newest-wins under a
fast producer, held leases, and peers killed with SIGKILL.

Children are started with the spawn method (a fresh interpreter, as the supervisor's
children are); their entry points are the module-level functions below.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time

import numpy as np
import posix_ipc
import pytest

from asyncinf.runtime.errors import PeerClosed, PeerGone, SessionBusy, TransportError
from asyncinf.runtime.messages import (
    ActionChunk,
    ErrorMessage,
    HandshakeReply,
    Observation,
)
from asyncinf.runtime.testing import hello
from asyncinf.transports.shm import (
    ShmClientTransport,
    ShmConfig,
    ShmServerTransport,
    ShmSession,
    names,
)
from asyncinf.transports.shm.config import KiB, MiB

HEARTBEAT_S = 0.05
PEER_TIMEOUT_S = 0.5
SLACK_S = 1.0  # scheduling slack on a shared 2-core machine
START_S = 60.0  # a spawned child imports numpy and asyncinf: slow under load
CAM = (120, 160, 3)

ctx = mp.get_context("spawn")


def config(**kw) -> ShmConfig:
    base = dict(
        obs_slot_bytes=1 * MiB,
        chunk_slot_bytes=64 * KiB,
        control_slot_bytes=8 * KiB,
        heartbeat_interval_s=HEARTBEAT_S,
        peer_timeout_s=PEER_TIMEOUT_S,
    )
    return ShmConfig(**{**base, **kw})


@pytest.fixture
def session(run_id):
    with ShmSession.create(run_id, 0, config()) as s:
        yield s


def frame(t: int) -> Observation:
    """An observation whose every byte says which timestep it is."""
    image = np.full(CAM, t % 251, np.uint8)
    image[0, 0, :] = np.frombuffer(np.int64(t).tobytes()[:3], np.uint8)
    return Observation(t, time.monotonic_ns(), np.array([t, t], np.float32), {"front": image})


def check_frame(o: Observation) -> None:
    """The frame is whole: no byte of another timestep."""
    t = o.timestep
    assert o.state.tolist() == [t, t]
    img = o.images["front"]
    assert int.from_bytes(img[0, 0, :].tobytes() + b"\0" * 5, "little") == t % (1 << 24)
    assert (img.reshape(-1)[3:] == t % 251).all(), f"frame {t} torn"


def start(target, *args) -> mp.Process:
    p = ctx.Process(target=target, args=args, daemon=True)
    p.start()
    return p


def finish(p: mp.Process, timeout_s: float = 30.0) -> int:
    p.join(timeout_s)
    if p.is_alive():
        p.kill()
        p.join()
        raise AssertionError(f"child {p.pid} did not finish within {timeout_s} s")
    return p.exitcode


def serve_handshake(server: ShmServerTransport) -> None:
    assert server.accept(START_S) is not None
    server.reply(HandshakeReply(True, {"front": CAM}, ["a", "b"], 4))


# --- children --------------------------------------------------------------------------------


def _chunk_producer(name: str, n: int, error_every: int) -> None:
    """Server: n chunks (every `error_every`-th an error) as fast as the ring allows."""
    with ShmServerTransport.attach(name) as server:
        serve_handshake(server)
        for t in range(n):
            if t % error_every == error_every - 1:
                server.send_error(ErrorMessage("inference", f"failure {t}", t))
            else:
                server.publish_chunk(ActionChunk(t, np.full((4, 2), t, np.float32)), 30.0)
        # Stay until the client has everything and leaves.
        with pytest.raises(PeerClosed):
            server.next_observation(60.0)


def _obs_producer(name: str, n: int, newest) -> None:
    """Client: n observations back to back; `newest` holds the last one published."""
    with ShmClientTransport.attach(name) as client:
        client.handshake(hello({"front": CAM}), START_S)
        for t in range(1, n + 1):
            client.send_observation(frame(t))
            newest.value = t
        assert client.receive(60.0) is not None  # the server's "done"


def _sleepy_server(name: str, ready) -> None:
    """Server: attaches, answers the handshake, then waits to be killed."""
    with ShmServerTransport.attach(name) as server:
        serve_handshake(server)
        ready.put(os.getpid())
        time.sleep(120)


def _sleepy_client(name: str, ready) -> None:
    """Client: handshakes, sends one observation, then waits to be killed."""
    with ShmClientTransport.attach(name) as client:
        client.handshake(hello({"front": CAM}), START_S)
        client.send_observation(frame(1))
        ready.put(os.getpid())
        time.sleep(120)


def _lock_holder(name: str, ready) -> None:
    """Server that takes the up-lock and never gives it back (as if killed inside it)."""
    server = ShmServerTransport.attach(name)
    serve_handshake(server)
    posix_ipc.Semaphore(names.object_name(name, names.UP_LOCK)).acquire(5)
    ready.put(os.getpid())
    time.sleep(120)


def _client_until_goodbye(name: str, ready, result) -> None:
    """Client: reports the timesteps it received, then how the session ended."""
    got = []
    with ShmClientTransport.attach(name) as client:
        client.handshake(hello({"front": CAM}), START_S)
        ready.put(os.getpid())
        try:
            while True:
                msg = client.receive(30.0)
                if msg is None:
                    break
                got.append(msg.timestep)
        except TransportError as exc:
            got.append(f"{type(exc).__name__}: {exc}")
    result.put(got)


# --- ordering and back-pressure ------------------------------------------------------------


def test_every_chunk_and_error_arrives_in_order_under_back_pressure(session) -> None:
    n, error_every = 1200, 97
    child = start(_chunk_producer, session.name, n, error_every)
    with ShmClientTransport.attach(session.name) as client:
        client.handshake(hello({"front": CAM}), START_S)
        got = []
        while len(got) < n:
            msg = client.receive(30.0)
            assert msg is not None, f"stalled after {len(got)} of {n}"
            got.append(msg)
            if len(got) % 100 == 0:
                time.sleep(0.05)  # a slow consumer: the 8-slot ring fills, the producer waits
        assert [m.timestep for m in got] == list(range(n))
        for m in got:
            is_error = m.timestep % error_every == error_every - 1
            assert isinstance(m, ErrorMessage if is_error else ActionChunk)
            if not is_error:
                assert (m.actions == m.timestep).all()
        assert client.receive(0.05) is None
    assert finish(child) == 0


# --- newest wins and leases ------------------------------------------------------------------


def test_newest_wins_with_a_fast_producer_and_a_slow_consumer(session) -> None:
    n = 3000
    newest = ctx.Value("q", 0, lock=False)
    child = start(_obs_producer, session.name, n, newest)
    with ShmServerTransport.attach(session.name) as server:
        serve_handshake(server)
        seen = []
        while not seen or seen[-1] < n:
            before = newest.value
            lease = server.next_observation(30.0)
            assert lease is not None, f"nothing new after {seen[-1:]}"
            with lease:
                o = lease.observation
                # Never older than what was published when we asked.
                assert o.timestep >= before, (o.timestep, before)
                kept = o.images["front"].tobytes()
                time.sleep(0.002)  # "inference": the producer keeps writing meanwhile
                check_frame(o)
                assert o.images["front"].tobytes() == kept
            seen.append(o.timestep)
        assert seen == sorted(set(seen)), "timesteps must only increase"
        assert len(seen) < n, "a slow consumer skips to the newest"
        server.send_error(ErrorMessage("done", "done"))
        assert finish(child) == 0
        with pytest.raises(PeerClosed, match="client closed"):
            server.next_observation(5.0)


def test_a_held_lease_survives_1000_newer_observations_from_another_process(session) -> None:
    newest = ctx.Value("q", 0, lock=False)
    with ShmServerTransport.attach(session.name) as server:
        child = start(_obs_producer, session.name, 1001, newest)
        serve_handshake(server)
        lease = server.next_observation(30.0)
        assert lease is not None
        held = lease.observation
        kept = (held.state.tobytes(), held.images["front"].tobytes(), held.timestep)
        deadline = time.monotonic() + 60
        while newest.value < 1001:
            assert time.monotonic() < deadline and child.is_alive(), "producer stalled"
            time.sleep(0.01)
        assert (held.state.tobytes(), held.images["front"].tobytes(), held.timestep) == kept
        check_frame(held)
        assert held.timestep < 1001
        lease.release()
        with server.next_observation(5.0) as last:
            assert last.observation.timestep == 1001
            check_frame(last.observation)
        server.send_error(ErrorMessage("done", "done"))
        assert finish(child) == 0


# --- peers that die ----------------------------------------------------------------------------


def _wait_for(ready, child: mp.Process) -> int:
    try:
        return ready.get(timeout=START_S)
    except Exception:
        child.kill()
        raise


def _server_past_handshake(target, name: str, client: ShmClientTransport) -> mp.Process:
    """A child running `target` as the server of session `name`, `client`'s handshake done."""
    ready = ctx.Queue()
    child = start(target, name, ready)
    client.handshake(hello({"front": CAM}), START_S)
    _wait_for(ready, child)
    return child


@pytest.mark.parametrize("reap", [False, True], ids=["zombie", "reaped"])
def test_server_killed_is_seen_by_the_client_within_the_bound(session, reap) -> None:
    with ShmClientTransport.attach(session.name) as client:
        child = _server_past_handshake(_sleepy_server, session.name, client)
        os.kill(child.pid, signal.SIGKILL)
        if reap:  # pid gone: seen at the next slice
            child.join()
        t0 = time.monotonic()
        with pytest.raises(PeerGone, match=f"server \\(pid {child.pid}\\)"):
            while time.monotonic() - t0 < 30:
                client.receive(0.2)
        # Unreaped, the pid lives on as a zombie: the stale heartbeat gives it away.
        assert time.monotonic() - t0 < PEER_TIMEOUT_S + SLACK_S
        with pytest.raises(PeerGone):  # and stays gone
            client.send_observation(frame(2))
    child.join()


def test_client_killed_is_seen_by_the_server_within_the_bound(session) -> None:
    ready = ctx.Queue()
    with ShmServerTransport.attach(session.name) as server:
        child = start(_sleepy_client, session.name, ready)
        serve_handshake(server)
        _wait_for(ready, child)
        with server.next_observation(5.0) as lease:
            assert lease.observation.timestep == 1
        os.kill(child.pid, signal.SIGKILL)
        t0 = time.monotonic()
        with pytest.raises(PeerGone, match=f"client \\(pid {child.pid}\\)"):
            server.next_observation(30.0)
        assert time.monotonic() - t0 < PEER_TIMEOUT_S + SLACK_S
        child.join()
        assert server.accept(0.1) is None  # waiting for the next client is no error


def test_peer_killed_holding_a_lock_is_reported_not_waited_for(session) -> None:
    with ShmClientTransport.attach(session.name) as client:
        child = _server_past_handshake(_lock_holder, session.name, client)
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        t0 = time.monotonic()
        with pytest.raises(PeerGone, match="exited holding a lock"):
            client.send_observation(frame(1))
        assert time.monotonic() - t0 < PEER_TIMEOUT_S + SLACK_S


def test_a_second_live_client_is_refused(session) -> None:
    ready = ctx.Queue()
    child = start(_sleepy_client, session.name, ready)
    with ShmServerTransport.attach(session.name) as server:
        serve_handshake(server)
        pid = _wait_for(ready, child)
        with pytest.raises(SessionBusy, match=f"already has a client \\(pid {pid}\\)"):
            ShmClientTransport.attach(session.name)
        os.kill(pid, signal.SIGKILL)
        child.join()
        # The dead client's place can be taken.
        with ShmClientTransport.attach(session.name) as client:
            client.send_observation(frame(2))


def test_owner_unlink_after_kill_leaves_nothing(run_id) -> None:
    session = ShmSession.create(run_id, 0, config())
    try:
        client = ShmClientTransport.attach(session.name)
        server_child = _server_past_handshake(_sleepy_server, session.name, client)
        os.kill(server_child.pid, signal.SIGKILL)
        server_child.join()
        with pytest.raises(TransportError):
            client.receive(5.0)
        client.close()
    finally:
        session.unlink()
    assert [o for o in names.list_objects() if o.session == session.name] == []


def test_server_goodbye_reaches_a_client_in_another_process(session) -> None:
    ready, result = ctx.Queue(), ctx.Queue()
    child = start(_client_until_goodbye, session.name, ready, result)
    with ShmServerTransport.attach(session.name) as server:
        serve_handshake(server)
        _wait_for(ready, child)
        server.publish_chunk(ActionChunk(7, np.zeros((4, 2), np.float32)), 5.0)
    assert result.get(timeout=30) == [7, "PeerClosed: server said goodbye: server closed"]
    assert finish(child) == 0
