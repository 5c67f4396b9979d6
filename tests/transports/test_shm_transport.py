"""The shared-memory transport's semantics with both ends in this process.

Real processes (peer death, back-pressure across processes, newest-wins under a fast
producer) are in test_shm_processes.py.
"""

from __future__ import annotations

import queue
import threading
import time

import numpy as np
import pytest
from shm_configs import fast_config
from test_conformance import assert_same_reply, chunks_and_errors

from asyncinf.runtime.errors import (
    HandshakeError,
    PayloadTooLarge,
    PeerClosed,
    TransportError,
)
from asyncinf.runtime.messages import (
    SCHEMA_VERSION,
    ActionChunk,
    ErrorMessage,
    HandshakeReply,
    Observation,
)
from asyncinf.runtime.testing import hello
from asyncinf.transports.shm import (
    ShmClientTransport,
    ShmServerTransport,
    ShmSession,
    WhenFull,
)
from asyncinf.transports.shm.config import MiB

SLACK_S = 1.0  # scheduling slack on a shared 2-core machine
CAM = (48, 64, 3)


@pytest.fixture
def session(run_id):
    with ShmSession.create(run_id, 0, fast_config()) as s:
        yield s


@pytest.fixture
def ends(session):
    client = ShmClientTransport.attach(session.name)
    server = ShmServerTransport.attach(session.name)
    yield client, server
    client.close()
    server.close()


def obs(t: int) -> Observation:
    return Observation(
        t,
        time.monotonic_ns(),
        np.array([t, -t], np.float32),
        {"front": np.full(CAM, t % 256, np.uint8)},
    )


def chunk(t: int) -> ActionChunk:
    return ActionChunk(t, np.full((4, 2), t, np.float32))


def shake(client, server, reply: HandshakeReply | None = None) -> HandshakeReply:
    answer = reply or HandshakeReply(True, {"front": CAM}, ["a.pos", "b.pos"], 4)

    def serve() -> None:
        got = server.accept(10)
        assert got is not None and got.joint_names == ["a.pos", "b.pos"]
        server.reply(answer)

    t = threading.Thread(target=serve)
    t.start()
    try:
        return client.handshake(hello({"front": CAM}), 10)
    finally:
        t.join(10)


@pytest.fixture
def linked(ends):
    shake(*ends)
    return ends


# --- handshake -----------------------------------------------------------------------------


def test_handshake_returns_the_servers_reply(ends) -> None:
    reply = shake(*ends)
    assert reply.accepted and reply.image_shapes == {"front": CAM} and reply.actions_per_chunk == 4


def test_refused_handshake_raises_with_the_servers_message(ends) -> None:
    with pytest.raises(HandshakeError, match="no such policy: act"):
        shake(*ends, HandshakeReply(False, message="no such policy: act"))


def test_schema_mismatch_in_the_reply_names_both_versions(ends) -> None:
    reply = HandshakeReply(True, schema_version=SCHEMA_VERSION + 1)
    with pytest.raises(
        HandshakeError, match=f"version {SCHEMA_VERSION + 1}.*speaks {SCHEMA_VERSION}"
    ):
        shake(*ends, reply)


def test_handshake_without_a_server_times_out(session) -> None:
    with ShmClientTransport.attach(session.name) as client:
        t0 = time.monotonic()
        with pytest.raises(TimeoutError, match="no handshake reply"):
            client.handshake(hello({"front": CAM}), 0.3)
        assert 0.29 <= time.monotonic() - t0 < 0.3 + SLACK_S


# --- observations --------------------------------------------------------------------------


def test_observation_arrives_intact_as_a_view_on_the_slot(linked) -> None:
    client, server = linked
    sent = obs(5)
    client.send_observation(sent)
    assert sent.sent_ns > 0
    with server.next_observation(5) as lease:
        got = lease.observation
        assert got.timestep == 5 and got.sent_ns == sent.sent_ns
        np.testing.assert_array_equal(got.state, sent.state)
        np.testing.assert_array_equal(got.images["front"], sent.images["front"])
        assert not got.images["front"].flags.owndata  # zero-copy: a view on shared memory
        assert lease.available_ns == sent.sent_ns <= lease.taken_ns


def test_newest_observation_wins_and_none_is_seen_twice(linked) -> None:
    client, server = linked
    for t in range(10):
        client.send_observation(obs(t))
    with server.next_observation(5) as lease:
        assert lease.observation.timestep == 9
    assert server.next_observation(0.05) is None


def test_a_held_lease_survives_1000_newer_observations(linked) -> None:
    client, server = linked
    client.send_observation(obs(1))
    lease = server.next_observation(5)
    image = lease.observation.images["front"]
    kept = image.copy()
    for t in range(2, 1002):
        client.send_observation(obs(t))
    assert image.tobytes() == kept.tobytes() and lease.observation.timestep == 1
    lease.release()
    with server.next_observation(5) as newest:
        assert newest.observation.timestep == 1001
        assert newest.observation.images["front"][0, 0, 0] == 1001 % 256


def test_one_lease_at_a_time(linked) -> None:
    client, server = linked
    client.send_observation(obs(1))
    lease = server.next_observation(5)
    with pytest.raises(RuntimeError, match="release the current lease"):
        server.next_observation(0)
    lease.release()
    lease.release()  # twice is fine
    assert server.next_observation(0) is None


def test_oversize_observation_names_size_slot_and_option(linked) -> None:
    client, _ = linked
    big = Observation(1, 0, np.zeros(2, np.float32), {"front": np.zeros((600, 600, 3), np.uint8)})
    with pytest.raises(PayloadTooLarge) as info:
        client.send_observation(big)
    msg = str(info.value)
    assert "1080" in msg.replace(",", "")  # frame size: 1,080,000 B of pixels and a header
    assert f"{MiB} B" in msg and "--shm.obs_slot_mb=2" in msg, msg


# --- chunks, errors, control ---------------------------------------------------------------


def test_chunks_and_errors_arrive_in_order_every_one(linked) -> None:
    client, server = linked
    for want in chunks_and_errors(server, 7, 1):
        got = client.receive(5)
        assert_same_reply(got, want)
        if isinstance(got, ActionChunk):
            assert got.actions.flags.writeable  # the client's own copy, not the slot
    assert client.receive(0.05) is None


@pytest.mark.parametrize("when_full", [WhenFull.BLOCK, WhenFull.ERROR])
def test_full_chunk_ring_raises_queue_full_per_policy(run_id, when_full) -> None:
    with (
        ShmSession.create(run_id, 0, fast_config(chunk_slots=3, when_full=when_full)) as s,
        ShmServerTransport.attach(s.name) as server,
        ShmClientTransport.attach(s.name) as client,
    ):
        for t in range(3):
            server.publish_chunk(chunk(t), 0)
        t0 = time.monotonic()
        with pytest.raises(queue.Full, match="3 slots"):
            server.publish_chunk(chunk(3), 0.3)
        elapsed = time.monotonic() - t0
        if when_full is WhenFull.BLOCK:
            assert 0.29 <= elapsed < 0.3 + SLACK_S
        else:
            assert elapsed < SLACK_S
        assert client.receive(1).timestep == 0  # a slot frees ...
        server.publish_chunk(chunk(3), 0)  # ... and the producer goes on
        assert [client.receive(1).timestep for _ in range(3)] == [1, 2, 3]


def test_blocked_publish_resumes_when_the_client_takes_a_chunk(run_id) -> None:
    with (
        ShmSession.create(run_id, 0, fast_config(chunk_slots=2)) as s,
        ShmServerTransport.attach(s.name) as server,
        ShmClientTransport.attach(s.name) as client,
    ):
        server.publish_chunk(chunk(0), 0)
        server.publish_chunk(chunk(1), 0)
        taker = threading.Timer(0.2, lambda: client.receive(1))
        taker.start()
        server.publish_chunk(chunk(2), 5)  # waits for the timer's receive, not 5 s
        taker.join()
        assert [client.receive(1).timestep for _ in range(2)] == [1, 2]


def test_errors_pass_a_full_chunk_ring_in_order(linked) -> None:
    client, server = linked
    for t in range(8):
        server.publish_chunk(chunk(t), 0)
    t0 = time.monotonic()
    server.send_error(ErrorMessage("inference", "boom", 8))  # never waits for chunk space
    assert time.monotonic() - t0 < SLACK_S
    got = [client.receive(1) for _ in range(9)]
    assert [g.timestep for g in got] == list(range(9))
    assert isinstance(got[-1], ErrorMessage)


def test_full_control_ring_drops_the_oldest(linked) -> None:
    client, server = linked
    for i in range(11):  # 8 control slots
        server.send_error(ErrorMessage("inference", f"e{i}"))
    got = [client.receive(1).message for _ in range(8)]
    assert got == [f"e{i}" for i in range(3, 11)]
    assert client.receive(0) is None


def test_oversize_chunk_names_the_option(linked) -> None:
    _, server = linked
    with pytest.raises(PayloadTooLarge, match=r"--shm\.chunk_slot_bytes="):
        server.publish_chunk(ActionChunk(0, np.zeros((200, 100), np.float32)), 1)


# --- timeouts ------------------------------------------------------------------------------


@pytest.mark.parametrize("call", ["receive", "next_observation", "accept"])
def test_blocking_calls_return_none_after_their_timeout(linked, call) -> None:
    client, server = linked
    fn = {
        "receive": client.receive,
        "next_observation": server.next_observation,
        "accept": server.accept,
    }[call]
    t0 = time.monotonic()
    assert fn(0.25) is None
    assert 0.24 <= time.monotonic() - t0 < 0.25 + SLACK_S
    t0 = time.monotonic()
    assert fn(0) is None
    assert time.monotonic() - t0 < SLACK_S


# --- goodbyes and sessions -----------------------------------------------------------------


def test_client_goodbye_is_peer_closed_on_the_server(linked) -> None:
    client, server = linked
    client.close()
    with pytest.raises(PeerClosed, match="client closed"):
        server.next_observation(1)
    with pytest.raises(PeerClosed):  # and stays so until a new handshake
        server.next_observation(0)


def test_server_goodbye_is_peer_closed_on_the_client_after_what_was_sent(linked) -> None:
    client, server = linked
    server.publish_chunk(chunk(1), 0)
    server.close()
    assert client.receive(1).timestep == 1
    with pytest.raises(PeerClosed, match="server closed"):
        client.receive(1)
    with pytest.raises(PeerClosed):
        client.send_observation(obs(2))


def test_server_serves_successive_clients(session) -> None:
    server = ShmServerTransport.attach(session.name)
    try:
        for round_ in range(3):
            with ShmClientTransport.attach(session.name) as client:
                shake(client, server)
                client.send_observation(obs(round_))
                with server.next_observation(5) as lease:
                    assert lease.observation.timestep == round_
                server.publish_chunk(chunk(round_), 1)
                assert client.receive(5).timestep == round_
            with pytest.raises(PeerClosed):
                server.next_observation(1)
    finally:
        server.close()


def test_observations_from_before_a_handshake_are_not_served(session) -> None:
    server = ShmServerTransport.attach(session.name)
    try:
        with ShmClientTransport.attach(session.name) as client:
            client.send_observation(obs(99))  # before any session: stale
            shake(client, server)
            assert server.next_observation(0.05) is None
            client.send_observation(obs(100))
            with server.next_observation(5) as lease:
                assert lease.observation.timestep == 100
    finally:
        server.close()


def test_close_is_safe_twice_and_later_calls_raise(linked) -> None:
    client, server = linked
    client.send_observation(obs(1))
    lease = server.next_observation(5)
    server.close()
    server.close()
    lease.release()  # after close: nothing to do, no error
    client.close()
    client.close()
    with pytest.raises(TransportError, match="closed"):
        client.send_observation(obs(2))
    with pytest.raises(TransportError, match="closed"):
        server.next_observation(0)


def test_heartbeats_show_both_sides_and_detaching(session) -> None:
    beats = session.heartbeats()
    assert beats["client"].pid == 0 and not beats["client"].alive
    with ShmClientTransport.attach(session.name), ShmServerTransport.attach(session.name):
        deadline = time.monotonic() + 5
        beats = session.heartbeats()
        first = beats["server"].heartbeat_ns
        while session.heartbeats()["server"].heartbeat_ns == first:
            assert time.monotonic() < deadline, "the server's heartbeat never advanced"
            time.sleep(0.01)
        beats = session.heartbeats()
        for side in ("client", "server"):
            assert beats[side].alive and beats[side].age_s < 0.5 + SLACK_S
    beats = session.heartbeats()
    assert beats["client"].pid == 0 and beats["server"].pid == 0
