"""`asyncinf serve`'s grpc.health.v1 service and its drain, probed by the official health
stub against a real `asyncinf serve` process on loopback."""

import contextlib
import json
import re
import signal
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from asyncinf.runtime.errors import PeerClosed, ServerNotServing
from asyncinf.runtime.messages import Observation
from asyncinf.runtime.testing import LineReader, hello, started, wait_until
from asyncinf.transports.grpc.client import GrpcClientTransport
from asyncinf.transports.grpc.config import GrpcClientConfig

pytestmark = pytest.mark.slow  # each starts `asyncinf serve` as a real process

CLI = [sys.executable, "-m", "asyncinf.runtime.cli"]
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE = "asyncinf.v1.AsyncInference"


class Serve:
    """`asyncinf serve` on a free port; `port` is known once it listens (before the load)."""

    def __init__(self, *args):
        self.proc = subprocess.Popen(
            [*CLI, "serve", "--host=127.0.0.1", "--port=0", *args],
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.err = LineReader(self.proc.stderr)
        wait_until(lambda: "listening on 127.0.0.1:" in self.err.text(), 30, "the listen line")
        self.port = int(re.search(r"listening on 127\.0\.0\.1:(\d+)", self.err.text()).group(1))
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        self.health = health_pb2_grpc.HealthStub(self.channel)

    def check(self, service=""):
        return self.health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status

    def client(self, **options):
        config = GrpcClientConfig(target=f"127.0.0.1:{self.port}", **options)
        return GrpcClientTransport(config)

    def kill(self):
        self.channel.close()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def serve():
    yield from started(Serve, Serve.kill)


def observation(step):
    return Observation(step, time.monotonic_ns(), np.zeros(2, np.float32), must_go=True)


def collect(watch, seen):
    """A Watch call's statuses, until the server ends it (or the channel closes)."""
    with contextlib.suppress(grpc.RpcError):
        seen.extend(r.status for r in watch)


def test_not_serving_while_the_policy_loads_then_serving(serve):
    """A 4 s load: Check says NOT_SERVING (a new session is refused, retryably), then SERVING."""
    server = serve("--robot.type=sim", "--policy.type=fake", "--policy.load_s=4")
    assert server.check() == NOT_SERVING
    assert server.check(SERVICE) == NOT_SERVING
    early = server.client(connect_timeout_s=2)
    with pytest.raises(ServerNotServing, match="server starting: the policy is loading"):
        early.handshake(hello(), 5)
    early.close()
    wait_until(lambda: "serving on 127.0.0.1" in server.err.text(), 60, "the ready line")
    assert server.check() == SERVING
    assert server.check(SERVICE) == SERVING
    with pytest.raises(grpc.RpcError) as unknown:
        server.check("no.such.Service")
    assert unknown.value.code() is grpc.StatusCode.NOT_FOUND


def test_a_robot_started_during_the_load_waits_for_it_like_for_a_busy_server(serve, tmp_path):
    """`up --remote` meets "server starting", retries as for a busy server, then runs."""
    server = serve("--robot.type=sim", "--policy.type=fake", "--policy.load_s=4")
    r = subprocess.run(
        [*CLI, "up", f"--remote=127.0.0.1:{server.port}", "--robot.type=sim",
         "--policy.type=fake", "--duration=2", f"--summary-json={tmp_path / 's.json'}"],
        capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "server starting" in r.stderr
    assert json.loads((tmp_path / "s.json").read_text())["chunks_received"] > 0


def test_sigterm_drains_the_session_then_tells_its_client_to_reconnect(serve):
    """SIGTERM with a session running: Watch sees NOT_SERVING at once, a new handshake is
    refused as draining, the session still gets chunks, then a goodbye naming the drain; the
    server exits 0 soon after --drain-timeout."""
    server = serve("--drain-timeout=3")
    wait_until(lambda: "serving on 127.0.0.1" in server.err.text(), 60, "the ready line")
    seen = []
    watch = server.health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=60)
    reader = threading.Thread(target=collect, args=(watch, seen), daemon=True)
    reader.start()
    wait_until(lambda: seen == [SERVING], 10, "Watch's first answer")

    session = server.client(reconnect=False)
    session.handshake(hello(), 10)
    session.send_observation(observation(0))
    assert session.receive(10) is not None

    server.proc.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    wait_until(lambda: NOT_SERVING in seen, 5, "Watch to say NOT_SERVING")
    assert server.check() == NOT_SERVING

    newcomer = server.client(connect_timeout_s=2)
    with pytest.raises(ServerNotServing, match="server draining"):
        newcomer.handshake(hello(), 5)
    newcomer.close()

    # The session goes on while draining: a fresh observation still gets its chunk.
    session.send_observation(observation(1))
    deadline = time.monotonic() + 10
    while (msg := session.receive(0.5)) is None or msg.timestep < 1:
        assert time.monotonic() < deadline, "no chunk for the observation sent while draining"
    with pytest.raises(PeerClosed, match="server draining: reconnect to another replica"):
        while time.monotonic() < signalled + 20:
            session.receive(0.5)
    assert server.proc.wait(20) == 0
    assert time.monotonic() - signalled >= 3  # the session was given its drain time
    session.close()
    reader.join(10)
    assert seen[-1] == NOT_SERVING


def test_drain_ends_as_soon_as_the_session_is_gone(serve):
    """A 60 s --drain-timeout, but the client leaves: the server exits then, not at 60 s."""
    server = serve("--drain-timeout=60")
    wait_until(lambda: "serving on 127.0.0.1" in server.err.text(), 60, "the ready line")
    assert server.check() == SERVING  # no preload: ready to take sessions
    session = server.client(reconnect=False)
    session.handshake(hello(), 10)
    server.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: server.check() == NOT_SERVING, 5, "NOT_SERVING")
    assert server.proc.poll() is None  # still draining for its session
    session.close()  # the goodbye ends the session
    assert server.proc.wait(20) == 0
    assert "draining" in server.err.join()


def test_ctrl_c_during_a_drain_stops_at_once(serve):
    """A 60 s drain cut short by SIGINT: exit 130 (interrupted) well before the 60 s."""
    server = serve("--drain-timeout=60")
    wait_until(lambda: "serving on 127.0.0.1" in server.err.text(), 60, "the ready line")
    session = server.client(reconnect=False)
    session.handshake(hello(), 10)
    server.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: server.check() == NOT_SERVING, 5, "NOT_SERVING")
    server.proc.send_signal(signal.SIGINT)
    assert server.proc.wait(20) == 130
    session.close()


def test_a_negative_drain_timeout_is_one_line_and_exit_2():
    r = subprocess.run(
        [*CLI, "serve", "--drain-timeout=-1"], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 2
    assert "--drain-timeout=-1.0: must be >= 0 seconds" in r.stderr
    assert "Traceback" not in r.stderr
