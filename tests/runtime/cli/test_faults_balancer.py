"""Several `asyncinf serve` replicas behind a real nginx (the shipped config) on loopback,
robots (`up --remote`) connecting through it: one replica killed with kill -9, another
drained with SIGTERM; every robot resumes on a live replica. Health is asked through nginx
and of each replica directly, with the official grpc.health.v1 stub; sessions are counted
from each replica's Prometheus endpoint.

2 replicas x 4 robots, each replica taking all four (`--max_sessions=4`): after the kill the
survivor serves every robot; the killed one is restarted on its port, as systemd would, and
takes them all when the survivor is drained.
"""

from __future__ import annotations

import json
import signal
import time

import grpc
import pytest
from fleet import Replica, Robot, health, start_balancer
from grpc_health.v1 import health_pb2

from asyncinf.runtime.testing import wait_until
from asyncinf.transports.grpc.balancer import find_nginx

pytestmark = [pytest.mark.slow, pytest.mark.faults]

REPLICAS = 2
ROBOTS = 4
REPLICA_ARGS = ("--drain-timeout=2", f"--max_sessions={ROBOTS}")
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
RECOVER_S = 40  # generous: reconnect backoff + re-handshake, on a loaded 2-core machine
# Executing this long after the event counts as resumed: the robots' tick files are written
# in blocks, so a file that shows that moment also shows the hold before it.
SETTLE_NS = int(1e9)


def test_nginx_is_installed():
    """The balancer tests never skip: without nginx they fail, saying how to install it."""
    assert find_nginx()


@pytest.fixture
def fleet(tmp_path):
    replicas = [Replica(*REPLICA_ARGS) for _ in range(REPLICAS)]
    for r in replicas:
        r.ready()
    robots: list[Robot] = []
    nginx = None
    try:
        nginx = start_balancer(tmp_path / "nginx", replicas)
        yield replicas, robots, nginx
    finally:
        for robot in robots:
            if robot.proc.poll() is None:
                robot.proc.kill()
                robot.proc.wait(10)
        if nginx is not None:
            nginx.stop()
        for r in replicas:
            r.kill()


def total_sessions(replicas: list[Replica]) -> int:
    return sum(r.sessions() for r in replicas if r.alive)


def all_resumed(replicas, robots, since_ns):
    """Every robot has a session on a live replica and executes actions after `since_ns`."""
    if total_sessions(replicas) != len(robots):
        return False
    return all(robot.executing_since(since_ns) for robot in robots)


def wait_resumed(replicas, robots, since_ns, what):
    try:
        wait_until(lambda: all_resumed(replicas, robots, since_ns), RECOVER_S, what)
    except AssertionError as exc:
        sessions = [r.sessions() if r.alive else "dead" for r in replicas]
        tails = "\n".join(
            "".join(r.err.text().splitlines(True)[-8 if r.executing_since(since_ns) else -60 :])
            for r in robots
        )
        served = "\n".join("".join(r.err.text().splitlines(True)[-30:]) for r in replicas)
        raise AssertionError(
            f"{exc}; sessions per replica {sessions}; robots:\n{tails}\nreplicas:\n{served}"
        ) from None


def nginx_health(port: int) -> int | None:
    try:
        return health(port)
    except grpc.RpcError:
        return None


def test_robots_resume_on_a_live_replica_after_kill_and_drain(fleet, tmp_path):
    replicas, robots, nginx = fleet
    # Health: directly, every replica; through nginx, whichever replica it picks.
    for r in replicas:
        assert health(r.port) == SERVING
        assert health(r.port, "asyncinf.v1.AsyncInference") == SERVING
    assert health(nginx.port) == SERVING

    robots.extend(Robot(nginx.port, tmp_path, f"robot{i}") for i in range(ROBOTS))
    start_ns = time.monotonic_ns()
    wait_resumed(replicas, robots, start_ns, "every robot running")

    # kill -9 a replica that serves a robot.
    victim = next(r for r in replicas if r.sessions() > 0)
    moved = victim.sessions()
    killed_ns = time.monotonic_ns()
    victim.kill()
    wait_resumed(replicas, robots, killed_ns + SETTLE_NS, "every robot resumed after the kill")
    held = [robot for robot in robots if robot.held_since(killed_ns)]
    assert len(held) >= moved  # its robots held while they moved
    # As systemd would: the killed replica comes back on its port (nginx's config is fixed).
    replicas[replicas.index(victim)] = Replica(*REPLICA_ARGS, port=victim.port).ready()

    # SIGTERM (drain) a replica that serves a robot: NOT_SERVING, its robots told to move.
    drained = next(r for r in replicas if r.alive and r.sessions() > 0)
    moved = drained.sessions()
    drained_ns = time.monotonic_ns()
    drained.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: health(drained.port) == NOT_SERVING, 5, "the drained replica NOT_SERVING")
    assert drained.proc.wait(30) == 0
    exited_ns = time.monotonic_ns()
    assert "draining" in drained.err.join()
    wait_resumed(replicas, robots, exited_ns + SETTLE_NS, "every robot resumed after the drain")
    assert len([robot for robot in robots if robot.held_since(drained_ns)]) >= moved
    # nginx finds the live replica: within its fail_timeout (2 s) of the drained one going,
    # a probe may still be sent there first and answered 502, as a real prober would retry.
    wait_until(lambda: nginx_health(nginx.port) == SERVING, 10, "SERVING through nginx")

    for robot in robots:
        code = robot.stop()
        log = robot.err.text()
        assert code in (0, 130), log
        assert "Traceback" not in log
        summary = json.loads(robot.summary.read_text())
        assert summary["chunks_received"] > 0
    logs = "".join(robot.err.text() for robot in robots)
    assert "reconnected" in logs  # through nginx, to another replica
    assert "server draining" in logs  # the drained replica's goodbye, acted on
