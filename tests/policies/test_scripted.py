"""The scripted policy: shapes, determinism, closed loop, latency, options."""

import time

import numpy as np
import pytest

from asyncinf.policies.policy import make_policy
from asyncinf.policies.scripted import ScriptedPolicy
from asyncinf.robots.sim.arm import SO101_JOINTS
from asyncinf.runtime.errors import PolicyError
from asyncinf.runtime.messages import Handshake, Observation, PolicySpec

T = 20


def policy(chunk=T, client_fps=30.0, joints=SO101_JOINTS, **options) -> ScriptedPolicy:
    spec = PolicySpec(type="scripted", actions_per_chunk=chunk, options=options)
    features = Handshake(
        joint_names=list(joints), cameras={"front": (480, 640, 3)}, policy=spec, fps=client_fps
    )
    p = make_policy(spec, features)
    assert isinstance(p, ScriptedPolicy)
    return p


def observe(state, timestep=0) -> Observation:
    return Observation(
        timestep=timestep,
        capture_ns=0,
        state=np.asarray(state, np.float32),
        images={"front": np.zeros((480, 640, 3), np.uint8)},
    )


def run(p, obs) -> np.ndarray:
    return p.postprocess(p.predict_chunk(p.preprocess(obs)))


def test_shape_and_dtype():
    actions = run(policy(), observe(np.zeros(6)))
    assert actions.shape == (T, 6) and actions.dtype == np.float32
    assert np.isfinite(actions).all()


def test_same_observation_same_bytes():
    obs = observe([1, -2, 3, -4, 5, 60], timestep=123)
    assert run(policy(), obs).tobytes() == run(policy(), obs).tobytes()
    p = policy()
    assert run(p, obs).tobytes() == run(p, obs).tobytes()


def test_closed_loop_from_the_observed_state():
    p = policy(converge_s=0.2)
    ref = p.reference(np.arange(100, 100 + T))
    state = ref[0] + np.array([20, -20, 10, -10, 5, -5])
    actions = run(p, observe(state, timestep=100))
    gap = np.abs(actions - ref)
    assert np.all(gap[0] < np.abs(state - ref[0]))  # the first action starts near the state
    assert np.all(np.diff(gap, axis=0) <= 1e-4)  # and closes the gap
    # Depends on the state: a pushed arm gets another chunk.
    assert not np.array_equal(actions, run(p, observe(ref[0], timestep=100)))
    # On the reference, the chunk follows it.
    np.testing.assert_allclose(run(p, observe(ref[0], timestep=100)), ref, atol=1e-4)


def test_timestep_moves_the_reference():
    p = policy(fps=10, period_s=2.0, amplitude=30.0)
    a = run(p, observe(np.zeros(6), timestep=0))
    b = run(p, observe(np.zeros(6), timestep=5))  # half a period later
    assert not np.array_equal(a, b)
    ref = p.reference(np.arange(0, 40))
    assert np.abs(ref[:, :5]).max() == pytest.approx(30.0, abs=0.5)
    assert ref[:, 5].min() >= 0.0 and ref[:, 5].max() <= 100.0  # gripper about 50, in range


def test_fps_from_the_handshake_or_the_option():
    assert policy(client_fps=50.0).fps == 50.0
    assert policy(client_fps=50.0, fps=None).fps == 50.0
    assert policy(client_fps=50.0, fps=10).fps == 10.0
    with pytest.raises(PolicyError, match=r"--policy\.fps"):
        policy(client_fps=0.0)


def test_generic_joints():
    names = [f"joint_{i}.pos" for i in range(3)]
    assert run(policy(joints=names), observe(np.zeros(3))).shape == (T, 3)


def test_latency_is_honoured():
    p = policy(latency_ms=30)
    obs = observe(np.zeros(6))
    t0 = time.monotonic()
    run(p, obs)
    assert time.monotonic() - t0 >= 0.030


def test_warmup_works():
    p = policy(latency_ms=1)
    p.warmup()
    p.reset()


@pytest.mark.parametrize(
    ("options", "flag"),
    [
        ({"latency_ms": -1}, "--policy.latency_ms=-1"),
        ({"latency_ms": "slow"}, "--policy.latency_ms='slow'"),
        ({"period_s": 0}, "--policy.period_s=0"),
        ({"amplitude": float("nan")}, "--policy.amplitude=nan"),
        ({"converge_s": True}, "--policy.converge_s=True"),
        ({"fps": 0}, "--policy.fps=0"),
        ({"speed": 1}, "--policy.speed"),
    ],
)
def test_bad_options_name_the_option(options, flag):
    with pytest.raises(PolicyError) as err:
        policy(**options)
    assert flag in str(err.value)


def test_bad_state_shape():
    with pytest.raises(PolicyError, match="shape"):
        run(policy(), observe(np.zeros(5)))
