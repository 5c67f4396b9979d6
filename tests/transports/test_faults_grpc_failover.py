"""Failover over gRPC: what a robot may still execute once its stream breaks (nothing from
the dead session), on a real loopback server killed without a goodbye."""

from __future__ import annotations

import time

import numpy as np
import pytest

from asyncinf.robots.fake import FakeRobot, FakeRobotConfig
from asyncinf.runtime.client import ClientConfig, RobotClient
from asyncinf.runtime.messages import ActionChunk, Observation, PolicySpec
from asyncinf.runtime.testing import hello, wait_until
from asyncinf.transports.grpc.testing import EchoReplica, fast_client

pytestmark = pytest.mark.faults


def test_chunks_read_before_the_break_are_never_handed_out():
    replica = EchoReplica()
    client = fast_client(replica.port)
    try:
        client.handshake(hello(), 5)
        for t in range(3):  # three chunks read off the stream, not yet taken by receive()
            client.send_observation(Observation(t, time.monotonic_ns(), np.zeros(2, np.float32)))
            wait_until(lambda t=t: client.chunks_received == t + 1, 5, f"chunk {t} read")
        replica.crash()
        wait_until(lambda: not client.connected, 5, "the break noticed")
        assert client.last_disconnect_ns > 0
        assert client.receive(0.2) is None
        assert client.stale_dropped == 3
        # The next session's chunks are handed out as usual.
        replica.start()
        wait_until(lambda: client.connected, 10, "the reconnect")
        client.send_observation(Observation(7, time.monotonic_ns(), np.zeros(2, np.float32)))
        msg = client.receive(5)
        assert isinstance(msg, ActionChunk) and msg.timestep == 7
    finally:
        client.close()
        replica.close()


@pytest.mark.parametrize("healed_before_the_tick", [False, True])
def test_the_loop_executes_nothing_queued_from_a_dead_stream(healed_before_the_tick):
    """A chunk of 50 actions is queued; the server dies. The next tick holds, whether the
    transport is still reconnecting or has already healed (on another server) meanwhile."""
    replica = EchoReplica(chunk_shape=(50, 2))
    robot = FakeRobot(FakeRobotConfig(num_joints=2))
    robot.connect()
    loop = RobotClient(robot, ClientConfig(), PolicySpec(type="fake"))
    transport = fast_client(replica.port)
    try:
        loop.attach(transport, 5)
        loop.tick()  # sends the first observation
        wait_until(lambda: transport.chunks_received == 1, 5, "the first chunk")
        loop.tick()
        assert len(robot.commands) == 1 and len(loop.queue) == 49
        replica.crash()
        wait_until(lambda: not transport.connected, 5, "the break noticed")
        if healed_before_the_tick:
            replica.start()
            wait_until(lambda: transport.connected, 10, "the reconnect")
        loop.tick()
        assert len(robot.commands) == 1, "an action of the dead session was executed"
        assert len(loop.queue) == 0 and loop.stats.server_lost == 1
    finally:
        transport.close()
        replica.close()
        robot.disconnect()
