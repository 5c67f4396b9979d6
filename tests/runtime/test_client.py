"""The client's semantics, tick by tick, against a server the test drives by hand."""

import threading

import numpy as np
import pytest

from asyncinf.robots.fake import FakeRobot, FakeRobotConfig
from asyncinf.runtime.client import ClientConfig, ClientFailure, RobotClient
from asyncinf.runtime.errors import HandshakeError, PeerGone
from asyncinf.runtime.messages import ActionChunk, ErrorMessage, HandshakeReply, PolicySpec
from asyncinf.transports.inproc import InProcChannel


class ScriptedServer:
    """Answers each observation `latency` ticks after taking it; one at a time, like a GPU."""

    def __init__(self, end, chunk_size, latency, answer=None):
        self.end, self.T, self.latency = end, chunk_size, latency
        self.answer = answer or (
            lambda obs: np.full((self.T, len(obs.state)), obs.timestep, np.float32)
        )
        self.busy = None  # (observation, tick taken)
        self.taken = []

    def publish_due(self, tick):
        if self.busy and tick - self.busy[1] >= self.latency:
            obs = self.busy[0]
            out = self.answer(obs)
            if isinstance(out, ErrorMessage):
                self.end.send_error(out)
            else:
                self.end.publish_chunk(ActionChunk(obs.timestep, out, obs_sent_ns=obs.sent_ns), 0)
            self.busy = None

    def take(self, tick):
        if self.busy is None:
            lease = self.end.next_observation(0)
            if lease is not None:
                self.busy = (lease.observation, tick)
                self.taken.append(lease.observation)
                lease.release()


def attach(robot, reply, **cfg):
    """A client on `robot`, attached over the in-process transport to a server that answers
    its handshake with `reply`; returns (client, the server's end)."""
    robot.connect()
    client = RobotClient(robot, ClientConfig(**cfg), PolicySpec())
    client_end, server_end = InProcChannel().ends()

    def answer():
        server_end.accept(5)
        server_end.reply(reply)

    t = threading.Thread(target=answer)
    t.start()
    try:
        client.attach(client_end)
    finally:
        t.join()
    return client, server_end


def make_client(chunk_size, g, robot=None, **cfg):
    robot = robot or FakeRobot()
    reply = HandshakeReply(accepted=True, action_names=robot.joint_names)
    return attach(robot, reply, actions_per_chunk=chunk_size, chunk_size_threshold=g, **cfg)


def run(client, server, ticks):
    """Sent on tick s, taken on s, answered before the client's tick s + latency."""
    for tick in range(ticks):
        server.publish_due(tick)
        client.tick()
        server.take(tick)


def test_sync_mode_idles_exactly_the_latency_and_loses_no_action():
    T, L, cycles = 10, 5, 4
    client, end = make_client(T, 0.0)
    server = ScriptedServer(end, T, L)
    run(client, server, cycles * (T + L))
    s = client.stats
    assert s.chunks_received == cycles
    assert s.actions_executed == cycles * T  # the first action of every chunk is executed
    assert s.idle_frames == cycles * L
    assert [o.timestep for o in server.taken] == [k * T for k in range(cycles)]
    assert all(o.must_go for o in server.taken)


@pytest.mark.parametrize(("g", "latency"), [(0.5, 9), (0.7, 5), (0.9, 1)])
def test_no_idle_after_the_first_chunk_within_the_issue_bound(g, latency):
    """latency < (1 - g)·T/fps ⇒ no idle frame once the first chunk has arrived."""
    T = 20
    client, end = make_client(T, g)
    run(client, ScriptedServer(end, T, latency), 400)
    s = client.stats
    assert s.chunks_received > 10
    assert s.idle_frames_after_first_chunk == 0
    assert s.idle_frames == latency  # only while waiting for the very first chunk


@pytest.mark.parametrize(("g", "latency", "idles"), [
    (0.3, 6, False), (0.3, 7, True),  # the observation leaves with g·T actions left
    (0.7, 10, False), (0.7, 11, True),  # each chunk brings T - latency new actions
    (1.0, 10, False), (1.0, 11, True),
])  # fmt: skip
def test_exact_no_idle_boundary_is_min_of_g_and_half_a_chunk(g, latency, idles):
    T = 20
    client, end = make_client(T, g)
    run(client, ScriptedServer(end, T, latency), 400)
    assert (client.stats.idle_frames_after_first_chunk > 0) == idles


def test_executed_actions_follow_chunk_timesteps():
    """Each chunk holds its own timestep everywhere: what runs at step t must be a blend
    of chunks whose observations were taken at or before t."""
    T = 10
    robot = FakeRobot(FakeRobotConfig(num_joints=1))
    client, end = make_client(T, 0.5, robot=robot, aggregate_fn_name="latest_only")
    run(client, ScriptedServer(end, T, 3), 100)
    executed = [float(c[0]) for c in robot.commands]
    assert executed == sorted(executed)
    assert all(v <= t for t, v in enumerate(executed))


def test_errors_hold_the_robot_rearm_must_go_and_stop_after_n():
    T = 10
    client, end = make_client(T, 0.5, max_consecutive_errors=3)
    server = ScriptedServer(
        end, T, 2, answer=lambda o: ErrorMessage("inference", "boom", o.timestep)
    )
    with pytest.raises(ClientFailure, match="3 in a row"):
        run(client, server, 100)
    assert client.stats.errors == 3
    assert client.stats.actions_executed == 0
    assert len(server.taken) == 3 and all(o.must_go for o in server.taken)


def test_one_good_chunk_resets_the_error_count():
    T, calls = 5, []

    def flaky(obs):
        calls.append(obs)
        if len(calls) % 2:
            return ErrorMessage("inference", "odd call fails", obs.timestep)
        return np.zeros((T, len(obs.state)), np.float32)

    client, end = make_client(T, 0.5, max_consecutive_errors=2)
    run(client, ScriptedServer(end, T, 1, answer=flaky), 60)
    assert client.stats.errors >= 5
    assert client.stats.actions_executed > 0


def test_non_finite_chunks_are_rejected_not_executed():
    T = 5
    robot = FakeRobot(FakeRobotConfig(num_joints=2))

    def bad(obs):
        a = np.ones((T, 2), np.float32)
        a[2, 1] = np.nan
        return a

    client, end = make_client(T, 0.5, robot=robot, max_consecutive_errors=100)
    run(client, ScriptedServer(end, T, 1, answer=bad), 20)
    assert client.stats.rejected_chunks > 0
    assert not robot.commands


def test_max_relative_target_clamps_each_tick():
    T = 5
    robot = FakeRobot(FakeRobotConfig(num_joints=2, max_relative_target=1.5))
    client, end = make_client(T, 0.0, robot=robot)
    run(client, ScriptedServer(end, T, 1, answer=lambda o: np.full((T, 2), 10, np.float32)), 8)
    steps = [c[0] for c in robot.commands]
    assert steps[:4] == pytest.approx([1.5, 3.0, 4.5, 6.0])


def test_server_loss_clears_the_queue_and_holds():
    T = 10
    client, end = make_client(T, 0.5)
    run(client, ScriptedServer(end, T, 1), 5)
    assert len(client.queue) > 0

    class Dead:
        connected = True

        def receive(self, timeout_s):
            raise PeerGone("server pid 123 is gone")

        def close(self):
            pass

    client.transport = Dead()
    before = client.stats.actions_executed
    client.tick()
    client.tick()
    assert client.transport is None and len(client.queue) == 0
    assert client.stats.actions_executed == before
    assert client.stats.server_lost == 1


def vga_robot():
    return FakeRobot(FakeRobotConfig(image_shape=(480, 640, 3)))


def sent_frame_shape(client, server):
    """The shape of the frame one tick hands to the transport."""
    client.tick()
    lease = server.next_observation(5)
    try:
        return lease.observation.images["front"].shape
    finally:
        lease.release()


def test_frames_are_fitted_to_the_policy_shape_before_sending():
    reply = HandshakeReply(True, image_shapes={"front": (96, 128, 3)}, actions_per_chunk=10)
    client, server = attach(vga_robot(), reply)
    assert client.chunk_size == 10  # the server's length: --actions_per_chunk was not given
    assert sent_frame_shape(client, server) == (96, 128, 3)


def test_another_aspect_ratio_is_refused_unless_a_fit_is_chosen():
    reply = HandshakeReply(True, image_shapes={"front": (224, 224, 3)}, actions_per_chunk=10)
    with pytest.raises(HandshakeError, match="image_fit=center_crop or letterbox"):
        attach(vga_robot(), reply)
    client, server = attach(vga_robot(), reply, image_fit="center_crop")
    assert sent_frame_shape(client, server) == (224, 224, 3)


def test_a_camera_the_policy_needs_but_the_robot_lacks_is_refused():
    reply = HandshakeReply(True, image_shapes={"wrist": (96, 128, 3)}, actions_per_chunk=10)
    with pytest.raises(HandshakeError, match=r"needs camera\(s\) \['wrist'\]"):
        attach(vga_robot(), reply)


def test_a_chunk_length_other_than_the_one_asked_for_is_refused():
    with pytest.raises(HandshakeError, match="actions_per_chunk=20"):
        attach(FakeRobot(), HandshakeReply(True, actions_per_chunk=8), actions_per_chunk=20)
