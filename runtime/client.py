"""The robot client: the control loop that executes actions at a fixed rate (DESIGN §6).

Each tick, in this order:
1. read the robot state (the observation's capture time);
2. fold in every chunk that arrived (stale actions dropped, overlaps blended), count errors;
3. if `len(queue) / T <= chunk_size_threshold` (T: the chunk length agreed at handshake)
   and no observation is in flight, hand one stamped with the next timestep to the transport
   (never blocks). `must_go` is "the queue is empty", decided afresh every tick, so a failed
   inference cannot disarm it;
4. execute the next action, clamped to `max_relative_target`, or hold and count an idle frame.

Real-time chunking (`PolicySpec.rtc` set): each observation also carries the estimated delay
and the queue from its timestep on (`asyncinf.runtime.rtc`), and a chunk replaces the queue
from the next timestep instead of being blended into it. Every chunk folded in, with RTC or
without, has its seam measured: the largest joint jump between what the old plan would have
executed next and what executes now.

At most one observation is in flight: it is answered by a chunk or an error, or given up
after `resend_after_s` (lost with a dead server). Sending more would only make the server
infer observations whose chunks overlap the one it is computing — and would make g = 0
not synchronous.

The loop never waits on the server: sending is newest-wins, and the time left until the next
tick's deadline is spent waiting on the transport, so a chunk is folded in (and its round
trip stamped) the moment it arrives instead of at the next tick.
When the server is gone the queue is cleared and the robot holds its last commanded position
until a new transport is attached.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from asyncinf.robots.robot import Robot
from asyncinf.runtime.action_queue import ActionQueue
from asyncinf.runtime.aggregate import get_aggregate
from asyncinf.runtime.errors import ConfigError, HandshakeError, SegmentCorrupt, TransportError
from asyncinf.runtime.holds import LINK_DOWN, NO_CHUNK, SERVER_LOST, HeldTime, HoldTracker
from asyncinf.runtime.images import IMAGE_FITS, fit_image, import_cv2, plan_fit
from asyncinf.runtime.messages import (
    ActionChunk,
    ClientReport,
    ErrorMessage,
    Handshake,
    HandshakeReply,
    Observation,
    PolicySpec,
)
from asyncinf.runtime.rate import Rate
from asyncinf.runtime.rtc import DelayEstimator
from asyncinf.runtime.stats import LogHistogram
from asyncinf.runtime.summary import SCHEMA as SUMMARY_SCHEMA
from asyncinf.runtime.summary import RunSummary
from asyncinf.transports.base import ClientTransport
from asyncinf.transports.counters import ClientCounters

log = logging.getLogger(__name__)


@dataclass
class ClientConfig:
    """Control-loop settings; names follow LeRobot's robot client flags."""

    fps: float = 30.0
    # None: as many as the policy returns per call (the built-in policies: 50); a number the
    # policy cannot give is refused at handshake. The threshold uses the length agreed there.
    actions_per_chunk: int | None = None
    chunk_size_threshold: float = 0.5
    aggregate_fn_name: str = "weighted_average"
    task: str = ""
    # Stop (non-zero exit) after this many errors from the server in a row.
    max_consecutive_errors: int = 10
    handshake_timeout_s: float = 120.0
    # An unanswered observation is given up (and a new one may be sent) after this long.
    resend_after_s: float = 2.0
    # Busy-wait this long before each tick instead of sleeping: trades CPU for tick accuracy
    # on machines whose sleeping cores wake late (0 disables).
    spin_ms: float = 0.0
    # How frames are fitted to the shape the policy asked for (runtime/images.py).
    image_fit: str = "refuse"

    def __post_init__(self) -> None:
        if not 0 < self.fps <= 1000:
            raise ConfigError(f"--fps={self.fps}: must be in (0, 1000] control ticks per second")
        if self.actions_per_chunk is not None and self.actions_per_chunk < 1:
            raise ConfigError(f"--actions_per_chunk={self.actions_per_chunk}: must be >= 1")
        if not 0.0 <= self.chunk_size_threshold <= 1.0:
            raise ConfigError(
                f"--chunk_size_threshold={self.chunk_size_threshold}: must be in [0, 1] "
                "(0 = wait for the queue to run dry, 1 = send every tick)"
            )
        if self.max_consecutive_errors < 1:
            raise ConfigError(
                f"--max_consecutive_errors={self.max_consecutive_errors}: must be >= 1"
            )
        if not 0 <= self.spin_ms < 1000 / self.fps:
            raise ConfigError(
                f"--spin_ms={self.spin_ms}: must be >= 0 and shorter than a tick "
                f"({1000 / self.fps:g} ms at --fps={self.fps:g})"
            )
        if self.resend_after_s <= 0:
            raise ConfigError(f"--resend_after_s={self.resend_after_s}: must be > 0 seconds")
        if self.image_fit not in IMAGE_FITS:
            raise ConfigError(f"--image_fit={self.image_fit!r}: choose one of {IMAGE_FITS}")
        get_aggregate(self.aggregate_fn_name)  # raises ConfigError naming the choices


class ClientFailure(RuntimeError):
    """The client gave up (too many server errors, a fatal error); the robot is holding."""


def _units_histogram() -> LogHistogram:
    """For joint units (degrees, 0..100 gripper, radians): 1e-6 … 1e6, 0.5 %."""
    return LogHistogram(lowest=1e-6, highest=1e6)


@dataclass(frozen=True, slots=True)
class Tick:
    """One control tick, as `--metrics` writes it (a JSON line) and the queue plot reads it."""

    t_ns: int  # when the robot was read, monotonic clock
    timestep: int  # the timestep the queue's next action is for
    queue: int  # actions queued after this tick
    idle: bool  # no action to send: the robot held its last command
    period_error_ms: float  # this tick's start against its due time
    seam_jump: float | None  # the latest chunk's seam; None: no chunk folded in since the last
    command_step: float  # the largest joint move commanded this tick


@dataclass
class ClientStats:
    ticks: int = 0
    actions_executed: int = 0
    idle_frames: int = 0
    idle_frames_after_first_chunk: int = 0
    chunks_received: int = 0
    errors: int = 0
    rejected_chunks: int = 0  # NaN/inf or wrong shape: not executed
    observations_sent: int = 0
    server_lost: int = 0
    sessions_corrupted: int = 0  # of server_lost: shared memory found overwritten
    overruns: int = 0
    # Fixed-size histograms, not lists: a run records into them every tick for days.
    period_error_ns: LogHistogram = field(default_factory=LogHistogram)
    roundtrip_ns: LogHistogram = field(default_factory=LogHistogram)
    queue_wait_ns: LogHistogram = field(default_factory=LogHistogram)
    compute_ns: LogHistogram = field(default_factory=LogHistogram)
    preprocess_ns: LogHistogram = field(default_factory=LogHistogram)
    inference_ns: LogHistogram = field(default_factory=LogHistogram)
    postprocess_ns: LogHistogram = field(default_factory=LogHistogram)
    # Round trip less the server's queue wait and compute: the transport's share.
    overhead_ns: LogHistogram = field(default_factory=LogHistogram)
    # Per chunk folded in: max over joints |new plan − old plan| at the first action that
    # executes from it (robot units); per executed tick: max over joints of the command's change.
    seam_jump: LogHistogram = field(default_factory=_units_histogram)
    command_step: LogHistogram = field(default_factory=_units_histogram)
    delay: DelayEstimator = field(default_factory=DelayEstimator)

    def summary(
        self, fps: float, actions_per_chunk: int, transport: ClientCounters, held: HeldTime
    ) -> RunSummary:
        """The end-of-run summary (`--summary-json`); `actions_per_chunk` as agreed at
        handshake (0: never)."""
        return RunSummary(
            schema=SUMMARY_SCHEMA,
            fps=fps,
            actions_per_chunk=actions_per_chunk,
            ticks=self.ticks,
            actions_executed=self.actions_executed,
            idle_frames=self.idle_frames,
            idle_frames_after_first_chunk=self.idle_frames_after_first_chunk,
            chunks_received=self.chunks_received,
            errors=self.errors,
            rejected_chunks=self.rejected_chunks,
            observations_sent=self.observations_sent,
            server_lost=self.server_lost,
            sessions_corrupted=self.sessions_corrupted,
            overruns=self.overruns,
            period_error_ms=self.period_error_ns.summary(1e-6),
            roundtrip_ms=self.roundtrip_ns.summary(1e-6),
            server_queue_wait_ms=self.queue_wait_ns.summary(1e-6),
            server_compute_ms=self.compute_ns.summary(1e-6),
            server_preprocess_ms=self.preprocess_ns.summary(1e-6),
            server_inference_ms=self.inference_ns.summary(1e-6),
            server_postprocess_ms=self.postprocess_ns.summary(1e-6),
            overhead_ms=self.overhead_ns.summary(1e-6),
            seam_jump=self.seam_jump.summary(),
            command_step=self.command_step.summary(),
            inference_delay=self.delay.summary(),
            transport=transport,
            held=held,
        )


def clamp_relative(target: np.ndarray, present: np.ndarray, max_step: float | None) -> np.ndarray:
    """Limit each joint's move per tick to ±max_step around its present position."""
    if max_step is None:
        return target
    return np.clip(target, present - max_step, present + max_step)


class RobotClient:
    """Runs the control loop for one robot over one transport at a time."""

    def __init__(
        self,
        robot: Robot,
        config: ClientConfig,
        policy: PolicySpec,
        on_tick: Callable[[Tick], None] | None = None,
        robot_type: str = "",
    ) -> None:
        self.robot = robot
        self.robot_type = robot_type  # the --robot.type, told to the policy
        self.config = config
        self.policy = policy
        self.stats = ClientStats()
        self.queue = ActionQueue(len(robot.joint_names), get_aggregate(config.aggregate_fn_name))
        self.transport: ClientTransport | None = None
        self.reply: HandshakeReply | None = None
        self.chunk_size = 0  # T, as agreed at handshake
        self._fit: dict[str, tuple[int, int, int] | None] = {}  # camera -> shape to fit to
        self.last_target: np.ndarray | None = None
        self._on_tick = on_tick  # per-tick metrics sink (timestep, queue, idle, period error)
        self._consecutive_errors = 0
        self._stopped = False
        self._inflight_ns = 0  # when the unanswered observation was sent; 0: none
        self._link_up = True  # last seen value of transport.connected
        self._links_lost = 0  # last seen value of transport.disconnects
        self._resend_after_ns = int(config.resend_after_s * 1e9)
        self.holds = HoldTracker(int(1e9 / config.fps))
        # Per observation in flight, by timestep: (delay announced, ticks and idle frames at
        # sending, queue empty at sending), to measure its delay when its chunk lands.
        self._sent: dict[int, tuple[int, int, int, bool]] = {}
        self._seam: float | None = None  # the latest seam, for the next metrics line
        self._step = 0.0  # the latest command change, for the metrics line

    def hello(self) -> Handshake:
        return Handshake(
            joint_names=list(self.robot.joint_names),
            cameras=dict(self.robot.camera_shapes),
            policy=self.policy,
            fps=self.config.fps,
            task=self.config.task,
            robot_type=self.robot_type,
        )

    def attach(self, transport: ClientTransport, timeout_s: float | None = None) -> HandshakeReply:
        """Handshake on a (new) transport. The robot holds while this waits for the server."""
        timeout_s = self.config.handshake_timeout_s if timeout_s is None else timeout_s
        reply = transport.handshake(self.hello(), timeout_s=timeout_s)
        if reply.action_names and len(reply.action_names) != len(self.robot.joint_names):
            raise HandshakeError(
                f"policy produces {len(reply.action_names)} actions "
                f"({reply.action_names}), robot has {len(self.robot.joint_names)} joints"
            )
        asked = self.config.actions_per_chunk
        if reply.actions_per_chunk and asked and reply.actions_per_chunk != asked:
            raise HandshakeError(
                f"asked for --actions_per_chunk={asked}, the server's policy gives "
                f"{reply.actions_per_chunk} per chunk"
            )
        chunk_size = reply.actions_per_chunk or asked  # a server may leave it to the client
        if not chunk_size or chunk_size < 1:
            raise HandshakeError(
                "neither the server nor --actions_per_chunk names the actions per chunk"
            )
        self._fit = self._plan_fit(reply)
        if reply.message:
            log.info("server: %s", reply.message)
        self.transport, self.reply, self.chunk_size = transport, reply, chunk_size
        self.stats.delay.restart()
        self._links_lost = transport.disconnects
        return reply

    def _plan_fit(self, reply: HandshakeReply) -> dict[str, tuple[int, int, int] | None]:
        """Per camera sent, the shape to fit its frames to (None: as captured).

        A reply that names image shapes gets only those cameras; one that names none
        (a policy without images, an echo server) gets every camera as captured.
        """
        captured = self.robot.camera_shapes
        if not reply.image_shapes:
            return dict.fromkeys(captured)
        missing = sorted(set(reply.image_shapes) - set(captured))
        if missing:
            raise HandshakeError(
                f"the policy needs camera(s) {missing}; the robot has {sorted(captured)}"
            )
        rule = self.config.image_fit
        fit = {
            cam: plan_fit(cam, captured[cam], want, rule)
            for cam, want in reply.image_shapes.items()
        }
        if any(fit.values()):
            import_cv2()  # fail at handshake, not on the first frame
        return fit

    def detach(self, reason: str | TransportError) -> None:
        """Forget the transport (the server is gone, or its link is corrupt): clear the
        queue and hold."""
        if self.transport is None:
            return
        log.warning("server lost (%s): holding the robot at its last commanded position", reason)
        self.stats.server_lost += 1
        if isinstance(reason, SegmentCorrupt):
            self.stats.sessions_corrupted += 1
        self.queue.clear()
        transport, self.transport = self.transport, None
        self._inflight_ns = 0
        self._sent.clear()
        transport.close()

    def stop(self) -> None:
        """Ask the loop to finish its current tick and return (safe from a signal handler)."""
        self._stopped = True

    def run(self, should_stop: Callable[[], bool] = bool) -> None:
        """Tick until `stop()` or `should_stop()`; raises ClientFailure."""
        rate = Rate(self.config.fps, sleep=self._idle, spin_s=self.config.spin_ms / 1000)
        period_ns = rate.period_ns
        prev_ns = 0
        while not self._stopped and not should_stop():
            rate.sleep()
            now = rate.last_tick_ns
            if prev_ns:
                self.stats.period_error_ns.record(abs(now - prev_ns - period_ns))
            prev_ns = now
            self.tick()
        self.stats.overruns = rate.overruns

    def _idle(self, timeout_s: float) -> None:
        """Between ticks: wait for a chunk or an error until the deadline, not a plain sleep."""
        if self.transport is None:
            time.sleep(timeout_s)
            return
        try:
            msg = self.transport.receive(timeout_s)
        except TransportError as exc:
            self.detach(exc)
            return
        self._handle(msg)

    def tick(self) -> None:
        stats, queue = self.stats, self.queue
        state = self.robot.read_state()
        capture_ns = time.monotonic_ns()
        if self.transport is not None:
            self._drain()
        if self.transport is not None and self._want_observation(capture_ns):
            self._send(state, capture_ns)
        action = queue.pop()
        stats.ticks += 1
        self.holds.tick(capture_ns, None if action is not None else self._hold_reason())
        if action is None:
            self._step = 0.0  # the robot holds its last command
            stats.idle_frames += 1
            if stats.chunks_received:
                stats.idle_frames_after_first_chunk += 1
            self._report()
        else:
            target = clamp_relative(action, state, self.robot.config.max_relative_target)
            self.robot.send_action(target)
            if self.last_target is not None:
                self._step = float(np.max(np.abs(target - self.last_target)))
                stats.command_step.record(self._step)
            self.last_target = target
            stats.actions_executed += 1
        if self._on_tick is not None:
            self._on_tick(
                Tick(
                    t_ns=capture_ns,
                    timestep=queue.next_timestep,
                    queue=len(queue),
                    idle=action is None,
                    period_error_ms=stats.period_error_ns.last / 1e6,
                    seam_jump=self._seam,
                    command_step=self._step,
                )
            )
            self._seam = None

    def _hold_reason(self) -> str:
        if self.transport is None:
            return SERVER_LOST
        return NO_CHUNK if self._link_up else LINK_DOWN

    def _want_observation(self, now_ns: int) -> bool:
        if len(self.queue) / self.chunk_size > self.config.chunk_size_threshold:
            return False
        return not self._inflight_ns or now_ns - self._inflight_ns > self._resend_after_ns

    def _send(self, state: np.ndarray, capture_ns: int) -> None:
        obs = Observation(
            timestep=self.queue.next_timestep,
            capture_ns=capture_ns,
            state=state,
            images=self._fitted(self.robot.read_images()),
            task=self.config.task,
            must_go=len(self.queue) == 0,
        )
        # A slow first chunk (a server still warming up) can take longer than a chunk lasts;
        # the server accepts at most T, and following more than the whole tail means nothing.
        delay = min(self.stats.delay.estimate(), self.chunk_size)
        if self.policy.rtc is not None:
            obs.inference_delay, obs.prev_chunk_left_over = delay, self.queue.queued()
        try:
            self.transport.send_observation(obs)
        except TransportError as exc:
            self.detach(exc)
            return
        self._inflight_ns = capture_ns
        stats = self.stats
        stats.observations_sent += 1
        if len(self._sent) >= 8:  # answers lost with a server: forget the oldest
            del self._sent[next(iter(self._sent))]
        self._sent[obs.timestep] = (delay, stats.ticks, stats.idle_frames, obs.must_go)

    def _fitted(self, frames: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rule = self.config.image_fit
        return {
            cam: frames[cam] if shape is None else fit_image(frames[cam], shape, rule)
            for cam, shape in self._fit.items()
        }

    def _drain(self) -> None:
        """Fold in everything that arrived, without waiting; then look at the link, so that
        no action queued from a stream that broke before this tick is executed."""
        while self.transport is not None:
            try:
                msg = self.transport.receive(0.0)
            except TransportError as exc:
                self.detach(exc)
                return
            if msg is None:
                break
            self._handle(msg)
        if self.transport is not None:
            self._watch_link(self.transport)

    def _watch_link(self, transport: ClientTransport) -> None:
        lost = transport.disconnects  # read first: it counts up only after `connected` drops
        up = transport.connected
        healed_unseen = up and lost != self._links_lost  # lost and back between two ticks
        if healed_unseen or (self._link_up and not up):
            # A reconnecting transport: the chunks queued came from a session that is gone
            # (through a balancer, maybe a dead replica), and none can arrive meanwhile.
            # Hold, like a lost server.
            log.warning("server link lost: holding the robot while the transport reconnects")
            self.stats.server_lost += 1
            self.queue.clear()
            self._inflight_ns = 0
        if up and not self._link_up:
            log.info("server link restored: resuming")
            self._inflight_ns = 0  # one sent during the outage was dropped: send afresh
        self._link_up, self._links_lost = up, lost

    def _handle(self, msg: ActionChunk | ErrorMessage | None) -> None:
        if isinstance(msg, ActionChunk):
            self._on_chunk(msg)
        elif isinstance(msg, ErrorMessage):
            self._on_error(msg)

    def _on_chunk(self, chunk: ActionChunk) -> None:
        now = time.monotonic_ns()
        self._inflight_ns = 0
        actions = chunk.actions
        joints = len(self.robot.joint_names)
        if (
            actions.ndim != 2
            or actions.shape[1] != joints
            or not 0 < len(actions) <= self.chunk_size
        ):
            self.stats.rejected_chunks += 1
            self._on_error(
                ErrorMessage(
                    "bad_chunk",
                    f"chunk of shape {actions.shape}, expected (1..{self.chunk_size}, {joints})",
                )
            )
            return
        if not np.isfinite(actions).all():
            self.stats.rejected_chunks += 1
            bad = np.argwhere(~np.isfinite(actions))[0]
            self._on_error(
                ErrorMessage(
                    "non_finite",
                    f"chunk for timestep {chunk.timestep} has {actions[tuple(bad)]} at action "
                    f"{bad[0]}, joint {self.robot.joint_names[bad[1]]}: chunk not executed",
                    chunk.timestep,
                )
            )
            return
        self._consecutive_errors = 0
        self._fold(chunk.timestep, actions)
        s = self.stats
        s.chunks_received += 1
        if chunk.obs_sent_ns:
            roundtrip_ns = now - chunk.obs_sent_ns
            s.roundtrip_ns.record(roundtrip_ns)
            s.queue_wait_ns.record(chunk.queue_wait_ns)
            s.compute_ns.record(chunk.compute_ns)
            s.preprocess_ns.record(chunk.preprocess_ns)
            s.inference_ns.record(chunk.inference_ns)
            s.postprocess_ns.record(chunk.postprocess_ns)
            s.overhead_ns.record(roundtrip_ns - chunk.queue_wait_ns - chunk.compute_ns)
            self._report(roundtrip_ns)

    def _report(self, roundtrip_ns: int | None = None) -> None:
        """Tell the server the loop's counters (for its metrics; never blocks)."""
        if self.transport is None:
            return
        s = self.stats
        self.transport.report(
            ClientReport(
                ticks=s.ticks,
                idle_frames=s.idle_frames,
                idle_frames_after_first_chunk=s.idle_frames_after_first_chunk,
                roundtrip_ns=[] if roundtrip_ns is None else [roundtrip_ns],
            )
        )

    def _fold(self, t0: int, actions: np.ndarray) -> None:
        """Into the queue (replacing it from the next timestep with RTC, else merging), with
        the seam measured and the delay counted."""
        queue, stats = self.queue, self.stats
        executed = queue.next_timestep - t0  # the true delay: actions run since its observation
        old = queue.peek()
        old = None if old is None or not 0 <= executed < len(actions) else old.copy()
        if self.policy.rtc is not None:
            queue.replace(t0, actions)
        else:
            queue.merge(t0, actions)
        if old is not None:
            self._seam = float(np.max(np.abs(queue.peek() - old)))
            stats.seam_jump.record(self._seam)
        sent = self._sent.pop(t0, None)
        if sent is not None:
            announced, ticks, idle_frames, standstill = sent
            steady = not standstill and stats.idle_frames == idle_frames
            stats.delay.record(executed, stats.ticks - ticks, announced, steady)

    def _on_error(self, error: ErrorMessage) -> None:
        self._inflight_ns = 0
        self.stats.errors += 1
        self._consecutive_errors += 1
        log.error("server error [%s] (timestep %d): %s", error.code, error.timestep, error.message)
        if error.fatal or self._consecutive_errors >= self.config.max_consecutive_errors:
            why = "fatal" if error.fatal else f"{self._consecutive_errors} in a row"
            raise ClientFailure(f"stopping after server errors ({why}); last: {error.message}")
