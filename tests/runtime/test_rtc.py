"""Real-time chunking on the runtime side: the delay estimate, the prefix weights, the client's
queue and seams, the server's observation checks and refusals, the scripted policy's hook."""

import threading

import numpy as np
import pytest

from asyncinf.policies.policy import check_spec
from asyncinf.policies.scripted import ScriptedPolicy
from asyncinf.robots.fake import FakeRobot
from asyncinf.runtime.client import ClientConfig, RobotClient
from asyncinf.runtime.errors import ConfigError, HandshakeError, PolicyOptionError
from asyncinf.runtime.limits import check_observation
from asyncinf.runtime.messages import (
    NO_RTC,
    ActionChunk,
    HandshakeReply,
    Observation,
    PolicySpec,
    RtcInput,
    RtcSettings,
)
from asyncinf.runtime.rtc import DelayEstimator, prefix_weights
from asyncinf.runtime.server import PolicyCache, PolicyServer, ServerConfig
from asyncinf.runtime.testing import hello
from asyncinf.transports.counters import NoCounters
from asyncinf.transports.inproc import InProcChannel

# --- the delay estimate --------------------------------------------------------------------


def feed(est, counts, steady=True):
    """Each count measured for an observation that announced the estimate of its time."""
    announced = []
    for n in counts:
        announced.append(est.estimate())
        est.record(n, n, announced[-1], steady)
    return announced


def test_a_warm_up_spike_does_not_inflate_the_estimate():
    est = DelayEstimator(window=50, percentile=95, warmup=3)
    est.record(0, 4, 0, steady=False)  # from standstill: nothing ran, 4 ticks passed
    assert est.estimate() == 4  # before steady state: the ticks the latest chunk took
    feed(est, [15, 9])  # the rest of the warm-up: a cold first call
    announced = feed(est, [3, 3, 4, 3, 3, 3, 4, 3, 3, 3] * 3)
    assert announced[0] == 9 and max(announced[1:]) <= 4  # a running max: 15 for ever
    assert est.estimate() == 4  # the 95th percentile of mostly 3s and some 4s
    s = est.summary()
    assert s.chunks == 30 and s.too_high == 1  # the first announced the warm-up's 9
    assert s.exact + s.one_above == 28 and s.too_low == 1  # the first 4 came early
    assert s.measured_ticks.max == pytest.approx(4, rel=0.01)
    feed(est, [12])  # one slow call in steady state: an outlier of the window
    assert est.estimate() == 4


def test_the_window_forgets_an_old_slow_spell_and_counts_each_kind_of_miss():
    est = DelayEstimator(window=5, percentile=100, warmup=0)
    feed(est, [8] * 5)
    assert est.estimate() == 8
    feed(est, [2] * 5)
    assert est.estimate() == 2  # five later chunks pushed the 8s out of the window
    est = DelayEstimator(window=10, percentile=50, warmup=0)
    est.record(3, 3, 2, True)  # announced 2, 3 ran: too low
    est.record(3, 3, 3, True)
    est.record(3, 3, 4, True)
    est.record(3, 3, 6, True)  # too high
    est.record(3, 3, 0, False)  # the queue ran dry: not counted
    s = est.summary()
    assert (s.too_low, s.exact, s.one_above, s.too_high, s.chunks) == (1, 1, 1, 1, 4)


def test_a_new_session_warms_up_again():
    est = DelayEstimator(window=10, warmup=1)
    feed(est, [30, 2, 2])
    est.restart()
    feed(est, [40])  # the new session's first chunk: warm-up, not in the window
    assert est.estimate() == 2


# --- prefix weights ------------------------------------------------------------------------


def test_linear_weights_are_lerobots():
    w = prefix_weights(4, 10, 50)
    np.testing.assert_allclose(w[:11], [1, 1, 1, 1, 6 / 7, 5 / 7, 4 / 7, 3 / 7, 2 / 7, 1 / 7, 0])
    assert not w[10:].any() and w.shape == (50,)


def test_other_schedules_and_a_delay_beyond_the_horizon():
    np.testing.assert_array_equal(prefix_weights(2, 5, 8, "ONES"), [1, 1, 1, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(prefix_weights(2, 5, 8, "ZEROS"), [1, 1, 0, 0, 0, 0, 0, 0])
    exp = prefix_weights(2, 5, 8, "EXP")
    assert exp[:2].tolist() == [1, 1] and 0 < exp[4] < exp[3] < exp[2] < 1 and exp[5] == 0
    np.testing.assert_array_equal(prefix_weights(7, 5, 8), [1, 1, 1, 1, 1, 0, 0, 0])


# --- the client: queue, observation, seams -------------------------------------------------


class Server:
    """Takes each observation on the tick it is sent and answers `latency` ticks later with
    actions whose value is their own timestep plus a per-chunk `offset(obs)`."""

    def __init__(self, end, chunk, latency, offset=lambda obs: 0.0):
        self.end, self.T, self.latency, self.offset = end, chunk, latency, offset
        self.busy = None
        self.taken = []

    def step(self, client, ticks):
        for tick in range(ticks):
            if self.busy and tick - self.busy[1] >= self.latency:
                obs = self.busy[0]
                t = np.arange(obs.timestep, obs.timestep + self.T, dtype=np.float32)
                actions = np.repeat(t[:, None], len(obs.state), 1) + self.offset(obs)
                self.end.publish_chunk(ActionChunk(obs.timestep, actions.astype(np.float32)), 0)
                self.busy = None
            client.tick()
            lease = self.end.next_observation(0) if self.busy is None else None
            if lease is not None:
                self.busy = (lease.observation, tick)
                self.taken.append(lease.observation)
                lease.release()


class Recorder(FakeRobot):
    def send_action(self, action):
        self.sent.append(np.array(action))
        super().send_action(action)

    def connect(self):
        self.sent = []
        super().connect()


def rtc_client(chunk=10, g=0.5, rtc=True, **cfg):
    robot = Recorder()
    robot.connect()
    policy = PolicySpec(actions_per_chunk=chunk, rtc=RtcSettings() if rtc else None)
    client = RobotClient(
        robot, ClientConfig(actions_per_chunk=chunk, chunk_size_threshold=g, **cfg), policy
    )
    client_end, server_end = InProcChannel().ends()

    def answer():
        server_end.accept(5)
        server_end.reply(HandshakeReply(accepted=True, action_names=robot.joint_names))

    t = threading.Thread(target=answer)
    t.start()
    client.attach(client_end)
    t.join()
    return client, server_end, robot


def executed_timesteps(robot):
    return [round(float(a[0])) for a in robot.sent]


def test_from_standstill_no_action_is_skipped_whatever_the_estimate():
    client, end, robot = rtc_client()
    client.stats.delay = DelayEstimator(warmup=0)
    feed(client.stats.delay, [6] * 10)  # an estimate far above what will happen
    server = Server(end, 10, latency=3)
    server.step(client, 4)
    assert server.taken[0].inference_delay == 6 and len(server.taken[0].prev_chunk_left_over) == 0
    assert executed_timesteps(robot) == [0]  # the first chunk's first action, not its 7th


def test_the_announced_delay_never_exceeds_the_chunk():
    client, end, _robot = rtc_client(chunk=10)
    client.stats.delay = DelayEstimator(warmup=0)
    feed(client.stats.delay, [55] * 3)  # a first chunk that took longer than a chunk lasts
    server = Server(end, 10, latency=3)
    server.step(client, 2)
    assert server.taken[0].inference_delay == 10


def test_chunks_replace_the_queue_by_the_true_count_not_the_estimate():
    client, end, robot = rtc_client(chunk=10, g=0.5)
    client.stats.delay = DelayEstimator(warmup=0, window=3)
    feed(client.stats.delay, [1] * 3)  # announces 1; 3 will run
    server = Server(end, 10, latency=3)
    server.step(client, 60)
    done = executed_timesteps(robot)
    assert done == list(range(len(done))) and len(done) > 50  # each timestep once, in order
    steady = [o for o in server.taken if not o.must_go]
    assert steady and steady[0].inference_delay == 1  # the estimate travelled ...
    assert steady[-1].inference_delay == 3  # ... and learned the true delay
    assert client.stats.delay.summary().too_low >= 1
    assert client.stats.idle_frames_after_first_chunk == 0


def test_the_observation_carries_the_queue_from_its_timestep():
    client, end, _robot = rtc_client(chunk=10, g=0.5)
    server = Server(end, 10, latency=2, offset=lambda obs: 0.25)
    server.step(client, 30)
    for obs in server.taken[1:]:
        tail = obs.prev_chunk_left_over
        assert tail.dtype == np.float32 and tail.shape[1] == len(obs.state)
        # What the client held for timesteps t, t+1, …: the previous chunk, unblended.
        expected = np.arange(obs.timestep, obs.timestep + len(tail)) + 0.25
        np.testing.assert_allclose(tail[:, 0], expected)
        assert len(tail) == 5  # the threshold: sent when half a chunk is left


@pytest.mark.parametrize("rtc", [False, True])
def test_every_seam_is_measured_with_rtc_or_without(rtc):
    client, end, _robot = rtc_client(chunk=10, g=0.5, rtc=rtc, aggregate_fn_name="latest_only")
    # Chunks alternately 1.5 above the timestep and on it: each seam jumps by 1.5.
    server = Server(end, 10, latency=2, offset=lambda obs: 1.5 * (len(server.taken) % 2))
    server.step(client, 40)
    s = client.stats
    assert s.seam_jump.count == s.chunks_received - 1  # the first chunk met an empty queue
    assert s.seam_jump.max == pytest.approx(1.5, rel=0.01)
    assert s.command_step.max == pytest.approx(1 + 1.5, rel=0.01)  # a tick plus the jump
    summary = s.summary(30.0, 10, NoCounters(), client.holds.summary())
    assert summary.seam_jump.p50 == pytest.approx(1.5, rel=0.01)
    assert summary.command_step.max == pytest.approx(2.5, rel=0.01)
    assert summary.inference_delay.chunks >= 1


def test_without_rtc_the_observation_carries_none():
    client, end, _robot = rtc_client(rtc=False)
    server = Server(end, 10, latency=2)
    server.step(client, 20)
    assert all(o.inference_delay == NO_RTC and o.prev_chunk_left_over.size == 0
               for o in server.taken)  # fmt: skip


# --- the server ----------------------------------------------------------------------------


def rtc_obs(delay=2, tail=None, joints=2):
    tail = np.zeros((3, joints), np.float32) if tail is None else tail
    return Observation(5, 0, np.zeros(joints, np.float32), inference_delay=delay,
                       prev_chunk_left_over=tail)  # fmt: skip


@pytest.mark.parametrize(
    ("observation", "chunk", "says"),
    [
        (rtc_obs(delay=-1), 10, "inference_delay -1"),
        (rtc_obs(delay=11), 10, "inference_delay 11"),
        (rtc_obs(tail=np.zeros((3, 2), np.float64)), 10, "float64 (3, 2)"),
        (rtc_obs(tail=np.zeros((3, 5), np.float32)), 10, "float32 (K, 2)"),
        (rtc_obs(tail=np.zeros(3, np.float32)), 10, "float32 (K, 2)"),
        (rtc_obs(tail=np.zeros((11, 2), np.float32)), 10, "11 actions"),
        (rtc_obs(tail=np.array([[0, np.nan]], np.float32)), 10, "nan at action 0, joint 1"),
        (rtc_obs(), None, "without --rtc"),
    ],
)
def test_rtc_fields_are_checked_before_the_policy(observation, chunk, says):
    why = check_observation(observation, 2, {}, chunk)
    assert why is not None and says in why and "\n" not in why


def test_good_rtc_fields_pass():
    assert check_observation(rtc_obs(), 2, {}, 10) is None
    assert check_observation(rtc_obs(delay=0, tail=np.zeros((0, 2), np.float32)), 2, {}, 10) is None
    assert check_observation(Observation(5, 0, np.zeros(2, np.float32)), 2, {}, None) is None


@pytest.fixture
def serving():
    client, server_end = InProcChannel().ends()
    server = PolicyServer(PolicyCache(), ServerConfig(poll_s=0.02))
    stop = threading.Event()
    thread = threading.Thread(target=server.serve, args=(server_end, stop.is_set))
    thread.start()
    yield client
    stop.set()
    client.close()
    thread.join(5)
    assert not thread.is_alive()


def test_the_server_refuses_rtc_for_a_policy_that_cannot_in_one_line(serving):
    spec = PolicySpec(type="fake", actions_per_chunk=4, rtc=RtcSettings())
    with pytest.raises(HandshakeError) as err:
        serving.handshake(hello(policy=spec), 5)
    msg = str(err.value)
    assert "--rtc" in msg and "fake" in msg and "scripted, smolvla, pi0, pi05" in msg
    assert "\n" not in msg


def test_the_server_passes_the_delay_and_tail_to_an_rtc_session(serving):
    settings = RtcSettings(execution_horizon=4)
    spec = PolicySpec(type="scripted", actions_per_chunk=8, rtc=settings)
    assert serving.handshake(hello(policy=spec), 10).accepted
    tail = np.full((6, 2), 7.0, np.float32)
    serving.send_observation(rtc_obs(delay=2, tail=tail))
    chunk = serving.receive(10)
    assert isinstance(chunk, ActionChunk)
    np.testing.assert_array_equal(chunk.actions[:2], tail[:2])  # followed over the delay
    bad = rtc_obs(delay=99, tail=tail)
    serving.send_observation(bad)
    error = serving.receive(10)
    assert error.code == "bad_observation" and "inference_delay 99" in error.message


# --- refusals before start, and the scripted policy's hook ---------------------------------


@pytest.mark.parametrize("kind", ["tiny_torch", "fake", "act", "diffusion"])
def test_rtc_is_refused_before_start_naming_the_policies_that_can(kind):
    with pytest.raises(PolicyOptionError) as err:
        check_spec(PolicySpec(type=kind, rtc=RtcSettings()), loads_here=False)
    assert f"--policy.type={kind}" in str(err.value)
    assert "scripted, smolvla, pi0, pi05" in str(err.value)


def test_rtc_types_pass_the_check_before_start():
    for kind in ("scripted", "smolvla", "pi0", "pi05"):
        check_spec(PolicySpec(type=kind, rtc=RtcSettings()), loads_here=False)


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        ({"execution_horizon": 0}, "--rtc.execution_horizon=0"),
        ({"execution_horizon": 2.5}, "--rtc.execution_horizon=2.5"),
        ({"max_guidance_weight": 0}, "--rtc.max_guidance_weight=0"),
        ({"max_guidance_weight": float("inf")}, "--rtc.max_guidance_weight=inf"),
        ({"prefix_attention_schedule": "CUBIC"}, "--rtc.prefix_attention_schedule='CUBIC'"),
    ],
)
def test_rtc_settings_name_the_bad_value(settings, says):
    with pytest.raises(ConfigError, match=says):
        RtcSettings(**settings)


def scripted(**options):
    spec = PolicySpec(type="scripted", actions_per_chunk=20, options=options)
    return ScriptedPolicy(spec, hello(policy=spec))


def test_disagreement_shifts_each_chunk_by_its_own_seeded_offset():
    plain, shifted = scripted(), scripted(disagreement=5.0, seed=3)
    o1 = Observation(10, 0, np.zeros(2, np.float32))
    o2 = Observation(35, 0, np.zeros(2, np.float32))
    d1 = shifted.predict_chunk(o1) - plain.predict_chunk(o1)
    d2 = shifted.predict_chunk(o2) - plain.predict_chunk(o2)
    np.testing.assert_allclose(d1 - d1[0], 0, atol=1e-4)  # one offset over the whole chunk
    assert np.abs(d1[0]).max() <= 5.0 and not np.allclose(d1[0], d2[0])
    np.testing.assert_array_equal(shifted.predict_chunk(o1), shifted.predict_chunk(o1))
    assert not np.allclose(
        scripted(disagreement=5.0, seed=4).predict_chunk(o1), shifted.predict_chunk(o1)
    )


def test_scripted_follows_the_tail_over_the_delay_and_blends_over_the_horizon():
    policy = scripted(disagreement=5.0)
    o = Observation(10, 0, np.zeros(2, np.float32))
    own = policy.predict_chunk(o)
    tail = np.full((12, 2), 40.0, np.float32)
    rtc = RtcInput(3, tail, RtcSettings(execution_horizon=8))
    out = policy.predict_chunk(o, rtc=rtc)
    w = prefix_weights(3, 8, 20)[:, None]
    np.testing.assert_array_equal(out[:3], tail[:3])
    np.testing.assert_allclose(out[:12], w[:12] * tail + (1 - w[:12]) * own[:12], rtol=1e-5)
    np.testing.assert_array_equal(out[8:], own[8:])  # past the horizon: its own plan
    short = policy.predict_chunk(o, rtc=RtcInput(2, tail[:4], RtcSettings(execution_horizon=8)))
    np.testing.assert_array_equal(short[4:], own[4:])  # a shorter tail ends the blend sooner
    cold = policy.predict_chunk(o, rtc=RtcInput(0, np.zeros((0, 2), np.float32), RtcSettings()))
    np.testing.assert_array_equal(cold, own)


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"disagreement": -1}, "--policy.disagreement=-1"),
        ({"seed": -2}, "--policy.seed=-2"),
        ({"seed": 1.5}, "--policy.seed=1.5"),
    ],
)
def test_scripted_options_are_checked(options, says):
    with pytest.raises(PolicyOptionError, match=says):
        ScriptedPolicy.check_options(PolicySpec(options=options))
