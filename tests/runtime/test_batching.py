"""Batched inference across sessions: tiny_torch's batch equals its one-by-one answers, the
Batcher forms batches from threads that wait at once, and one bad input fails only its own."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from asyncinf.policies.policy import make_policy
from asyncinf.robots.sim.arm import SO101_JOINTS
from asyncinf.runtime.batching import FRUITLESS_WAITS, PROBE_EVERY, Batcher
from asyncinf.runtime.messages import Handshake, Observation, PolicySpec
from asyncinf.runtime.server import PolicyCache, PolicyServer, ServerConfig
from asyncinf.runtime.testing import wait_until
from asyncinf.transports.inproc import InProcChannel, InProcServer

CAMERAS = {"front": (48, 64, 3), "wrist": (60, 60, 3)}


def tiny(**options):
    spec = PolicySpec(
        type="tiny_torch", actions_per_chunk=10,
        options={"hidden": 16, "depth": 1, "image_size": 24, **options},
    )  # fmt: skip
    features = Handshake(list(SO101_JOINTS), dict(CAMERAS), spec, 30.0)
    return make_policy(spec, features)


def observe(seed: int, cameras=CAMERAS) -> Observation:
    rng = np.random.default_rng(seed)
    images = {k: rng.integers(0, 256, s, dtype=np.uint8) for k, s in cameras.items()}
    state = rng.uniform(-50, 50, len(SO101_JOINTS)).astype(np.float32)
    return Observation(seed, 0, state, images)


def test_tiny_torch_batch_gives_the_actions_of_one_by_one():
    policy = tiny()
    inputs = [policy.preprocess(observe(seed)) for seed in range(5)]
    alone = [policy.postprocess(policy.predict_chunk(x)) for x in inputs]
    batched = [policy.postprocess(out) for out in policy.predict_batch(inputs)]
    for a, b in zip(alone, batched, strict=True):
        assert b.shape == (10, len(SO101_JOINTS))
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-4)
    # Each answer is its own observation's: they differ from one another.
    assert not np.allclose(batched[0], batched[1])


def _predict_at_once(batcher: Batcher, inputs: list) -> list:
    """Every input from its own thread, released together; the results in input order."""
    results: list = [None] * len(inputs)
    go = threading.Barrier(len(inputs))

    def one(i: int) -> None:
        go.wait(10)
        try:
            results[i] = batcher.predict(inputs[i])
        except Exception as exc:  # the test looks at which ones failed
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    return results


def test_sessions_waiting_at_once_run_in_one_batch_with_the_same_actions():
    policy = tiny()
    batcher = Batcher(policy, max_size=4, max_wait_ms=1000)
    for _ in range(4):
        batcher.join()
    inputs = [policy.preprocess(observe(seed)) for seed in range(4)]
    results = _predict_at_once(batcher, inputs)
    # The first waits (up to 1 s) until all four sessions have one waiting: one batch of 4.
    assert [r.batch_size for r in results] == [4, 4, 4, 4]
    assert batcher.batch_sizes == {4: 1}
    for x, r in zip(inputs, results, strict=True):
        want = policy.postprocess(policy.predict_chunk(x))
        np.testing.assert_allclose(policy.postprocess(r.outputs), want, rtol=1e-5, atol=1e-4)


def test_a_session_alone_does_not_wait_for_company():
    policy = tiny()
    batcher = Batcher(policy, max_size=4, max_wait_ms=1000)
    batcher.join()  # the only session: nobody to wait for
    got = batcher.predict(policy.preprocess(observe(0)))
    assert got.batch_size == 1
    assert got.wait_ns < 0.5e9  # it would be 1 s had it waited for company


def test_policy_without_a_batch_dimension_runs_one_at_a_time():
    policy = make_policy(
        PolicySpec(type="fake", actions_per_chunk=4),
        Handshake(["a.pos", "b.pos"], {}, PolicySpec(type="fake", actions_per_chunk=4), 30.0),
    )
    batcher = Batcher(policy, max_size=4, max_wait_ms=50)
    for _ in range(3):
        batcher.join()
    results = _predict_at_once(batcher, [policy.preprocess(observe(s)) for s in range(3)])
    assert [r.batch_size for r in results] == [1, 1, 1]
    assert batcher.batch_sizes == {1: 3}


class _Picky:
    """A batch policy that fails on one input: as a model fails on a malformed tensor."""

    supports_batch = True
    keeps_session_state = False

    def predict_chunk(self, x):
        if x == "bad":
            raise ValueError("bad input")
        return x * 2

    def predict_batch(self, xs):
        return [self.predict_chunk(x) for x in xs]


def test_one_bad_input_fails_only_its_own_session():
    batcher = Batcher(_Picky(), max_size=3, max_wait_ms=1000)
    for _ in range(3):
        batcher.join()
    results = _predict_at_once(batcher, [1, "bad", 3])
    assert results[0].outputs == 2 and results[2].outputs == 6
    assert isinstance(results[1], ValueError)


def _four_lanes():
    channels = [InProcChannel() for _ in range(4)]
    ends = [ch.ends() for ch in channels]

    class FourLanes(InProcServer):
        """The first channel's server end, offering all four as its lanes."""

        def lanes(self):
            return [server for _, server in ends]

    return FourLanes(channels[0]), [client for client, _ in ends]


@pytest.mark.parametrize("max_size", [1, 4])
def test_server_lanes_serve_several_sessions_with_their_own_answers(max_size):
    """PolicyServer over an in-process transport of 4 lanes: each session's chunks answer
    its own observations, batched or not."""
    transport, clients = _four_lanes()
    config = ServerConfig(max_sessions=4, batch={"max_size": max_size, "max_wait_ms": 200})
    server = PolicyServer(PolicyCache(), config)
    stop = threading.Event()
    thread = threading.Thread(target=server.serve, args=(transport, stop.is_set))
    thread.start()
    policy = tiny()
    spec = policy.spec
    try:
        for client in clients:
            client.handshake(Handshake(list(SO101_JOINTS), dict(CAMERAS), spec, 30.0), 30)
        wait_until(lambda: server.sessions_active == 4, 10, "four sessions")
        for round_ in range(3):
            for i, client in enumerate(clients):
                client.send_observation(observe(10 * round_ + i, policy.image_shapes))
            for i, client in enumerate(clients):
                chunk = client.receive(30)
                assert chunk is not None and chunk.timestep == 10 * round_ + i
                want = policy.postprocess(
                    policy.predict_chunk(
                        policy.preprocess(observe(10 * round_ + i, policy.image_shapes))
                    )
                )
                np.testing.assert_allclose(chunk.actions, want, rtol=1e-5, atol=1e-4)
    finally:
        stop.set()
        thread.join(30)
    sizes = {int(k) for s in server.sessions for k in s.summary()["batch_sizes"]}
    assert sizes == {1} if max_size == 1 else max(sizes) > 1


def test_waiting_for_company_that_never_comes_stops_but_is_probed_again():
    """Two sessions, one of which never asks: after FRUITLESS_WAITS empty waits the leader
    goes at once, except every PROBE_EVERY-th, which waits again."""
    batcher = Batcher(_Picky(), max_size=2, max_wait_ms=1000)
    batcher.join()
    batcher.join()
    waited = [batcher.predict(1).wait_ns > 0.5e9 for _ in range(PROBE_EVERY)]
    skipped = PROBE_EVERY - FRUITLESS_WAITS - 1
    assert waited == [True] * FRUITLESS_WAITS + [False] * skipped + [True]
