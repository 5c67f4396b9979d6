"""The policy server loop over the in-process transport."""

import threading

import numpy as np
import pytest

from asyncinf.runtime.errors import ConfigError, HandshakeError
from asyncinf.runtime.limits import check_handshake, check_observation
from asyncinf.runtime.messages import (
    SCHEMA_VERSION,
    ActionChunk,
    ErrorMessage,
    Observation,
    PolicySpec,
)
from asyncinf.runtime.server import PolicyCache, PolicyServer, ServerConfig
from asyncinf.runtime.testing import hello
from asyncinf.transports.inproc import InProcChannel


def fake(**options) -> PolicySpec:
    return PolicySpec(type="fake", actions_per_chunk=4, options=options)


@pytest.fixture
def serving():
    """A PolicyServer on a thread; yields (client end, policy cache)."""
    client, server_end = InProcChannel().ends()
    cache = PolicyCache()
    server = PolicyServer(cache, ServerConfig(poll_s=0.02))
    stop = threading.Event()
    thread = threading.Thread(target=server.serve, args=(server_end, stop.is_set))
    thread.start()
    yield client, cache
    stop.set()
    client.close()
    thread.join(5)
    assert not thread.is_alive()


def obs(t, state=(1.0, 2.0), must_go=True):
    return Observation(t, 0, np.asarray(state, np.float32), must_go=must_go)


def test_chunks_answer_the_observation_with_timings(serving):
    client, _ = serving
    reply = client.handshake(hello(), 5)
    assert reply.accepted and reply.action_names == ["a.pos", "b.pos"]
    client.send_observation(obs(7))
    chunk = client.receive(5)
    assert isinstance(chunk, ActionChunk)
    assert chunk.timestep == 7 and chunk.actions.shape == (4, 2)
    assert chunk.obs_sent_ns > 0 and chunk.inference_ns > 0
    np.testing.assert_array_equal(chunk.actions[0], [1.0, 2.0])


def test_policy_exceptions_reach_the_client_and_the_server_goes_on(serving):
    client, _ = serving
    client.handshake(hello(policy=fake(fail_every=2)), 5)
    replies = []
    for t in range(4):
        client.send_observation(obs(t))
        replies.append(client.receive(5))
    kinds = [type(r).__name__ for r in replies]
    assert kinds == ["ActionChunk", "ErrorMessage", "ActionChunk", "ErrorMessage"]
    err = replies[1]
    assert err.code == "inference" and "failing call 2" in err.message and err.timestep == 1


def test_load_failure_is_refused_at_handshake_with_the_reason(serving):
    client, _ = serving
    with pytest.raises(HandshakeError, match="failing at load"):
        client.handshake(hello(policy=fake(fail_on_load=True)), 5)


def test_unknown_schema_version_is_refused_naming_both(serving):
    client, _ = serving
    h = hello()
    h.schema_version = 99
    with pytest.raises(HandshakeError, match=rf"99.*{SCHEMA_VERSION}"):
        client.handshake(h, 5)


def test_policy_is_loaded_once_and_kept_across_sessions(serving):
    client, cache = serving
    client.handshake(hello(), 5)
    first = cache.get(hello())
    client.close()
    client.handshake(hello(), 5)
    assert cache.get(hello()) is first


def test_similarity_filter_is_unit_aware_and_must_go_always_runs():
    client, server_end = InProcChannel().ends()
    server = PolicyServer(PolicyCache(), ServerConfig(similarity_atol=0.5, poll_s=0.02))
    stop = threading.Event()
    thread = threading.Thread(target=server.serve, args=(server_end, stop.is_set))
    thread.start()
    try:
        client.handshake(hello(), 5)
        answered = []
        for t, (state, must_go) in enumerate(
            [((0, 0), False), ((0.1, 0.1), False), ((0.1, 0.1), True), ((2, 0), False)]
        ):
            client.send_observation(obs(t, state, must_go))
            msg = client.receive(0.3)
            answered.append(None if msg is None else msg.timestep)
        assert answered == [0, None, 2, 3]  # 0.1 deg moved < 0.5 deg: skipped unless must_go
    finally:
        stop.set()
        client.close()
        thread.join(5)


def test_a_nan_from_the_policy_is_not_hidden(serving):
    client, _ = serving
    client.handshake(hello(policy=fake(nan_every=1)), 5)
    client.send_observation(obs(0))
    chunk = client.receive(5)
    assert isinstance(chunk, ActionChunk) and np.isnan(chunk.actions[0, 0])
    assert not isinstance(chunk, ErrorMessage)


def test_a_client_with_other_features_gets_a_policy_built_for_it(serving):
    client, cache = serving
    assert client.handshake(hello(), 5).accepted
    first = cache.get(hello())
    client.close()
    other = hello({"front": (24, 32, 3)}, joint_names=["x", "y", "z"])
    reply = client.handshake(other, 5)
    assert reply.accepted and reply.action_names == ["x", "y", "z"]
    client.send_observation(
        Observation(0, 0, np.zeros(3, np.float32), {"front": np.zeros((24, 32, 3), np.uint8)})
    )
    assert client.receive(5).actions.shape == (4, 3)
    client.close()
    assert client.handshake(hello(), 5).accepted  # the first kind of client still is
    assert cache.get(hello()) is first
    assert len(cache.info()) == 2


def test_the_first_policy_stays_and_the_others_are_bounded():
    cache = PolicyCache(max_policies=2)
    first = cache.get(hello())
    for n in range(3, 6):  # three clients with other robots, one after another
        cache.get(hello(joint_names=[f"j{i}" for i in range(n)]))
    assert len(cache.info()) == 2
    assert cache.get(hello()) is first  # never unloaded


def test_one_policy_only_refuses_other_features_in_one_line():
    cache = PolicyCache(max_policies=1)
    cache.get(hello())
    with pytest.raises(ConfigError, match=r"--max_policies=1 .*other joints than"):
        cache.get(hello(joint_names=["x"]))


def test_observation_checks_name_what_differs_from_the_handshake():
    cams = {"front": (24, 32, 3)}
    good = Observation(0, 0, np.zeros(2, np.float32), {"front": np.zeros((24, 32, 3), np.uint8)})
    assert check_observation(good, 2, cams) is None
    good.images["front"] = np.zeros((24, 32, 3), np.float32)  # the shm codec refuses it earlier
    assert "float32 (24, 32, 3), the handshake agreed uint8" in check_observation(good, 2, cams)
    good.images["front"] = np.zeros((24, 32, 3), np.uint8)
    good.state = np.zeros(2, np.float64)
    assert "state of float64" in check_observation(good, 2, cams)


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"cameras": {"front": (8, 8)}}, "camera 'front' of shape (8, 8)"),
        ({"cameras": {"front": (8, 8, 4)}}, "(H, W, 3) with H and W from 1 to 4096"),
        ({"joint_names": []}, "no joints"),
        ({"fps": 5000.0}, "fps 5000, must be in (0, 1000]"),
        ({"robot_type": "r" * 200}, "robot type name 'rrrr"),
    ],
)
def test_handshake_limits_name_what_is_wrong(fields, says):
    with pytest.raises(ConfigError) as info:
        check_handshake(hello(**fields))
    assert says in str(info.value) and len(str(info.value)) < 200
