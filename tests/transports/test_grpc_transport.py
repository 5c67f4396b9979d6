"""The gRPC transport end to end on loopback: sessions, limits, security, failures, recovery.

Every server binds port 0; liveness settings are shortened so peer loss is seen in about a
second. Waiting for something asynchronous polls with a generous deadline (never a tight
timing assert).
"""

import logging
import queue
import shutil
import subprocess
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from asyncinf.runtime.errors import (
    ConfigError,
    HandshakeError,
    PeerClosed,
    PeerGone,
    SessionBusy,
    TransportError,
    Unauthenticated,
)
from asyncinf.runtime.images import fit_image
from asyncinf.runtime.messages import (
    SCHEMA_VERSION,
    ActionChunk,
    ErrorMessage,
    HandshakeReply,
    Observation,
)
from asyncinf.runtime.server import PolicyCache, PolicyServer, ServerConfig
from asyncinf.runtime.testing import hello, wait_until
from asyncinf.transports.base import WhenFull
from asyncinf.transports.factory import TransportSpec, open_client, open_server
from asyncinf.transports.grpc import asyncinf_pb2 as pb
from asyncinf.transports.grpc import convert, server_info
from asyncinf.transports.grpc.config import GrpcClientConfig, GrpcServerConfig
from asyncinf.transports.grpc.service import CLIENT_ID_KEY, SESSION_METHOD
from asyncinf.transports.grpc.testing import EchoReplica, fast_client, fast_server
from asyncinf.transports.testing import EchoServer, synthetic_frame


def obs(t: int, images=None) -> Observation:
    return Observation(t, time.monotonic_ns(), np.array([t, -t], np.float32), images or {})


def receive_chunk(client, timeout_s: float = 5.0):
    msg = client.receive(timeout_s)
    assert msg is not None, "nothing received"
    return msg


def receive_until_raises(client, timeout_s: float, what: str) -> None:
    """Poll `receive()` (None while it holds) until it raises; AssertionError after `timeout_s`."""
    wait_until(lambda: client.receive(0.05) is None and False, timeout_s, what)


@pytest.fixture
def server():
    srv = fast_server()
    yield srv
    srv.close()


@pytest.fixture
def echo(server):
    with EchoServer(server, chunk_shape=(4, 2)) as e:
        yield e


@pytest.fixture
def client(server):
    c = fast_client(server.port)
    yield c
    c.close()


def raw_stream(port: int, messages, metadata=()):
    """A bare stream speaking bytes, for what a well-behaved client never sends."""
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    call = channel.stream_stream(SESSION_METHOD)(iter(messages), metadata=metadata)
    return channel, call


# --- sessions --------------------------------------------------------------------------------


def test_round_trip_and_counters(echo, client) -> None:
    reply = client.handshake(hello({"front": (48, 64, 3)}), 5)
    assert reply.accepted and reply.image_shapes == {"front": (48, 64, 3)}
    frame = np.zeros((48, 64, 3), np.uint8)
    for t in range(3):
        client.send_observation(obs(t, {"front": frame}))
        chunk = receive_chunk(client)
        assert isinstance(chunk, ActionChunk) and chunk.timestep == t
        assert chunk.actions.shape == (4, 2)
        assert chunk.obs_sent_ns > 0
    stats = client.stats()
    assert stats.observations_sent == 3 and stats.chunks_received == 3
    assert frame.nbytes < stats.bytes_per_observation < frame.nbytes + 200
    assert stats.raw_image_bytes_per_observation == frame.nbytes
    assert echo.observations[-1].images["front"].shape == (48, 64, 3)


def test_factory_opens_both_ends() -> None:
    srv = open_server(TransportSpec("grpc", {"port": 0}))
    try:
        cli = open_client(TransportSpec("grpc", {"target": f"127.0.0.1:{srv.port}"}))
        cli.close()
        with pytest.raises(ConfigError, match="colour is not an option"):
            open_client(TransportSpec("grpc", {"target": "127.0.0.1:1", "colour": "red"}))
    finally:
        srv.close()


def test_newest_observation_wins(server, client) -> None:
    def answer() -> None:
        server.accept(5)
        server.reply(HandshakeReply(True, actions_per_chunk=4))

    t = threading.Thread(target=answer)
    t.start()
    client.handshake(hello(), 5)
    t.join()
    for i in range(10):
        client.send_observation(obs(i))
    s = server._current
    wait_until(
        lambda: client.observations_sent + client.observations_replaced == 10,
        what="client to handle all",
    )
    wait_until(lambda: s.observations_received == client.observations_sent, what="server")
    lease = server.next_observation(1)
    assert lease.observation.timestep == 9
    assert lease.available_ns <= lease.taken_ns
    with lease:
        np.testing.assert_array_equal(lease.observation.state, [9, -9])
    assert server.next_observation(0.05) is None


def test_chunks_and_errors_arrive_in_order(server, client) -> None:
    def serve() -> None:
        server.accept(5)
        server.reply(HandshakeReply(True, actions_per_chunk=4))
        server.publish_chunk(ActionChunk(0, np.zeros((4, 2), np.float32)), 1)
        server.send_error(ErrorMessage("inference", "boom", 1))
        server.publish_chunk(ActionChunk(2, np.ones((4, 2), np.float32)), 1)

    t = threading.Thread(target=serve)
    t.start()
    client.handshake(hello(), 5)
    t.join()
    got = [receive_chunk(client) for _ in range(3)]
    assert [type(m).__name__ for m in got] == ["ActionChunk", "ErrorMessage", "ActionChunk"]
    assert got[1] == ErrorMessage("inference", "boom", 1)
    assert client.receive(0.05) is None


def test_publish_chunk_when_the_client_does_not_read() -> None:
    srv = fast_server(chunk_queue_depth=2, when_full=WhenFull.ERROR)
    try:
        # A raw client that handshakes and never reads: grpc buffers some, then we say Full.
        done = threading.Event()

        def messages():
            yield convert.handshake_to_up(hello(), "raw")
            done.wait(10)

        channel, _call = raw_stream(srv.port, messages())
        assert srv.accept(5) is not None
        srv.reply(HandshakeReply(True))
        big = ActionChunk(0, np.zeros((1000, 1000), np.float32))  # 4 MB: fills the window
        with pytest.raises(queue.Full):
            for _ in range(50):
                srv.publish_chunk(big, 0.2)
        done.set()
        channel.close()
    finally:
        srv.close()


def test_receive_times_out_with_none(echo, client) -> None:
    client.handshake(hello(), 5)
    t0 = time.monotonic()
    assert client.receive(0.1) is None
    assert time.monotonic() - t0 >= 0.09
    assert client.receive(0.0) is None


def test_calls_before_handshake_are_refused(client) -> None:
    with pytest.raises(TransportError):
        client.send_observation(obs(0))
    with pytest.raises(TransportError):
        client.receive(0)


def test_one_instance_serves_successive_sessions(server, echo) -> None:
    for n in range(3):
        c = fast_client(server.port)
        c.handshake(hello(), 5)
        c.send_observation(obs(n))
        assert receive_chunk(c).timestep == n
        c.close()
        wait_until(lambda n=n: len(echo.session_errors) == n + 1, what="session end")
        assert isinstance(echo.session_errors[-1], PeerClosed)
    assert echo.sessions == 3


def test_real_policy_server_over_grpc(server) -> None:
    """The runtime's server loop, unchanged, over this transport: errors reach the client."""
    policy_server = PolicyServer(PolicyCache(), ServerConfig(poll_s=0.05))
    stop = threading.Event()
    loop = threading.Thread(target=policy_server.serve, args=(server, stop.is_set))
    loop.start()
    try:
        for _ in range(2):  # a second session reuses the loaded policy
            c = fast_client(server.port)
            h = hello()
            h.policy.options = {"fail_every": 2}
            c.handshake(h, 10)
            kinds = []
            for t in range(4):
                c.send_observation(obs(t))
                kinds.append(type(receive_chunk(c)).__name__)
            assert kinds == ["ActionChunk", "ErrorMessage"] * 2
            c.close()
    finally:
        stop.set()
        loop.join(5)


# --- refusals --------------------------------------------------------------------------------


def test_second_client_gets_resource_exhausted_naming_the_session(echo, client, server) -> None:
    client.handshake(hello(), 5)
    other = fast_client(server.port)
    try:
        t0 = time.monotonic()
        with pytest.raises(SessionBusy, match=r"server busy: serving session .* since .*UTC"):
            other.handshake(hello(), 5)
        assert time.monotonic() - t0 < 4  # refused, not hung
        info = server_info(GrpcClientConfig(target=f"127.0.0.1:{server.port}"), 5)
        assert info["busy"] and "127.0.0.1" in info["active_session"]
    finally:
        other.close()
    client.send_observation(obs(1))
    assert receive_chunk(client).timestep == 1  # the first session is untouched


def test_unknown_schema_version_is_refused_naming_both(echo, client) -> None:
    with pytest.raises(HandshakeError) as info:
        client.handshake(hello(schema_version=SCHEMA_VERSION + 41), 5)
    assert f"schema version {SCHEMA_VERSION + 41}" in str(info.value)
    assert f"server speaks {SCHEMA_VERSION}" in str(info.value)


def test_refusal_by_the_server_loop_reaches_the_client(server, client) -> None:
    def refuse() -> None:
        server.accept(5)
        server.reply(HandshakeReply(False, message="no such checkpoint"))

    t = threading.Thread(target=refuse)
    t.start()
    with pytest.raises(HandshakeError, match="no such checkpoint"):
        client.handshake(hello(), 5)
    t.join()


def test_resize_and_jpeg_cut_bytes_tenfold(server) -> None:
    with EchoServer(server, image_shapes={"front": (224, 224, 3)}, chunk_shape=(4, 2)) as e:
        c = fast_client(server.port, image_codec="jpeg", jpeg_quality=90)
        try:
            c.handshake(hello({"front": (480, 640, 3)}), 5)
            frame = synthetic_frame(480, 640)
            fitted = fit_image(frame, (224, 224, 3), "center_crop")  # as the client loop does
            for t in range(3):
                c.send_observation(obs(t, {"front": fitted}))
                assert receive_chunk(c).timestep == t
            stats = c.stats()
        finally:
            c.close()
    assert e.observations[-1].images["front"].shape == (224, 224, 3)
    assert frame.nbytes / stats.bytes_per_observation >= 10


def test_unsendable_observation_is_reported_and_the_session_goes_on(echo, client) -> None:
    client.handshake(hello(), 5)
    bad = Observation(0, 0, np.array(["x"], dtype=object))
    client.send_observation(bad)
    err = receive_chunk(client)
    assert isinstance(err, ErrorMessage) and err.code == "bad_observation"
    client.send_observation(obs(1))
    assert receive_chunk(client).timestep == 1


# --- security --------------------------------------------------------------------------------


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text("s3cret-token\n")
    return path


def test_token_is_checked_on_every_call(token_file: Path, tmp_path: Path) -> None:
    srv = fast_server(token_file=str(token_file))
    wrong = tmp_path / "wrong"
    wrong.write_text("nope")
    try:
        with EchoServer(srv):
            for kw in ({}, {"token_file": str(wrong)}):
                c = fast_client(srv.port, **kw)
                with pytest.raises(Unauthenticated, match="credentials"):
                    c.handshake(hello(), 5)
                c.close()
                with pytest.raises(Unauthenticated):
                    server_info(GrpcClientConfig(target=f"127.0.0.1:{srv.port}", **kw), 5)
            c = fast_client(srv.port, token_file=str(token_file))
            c.handshake(hello(), 5)
            c.send_observation(obs(3))
            assert receive_chunk(c).timestep == 3
            c.close()
    finally:
        srv.close()


def test_token_file_must_hold_a_token(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match="one token"):
        fast_server(token_file=str(empty))
    with pytest.raises(ConfigError, match="no such file"):
        fast_server(token_file=str(tmp_path / "missing"))


def _self_signed(tmp_path: Path, name: str) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    key, cert = tmp_path / f"{name}.key", tmp_path / f"{name}.crt"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
            "-keyout", str(key), "-out", str(cert), "-days", "1",
            "-subj", f"/CN={name}",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return key, cert


def test_tls_with_token(tmp_path: Path, token_file: Path) -> None:
    key, cert = _self_signed(tmp_path, "server")
    _, other_cert = _self_signed(tmp_path, "other")
    srv = fast_server(tls_cert=str(cert), tls_key=str(key), token_file=str(token_file))
    try:
        with EchoServer(srv):
            c = fast_client(srv.port, tls_ca=str(cert), token_file=str(token_file))
            assert c.config.tls
            c.handshake(hello(), 5)
            c.send_observation(obs(5))
            assert receive_chunk(c).timestep == 5
            c.close()
            # Plaintext to a TLS server, or a CA that did not sign its certificate: no session.
            for kw in ({}, {"tls_ca": str(other_cert)}):
                bad = fast_client(srv.port, token_file=str(token_file), connect_timeout_s=0.5, **kw)
                with pytest.raises(PeerGone, match="cannot reach"):
                    bad.handshake(hello(), 2)
                bad.close()
    finally:
        srv.close()


def test_mutual_tls(tmp_path: Path) -> None:
    key, cert = _self_signed(tmp_path, "server")
    ckey, ccert = _self_signed(tmp_path, "client")
    srv = fast_server(tls_cert=str(cert), tls_key=str(key), tls_client_ca=str(ccert))
    try:
        with EchoServer(srv):
            c = fast_client(srv.port, tls_ca=str(cert), tls_cert=str(ccert), tls_key=str(ckey))
            c.handshake(hello(), 5)
            c.close()
            anonymous = fast_client(srv.port, tls_ca=str(cert), connect_timeout_s=0.5)
            with pytest.raises(TransportError):
                anonymous.handshake(hello(), 2)
            anonymous.close()
    finally:
        srv.close()


def test_non_loopback_without_tls_or_token_warns(caplog) -> None:
    caplog.set_level(logging.WARNING, "asyncinf.transports.grpc.server")
    srv = fast_server(host="0.0.0.0")  # binding only: no traffic leaves the host
    srv.close()
    assert any("without TLS or a token" in r.getMessage() for r in caplog.records)
    caplog.clear()
    srv = fast_server()
    srv.close()
    assert not any("without" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"target": "gpu-host"}, "HOST:PORT"),
        ({"target": "h:1", "image_codec": "png"}, "image_codec"),
        ({"target": "h:1", "jpeg_quality": 0}, "jpeg_quality"),
        ({"target": "h:1", "heartbeat_timeout_s": 0.5}, "heartbeat_timeout_s"),
        ({"target": "h:1", "max_message_bytes": 2**31}, "max_message_bytes"),
        ({"target": "h:1", "tls_cert": "c.pem"}, "give both"),
    ],
)
def test_client_config_errors_name_the_field(kw, match) -> None:
    with pytest.raises(ConfigError, match=match):
        GrpcClientConfig(**kw)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"port": 70000}, "port"),
        ({"tls_key": "k.pem"}, "give both"),
        ({"when_full": "drop"}, "when_full"),
        ({"max_workers": 1}, "max_workers"),
        ({"chunk_queue_depth": 0}, "chunk_queue_depth"),
    ],
)
def test_server_config_errors_name_the_field(kw, match) -> None:
    with pytest.raises(ConfigError, match=match):
        GrpcServerConfig(**kw)


def test_options_given_as_text_are_coerced() -> None:
    text = {"port": "0", "heartbeat_timeout_s": "3", "when_full": "error"}
    cfg = GrpcServerConfig.from_dict(text)
    assert (cfg.port, cfg.heartbeat_timeout_s, cfg.when_full) == (0, 3.0, WhenFull.ERROR)


def test_port_in_use_is_an_error(server) -> None:
    with pytest.raises((ConfigError, RuntimeError)):
        fast_server(port=server.port)


# --- failures and recovery -------------------------------------------------------------------


def test_server_restart_client_reconnects_and_re_handshakes() -> None:
    replica = EchoReplica()
    c = fast_client(replica.port)
    try:
        c.handshake(hello(), 5)
        c.send_observation(obs(0))
        assert receive_chunk(c).timestep == 0
        replica.close()  # says goodbye
        wait_until(lambda: not c.connected, what="client to notice")
        assert c.receive(0.05) is None  # holding, not failing
        c.send_observation(obs(1))  # dropped while away
        assert c.observations_dropped >= 1
        replica.start()
        wait_until(lambda: c.connected, what="reconnect")
        assert c.reconnects == 1 and c.disconnects == 1
        assert "goodbye" in c.last_disconnect_reason
        c.send_observation(obs(2))
        assert receive_chunk(c).timestep == 2
        assert replica.echo.sessions == 1
    finally:
        c.close()
        replica.close()


def test_abrupt_server_loss_then_recovery() -> None:
    replica = EchoReplica()
    c = fast_client(replica.port)
    try:
        c.handshake(hello(), 5)
        replica.crash()  # no goodbye: streams cancelled
        wait_until(lambda: not c.connected, what="client to notice")
        replica.start()
        wait_until(lambda: c.connected, what="reconnect")
        c.send_observation(obs(7))
        assert receive_chunk(c).timestep == 7
    finally:
        c.close()
        replica.close()


def handshake_then_goodbye(client, server, echo) -> None:
    """The client's session starts, then the server stops serving and says goodbye."""
    client.handshake(hello(), 5)
    echo.stop()
    server.close()


def test_without_reconnect_a_lost_server_raises(server, echo) -> None:
    c = fast_client(server.port, reconnect=False)
    try:
        handshake_then_goodbye(c, server, echo)
        with pytest.raises(PeerClosed, match="goodbye"):
            receive_until_raises(c, 10, "an error")
        with pytest.raises(PeerClosed):
            c.send_observation(obs(1))
    finally:
        c.close()


def test_give_up_after_a_while(server, echo) -> None:
    c = fast_client(server.port, reconnect_give_up_s=0.5, connect_timeout_s=0.2)
    try:
        handshake_then_goodbye(c, server, echo)
        with pytest.raises(PeerGone, match="unreachable"):
            receive_until_raises(c, 15, "giving up")
    finally:
        c.close()


def _silent_server():
    """A server that answers the handshake and then never says anything again."""
    from concurrent import futures

    release = threading.Event()

    def session(requests, _context):
        next(requests)
        yield convert.reply_to_down(HandshakeReply(True, actions_per_chunk=4))
        release.wait(10)

    srv = grpc.server(futures.ThreadPoolExecutor(4))
    srv.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "asyncinf.v1.AsyncInference",
                {"Session": grpc.stream_stream_rpc_method_handler(session)},
            ),
        )
    )
    port = srv.add_insecure_port("127.0.0.1:0")
    srv.start()
    return srv, port, release


def test_silent_server_is_detected_as_gone() -> None:
    srv, port, release = _silent_server()
    c = fast_client(port, reconnect=False)
    try:
        c.handshake(hello(), 5)
        t0 = time.monotonic()
        with pytest.raises(PeerGone, match="silent"):
            receive_until_raises(c, 10, "silence detected")
        assert time.monotonic() - t0 < 8
    finally:
        release.set()
        c.close()
        srv.stop(None)


def test_silent_client_ends_the_server_session(server) -> None:
    done = threading.Event()

    def messages():
        yield convert.handshake_to_up(hello(), "quiet")
        done.wait(10)  # then nothing: no observation, no heartbeat

    channel, _call = raw_stream(server.port, messages())
    try:
        assert server.accept(5) is not None
        server.reply(HandshakeReply(True))
        with pytest.raises(PeerGone, match="silent"):
            for _ in range(100):
                server.next_observation(0.1)
    finally:
        done.set()
        channel.close()


def test_stream_without_handshake_frees_the_slot() -> None:
    srv = fast_server(handshake_timeout_s=0.3)
    done = threading.Event()

    def messages():
        done.wait(10)
        yield from ()

    channel, call = raw_stream(srv.port, messages())
    try:
        with pytest.raises(grpc.RpcError) as info:
            list(call)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "no handshake" in info.value.details()
        with EchoServer(srv):
            c = fast_client(srv.port)
            c.handshake(hello(), 5)
            c.close()
    finally:
        done.set()
        channel.close()
        srv.close()


def test_same_client_id_replaces_its_stale_session(server) -> None:
    done = threading.Event()

    def messages():
        yield convert.handshake_to_up(hello(), "me")
        done.wait(10)

    meta = ((CLIENT_ID_KEY, "me"),)
    ch1, call1 = raw_stream(server.port, messages(), meta)
    try:
        assert server.accept(5) is not None
        ch2, call2 = raw_stream(server.port, messages(), meta)
        # The old stream is ended by the server; the new one is waiting for accept().
        with pytest.raises(grpc.RpcError) as info:
            list(call1)
        assert info.value.code() == grpc.StatusCode.ABORTED
        assert server.accept(5) is not None
        server.reply(HandshakeReply(True))
        first = pb.Down.FromString(next(call2))
        assert first.WhichOneof("msg") == "reply" and first.reply.accepted
        ch2.close()
    finally:
        done.set()
        ch1.close()


def test_a_restarted_client_with_the_same_id_takes_over(server, echo) -> None:
    # The first one's session is still open, as when its process died and the server has
    # not noticed yet (no reconnect here, or the two would take turns).
    first = fast_client(server.port, client_id="arm-1", reconnect=False)
    first.handshake(hello(), 5)
    second = fast_client(server.port, client_id="arm-1")
    try:
        second.handshake(hello(), 5)
        second.send_observation(obs(4))
        assert receive_chunk(second).timestep == 4
        with pytest.raises(PeerGone, match="ABORTED"):
            receive_until_raises(first, 10, "the old stream ended")
    finally:
        first.close()
        second.close()


def test_close_is_idempotent_and_safe_before_handshake(server) -> None:
    c = fast_client(server.port)
    c.close()
    c.close()
    with pytest.raises(PeerClosed):
        c.handshake(hello(), 1)
    server.close()
    server.close()
