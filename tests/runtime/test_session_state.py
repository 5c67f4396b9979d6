"""State per session for a policy that keeps an observation history per robot: several
robots share one loaded policy and each sees only its own history.

`fake` with `history=true` answers the mean of the last two states it saw (its first fills
both): a robot whose history mixed with another's would get a value between the two."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from asyncinf.policies.policy import make_policy
from asyncinf.runtime.batching import Batcher
from asyncinf.runtime.messages import Observation, PolicySpec
from asyncinf.runtime.server import PolicyCache, PolicyServer, ServerConfig
from asyncinf.runtime.testing import hello, wait_until
from asyncinf.transports.grpc.client import GrpcClientTransport
from asyncinf.transports.grpc.testing import fast_client, fast_server

HISTORY = PolicySpec(type="fake", actions_per_chunk=4, options={"history": True})


def obs(t: int, value: float) -> Observation:
    return Observation(t, time.monotonic_ns(), np.array([value, -value], np.float32), {})


def answer(batcher: Batcher, session: int, value: float) -> float:
    """What the policy returns for `value` in `session` (the first joint of its first action)."""
    policy = batcher.policy
    return float(batcher.predict(policy.preprocess(obs(0, value)), None, session).outputs[0, 0])


def test_interleaved_sessions_each_see_only_their_own_history():
    policy = make_policy(HISTORY, hello(policy=HISTORY))
    policy.warmup()
    batcher = Batcher(policy, max_size=4, max_wait_ms=0)
    assert batcher.max_size == 1  # one history in the model: never batched across sessions
    a, b = batcher.join(), batcher.join()
    assert answer(batcher, a, 10) == 10  # the first observation fills a's history
    assert answer(batcher, b, 100) == 100  # b starts fresh, not from a's 10
    assert answer(batcher, a, 20) == 15  # (10 + 20) / 2: a's own, b's 100 is not in it
    assert answer(batcher, b, 200) == 150
    assert answer(batcher, b, 300) == 250  # the same session twice: no swap, still its own
    assert answer(batcher, a, 30) == 25
    c = batcher.join()
    assert answer(batcher, c, 7) == 7  # a third session starts fresh
    batcher.leave(a)  # its state is dropped: asked again under its key, it starts afresh
    assert answer(batcher, a, 1) == 1
    for key in (b, c, a):
        batcher.leave(key)
    assert not batcher._states  # nothing kept for sessions that ended


def test_a_policy_without_session_state_is_left_alone():
    """Without history the batcher never swaps: the policy's own state is untouched."""
    spec = PolicySpec(type="fake", actions_per_chunk=4)
    policy = make_policy(spec, hello(policy=spec))
    batcher = Batcher(policy, max_size=4, max_wait_ms=0)
    a, b = batcher.join(), batcher.join()
    assert answer(batcher, a, 10) == 10 and answer(batcher, b, 20) == 20
    assert policy.calls == 2 and not batcher._states


@pytest.fixture
def grpc_server():
    """A PolicyServer on a real gRPC server of two lanes (`serve --max_sessions 2`)."""
    transport = fast_server(max_sessions=2)
    server = PolicyServer(PolicyCache(), ServerConfig(max_sessions=2))
    stop = threading.Event()
    thread = threading.Thread(target=server.serve, args=(transport, stop.is_set))
    thread.start()
    yield server, transport.port
    stop.set()
    thread.join(30)
    transport.close()
    assert not thread.is_alive()


def ask(client: GrpcClientTransport, t: int, value: float) -> float:
    client.send_observation(obs(t, value))
    chunk = client.receive(10)
    assert chunk is not None and chunk.timestep == t, chunk
    return float(chunk.actions[0, 0])


def test_two_robots_over_grpc_share_one_policy_with_their_own_histories(grpc_server):
    server, port = grpc_server
    left, right = fast_client(port), fast_client(port)
    try:
        assert left.handshake(hello(policy=HISTORY), 10).accepted
        assert right.handshake(hello(policy=HISTORY), 10).accepted  # no longer refused
        wait_until(lambda: server.sessions_active == 2, 10, "two sessions")
        assert ask(left, 1, 10) == 10
        assert ask(right, 1, 100) == 100
        assert ask(left, 2, 20) == 15
        assert ask(right, 2, 200) == 150
        assert ask(left, 3, 40) == 30
        left.close()
        wait_until(lambda: server.sessions_active == 1, 10, "the left robot's session to end")
        third = fast_client(port)
        try:
            assert third.handshake(hello(policy=HISTORY), 10).accepted
            assert ask(third, 1, 5) == 5  # fresh: neither left's 40 nor right's 200
            assert ask(right, 3, 400) == 300  # right's own history survived it all
            assert ask(third, 2, 7) == 6
        finally:
            third.close()
    finally:
        left.close()
        right.close()
    (batcher,) = server._batchers.values()  # one loaded policy served all three
    wait_until(lambda: server.sessions_active == 0, 10, "every session to end")
    assert not batcher._states
