"""The policy server: newest observation in, chunk out, errors reported (DESIGN §7).

One `PolicyServer` serves successive sessions on any `ServerTransport`: accept a handshake,
answer with what the policy expects, then loop on the newest observation until the client
leaves. Policies are loaded once per set of features they are built for (`built_for`) and
kept across sessions. A handshake beyond the limits, or an observation unlike what its
handshake announced, is refused before the policy sees it (`asyncinf.runtime.limits`).
An exception in the policy becomes an `ErrorMessage` to the client — never swallowed.

Several sessions at once (`--max_sessions`): a transport with several lanes
(`ServerTransport.lanes()`) gets one thread per lane, each running the same per-session
loop with its own handshake, similarity state and errors; the sessions on one policy share
its `Batcher`, which runs the observations waiting at once in one batch
(`asyncinf.runtime.batching`). A lane whose client dies, stalls or sends garbage ends only
its own session. With one lane the loop runs in the caller's thread, as it always did.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from asyncinf.policies.policy import Policy, check_rtc, make_policy
from asyncinf.runtime import records
from asyncinf.runtime.batching import BatchConfig, Batcher
from asyncinf.runtime.config import build
from asyncinf.runtime.errors import (
    ConfigError,
    PeerClosed,
    PolicyError,
    SegmentCorrupt,
    TransportError,
)
from asyncinf.runtime.limits import check_handshake, check_observation
from asyncinf.runtime.messages import (
    SCHEMA_VERSION,
    ActionChunk,
    ErrorMessage,
    Handshake,
    HandshakeReply,
    RtcInput,
    RtcSettings,
)
from asyncinf.runtime.stats import LogHistogram
from asyncinf.transports.base import Lease, ServerTransport

log = logging.getLogger(__name__)


@dataclass
class ServerConfig:
    # Skip an observation whose joints all moved less than this since the last one inferred
    # (in the robot's joint units, e.g. degrees); None (default) infers every observation.
    # must_go observations always run.
    similarity_atol: float | None = None
    publish_timeout_s: float = 2.0
    poll_s: float = 0.2  # how often idle waits wake to check for stop and report liveness
    # Policies kept loaded for clients with other robots or options (the first one stays).
    max_policies: int = 2
    # Sessions served at once (one more client is refused as "server busy", retryably).
    max_sessions: int = 1
    batch: BatchConfig = field(default_factory=BatchConfig)  # --batch.*

    def __post_init__(self) -> None:
        if self.similarity_atol is not None and self.similarity_atol < 0:
            raise ConfigError(f"--similarity_atol={self.similarity_atol}: must be >= 0")
        for name in ("publish_timeout_s", "poll_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"--{name}={getattr(self, name)}: must be > 0 seconds")
        if self.max_policies < 1:
            raise ConfigError(f"--max_policies={self.max_policies}: must be >= 1")
        if isinstance(self.max_sessions, bool) or self.max_sessions < 1:
            raise ConfigError(f"--max_sessions={self.max_sessions}: must be >= 1")
        if isinstance(self.batch, dict):  # from a file, a flag group or a child's spec
            self.batch = build(BatchConfig, self.batch, prefix="batch.")
        if not isinstance(self.batch, BatchConfig):
            raise ConfigError(f"--batch={self.batch!r}: expected a map of --batch.* options")


def built_for(hello: Handshake) -> tuple:
    """What a policy is built for: everything of the handshake that `make_policy` reads."""
    spec = hello.policy
    return (
        spec.type,
        spec.path,
        spec.device,
        spec.actions_per_chunk,
        json.dumps(spec.options, sort_keys=True, default=str),
        tuple(hello.joint_names),
        tuple(sorted((cam, tuple(shape)) for cam, shape in hello.cameras.items())),
        hello.robot_type,
        spec.rtc,  # LeRobot's RTC processor is set up at load
    )


_FIELDS = (
    "type",
    "path",
    "device",
    "actions_per_chunk",
    "options",
    "joints",
    "cameras",
    "robot type",
    "rtc",
)


class PolicyCache:
    """Loaded, warmed-up policies by what they were built for (`built_for`).

    A client whose robot or options differ gets a policy built for it, not one built for
    another client. At most `max_policies` stay loaded: the first one loaded (the preloaded
    one, what the server was started for) always, the others least recently used first.
    """

    def __init__(self, max_policies: int = 2) -> None:
        self.max_policies = max_policies
        self._policies: dict[tuple, Policy] = {}  # in order of use, the first one pinned
        # Sessions' threads ask at once; one loads while the others wait (a load is rare).
        self._lock = threading.RLock()

    def get(self, hello: Handshake, reset: bool = True) -> Policy:
        """The policy built for `hello`, loaded now if need be; `reset`: forget its state
        (False while another session uses it)."""
        with self._lock:
            return self._get(hello, reset)

    def _get(self, hello: Handshake, reset: bool) -> Policy:
        key = built_for(hello)
        policy = self._policies.get(key)
        if policy is not None:
            if key != next(iter(self._policies)):  # keep the pinned one first
                self._policies[key] = self._policies.pop(key)
            if reset:
                policy.reset()
            return policy
        if len(self._policies) >= self.max_policies:
            if self.max_policies == 1:
                first = next(iter(self._policies))
                differ = [f for f, a, b in zip(_FIELDS, first, key, strict=True) if a != b]
                raise ConfigError(
                    f"this server keeps --max_policies=1 policy, built for other "
                    f"{', '.join(differ)} than this client's"
                )
            evicted = list(self._policies)[1]  # the least recently used after the pinned one
            log.info("unloading policy %s: --max_policies=%d", _name(evicted), self.max_policies)
            del self._policies[evicted]
        log.info("loading policy %s", _name(key))
        t0 = time.monotonic()
        policy = make_policy(hello.policy, hello)
        log.info("warming up with a real inference")
        policy.warmup()
        log.info(
            "policy loaded and warmed up in %.2f s: %d actions per chunk%s",
            time.monotonic() - t0,
            policy.chunk_size,
            "".join(f", {k} {v}" for k, v in policy.info.items()),
        )
        self._policies[key] = policy
        return policy

    def preload(self, hello: Handshake) -> str | None:
        """Load at start; None, or the one-line reason it failed (traceback only with -v).

        A bad `--policy.*` value is raised as the ConfigError it is: a configuration error
        (exit 78) to the caller, where a policy that failed to load is exit 3."""
        try:
            self.get(hello)
        except ConfigError:
            raise
        except PolicyError as exc:
            return str(exc)
        except Exception as exc:  # any other failure to load is a boot error too, told as such
            log.debug("policy load failed", exc_info=True)
            return f"{type(exc).__name__}: {exc}"
        return None

    def info(self) -> dict[str, LoadedPolicy]:
        """What is loaded, for the status file, by "type path device"."""
        out: dict[str, LoadedPolicy] = {}
        with self._lock:
            loaded = list(self._policies.items())
        for key, policy in loaded:
            name = " ".join(key[:3])
            if name in out:  # the same checkpoint built for another robot
                name = f"{name} ({len(key[5])} joints, cameras {[c for c, _ in key[6]]})"
            versions = {k: str(v) for k, v in policy.info.items()}
            out[name] = LoadedPolicy(policy.chunk_size, versions)
        return out


@dataclass(frozen=True)
class LoadedPolicy:
    """A policy a server holds: its chunk length and the versions worth showing beside it
    (`Policy.info`: LeRobot's, torch's). Its JSON form is flat, as the status file shows it:
    `{"chunk": 50, "lerobot": "0.4.4", "torch": "2.14.1"}`."""

    chunk: int
    versions: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, int | str]:
        return {"chunk": self.chunk, **self.versions}

    @classmethod
    def from_json(cls, data: Any) -> LoadedPolicy:
        """Raises ValueError naming the field that is missing or not of its type."""
        if isinstance(data, dict):
            versions = {k: v for k, v in data.items() if k != "chunk"}
            data = {"chunk": data.get("chunk"), "versions": versions}
        return records.from_json(cls, data)


def _name(key: tuple) -> str:
    cameras = [cam for cam, _shape in key[6]]
    return (
        f"type={key[0]} path={key[1]!r} device={key[2]} for {len(key[5])} joints, cameras {cameras}"
    )


@dataclass
class SessionStats:
    """One session's figures, for the server's summary: per robot, not per server."""

    label: str
    chunks: int = 0
    errors: int = 0
    queue_wait_ns: LogHistogram = field(default_factory=LogHistogram)  # lease + batch wait
    # The model's time for the batch this session's observation ran in, divided by the batch
    # size: what one robot costs the server.
    inference_share_ns: LogHistogram = field(default_factory=LogHistogram)
    batch_sizes: dict[int, int] = field(default_factory=dict)

    def summary(self) -> dict[str, object]:
        return {
            "session": self.label,
            "chunks": self.chunks,
            "errors": self.errors,
            "queue_wait_ms": asdict(self.queue_wait_ns.summary(1e-6)),
            "inference_share_ms": asdict(self.inference_share_ns.summary(1e-6)),
            "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())},
        }


# A lane that has not come round its loop for this long is hung (its policy call, most
# likely): the server stops beating so that the supervisor's hang watch finds it. Longer
# than any bounded wait of a lane (publish_timeout_s) so a stalled client never counts.
LANE_SILENT_S = 5.0


class PolicyServer:
    def __init__(
        self,
        cache: PolicyCache,
        config: ServerConfig | None = None,
        on_beat: Callable[[], None] = lambda: None,
    ) -> None:
        self.cache = cache
        self.config = config or ServerConfig()
        self._on_beat = on_beat  # called from the loop itself, so a hung loop stops beating
        self._lock = threading.Lock()  # the counters below, from the lanes' threads
        # Held while a session is admitted (its policy found or loaded, its batcher joined):
        # never while serving, so a policy loading for one robot stalls no other.
        self._admitting = threading.Lock()
        self.chunks_published = 0
        self.errors_sent = 0
        self.sessions_corrupted = 0  # ended because the transport found its memory overwritten
        self.sessions_active = 0
        self._batchers: dict[int, Batcher] = {}  # id(policy) -> its batcher
        self.sessions: list[SessionStats] = []  # every session served, in order of start

    @property
    def in_session(self) -> bool:
        """A drain waits while this is True."""
        return self.sessions_active > 0

    def serve(self, transport: ServerTransport, should_stop: Callable[[], bool]) -> None:
        """Serve sessions until `should_stop()`: one after another on each of the transport's
        lanes, the lanes at once (a thread each; `should_stop` is asked from here only)."""
        lanes = transport.lanes()
        if len(lanes) == 1:
            self._serve_lane(lanes[0], should_stop, self._on_beat)
            return
        stop = threading.Event()
        beats = [time.monotonic()] * len(lanes)
        failures: list[BaseException] = []
        ended = threading.Condition()
        running = [len(lanes)]

        def run(index: int, lane: ServerTransport) -> None:
            def beat() -> None:
                beats[index] = time.monotonic()

            try:
                self._serve_lane(lane, stop.is_set, beat)
            except BaseException as exc:  # noqa: BLE001  (re-raised below, in the caller's thread)
                failures.append(exc)
                stop.set()
            finally:
                with ended:
                    running[0] -= 1
                    ended.notify_all()

        for i, lane in enumerate(lanes):
            threading.Thread(
                target=run, args=(i, lane), name=f"asyncinf-lane-{i}", daemon=True
            ).start()
        silent_s = max(LANE_SILENT_S, 2 * self.config.publish_timeout_s)
        while running[0]:
            if not stop.is_set() and should_stop():
                stop.set()
            if time.monotonic() - min(beats) < silent_s:
                self._on_beat()
            with ended:
                ended.wait_for(lambda: not running[0], self.config.poll_s / 2)
        if failures:
            raise failures[0]

    def _serve_lane(
        self, transport: ServerTransport, should_stop: Callable[[], bool], beat: Callable[[], None]
    ) -> None:
        while not should_stop():
            beat()
            hello = transport.accept(self.config.poll_s)
            if hello is None:
                continue
            admitted = self._answer(transport, hello)
            if admitted is None:
                continue
            policy, batcher, key = admitted
            stats = SessionStats(_label(transport, hello, len(self.sessions)))
            with self._lock:
                self.sessions_active += 1
                self.sessions.append(stats)
            try:
                self._session(
                    transport,
                    policy,
                    hello,
                    should_stop,
                    beat=beat,
                    batcher=batcher,
                    key=key,
                    stats=stats,
                )
            except PeerClosed:
                log.info("client said goodbye (%s)", stats.label)
            except SegmentCorrupt as exc:
                with self._lock:
                    self.sessions_corrupted += 1
                log.error(
                    "session ended (%d so far by corruption): %s", self.sessions_corrupted, exc
                )
            except TransportError as exc:
                log.warning("session ended (%s): %s", stats.label, exc)
            finally:
                batcher.leave(key)  # and the session's state with it
                with self._lock:
                    self.sessions_active -= 1
                if self.config.max_sessions > 1:
                    log.info("session %s: %s", stats.label, json.dumps(stats.summary()))

    def _batcher(self, policy: Policy) -> Batcher:
        """The policy's batcher (made on first use); call with `_lock` held."""
        batcher = self._batchers.get(id(policy))
        if batcher is None or batcher.policy is not policy:
            batch = self.config.batch
            size = batch.max_size or self.config.max_sessions
            if policy.spec.rtc is not None:  # each RTC call has its session's tail: one by one
                size = 1
            batcher = Batcher(policy, size, batch.max_wait_ms)
            self._batchers[id(policy)] = batcher
        return batcher

    def batch_sizes(self) -> dict[str, int]:
        """Batches formed so far by size, over every policy: for the status file."""
        with self._lock:
            batchers = list(self._batchers.values())
        out: dict[str, int] = {}
        for batcher in batchers:
            for size, count in batcher.summary()["batch_sizes"].items():
                out[size] = out.get(size, 0) + count
        return out

    def _refuse(self, transport: ServerTransport, why: str) -> None:
        """One line in the log, however large the handshake; the client is told the same."""
        why = _shortened(why)
        log.error("handshake refused: %s", why)
        transport.reply(HandshakeReply(accepted=False, message=why))

    def _admit(self, hello: Handshake) -> tuple[Policy, Batcher, int]:
        """The session's policy (found or loaded), its batcher, and its key there (joined).
        A policy that keeps state per robot gets this session's own, fresh (`Batcher`)."""
        with self._admitting:  # against a second session taking the same policy meanwhile
            policy = self.cache.get(hello, reset=False)
            _check_loaded_rtc(hello, policy)
            with self._lock:
                batcher = self._batcher(policy)
            if not batcher.sessions:
                policy.reset()  # a new episode; never under another session's feet
            key = batcher.join()  # counted at once: the next handshake sees this session
        return policy, batcher, key

    def _answer(
        self, transport: ServerTransport, hello: Handshake
    ) -> tuple[Policy, Batcher, int] | None:
        """An accepted session's policy, batcher and key there (`_admit`), or None: refused."""
        if hello.schema_version != SCHEMA_VERSION:
            self._refuse(
                transport,
                f"client speaks schema version {hello.schema_version}, "
                f"server speaks {SCHEMA_VERSION}",
            )
            return None
        try:
            check_handshake(hello)
            check_rtc(hello.policy)
            policy, batcher, key = self._admit(hello)
        except (PolicyError, ConfigError) as exc:  # the client is told why, in one line
            self._refuse(transport, str(exc))
            return None
        except Exception as exc:  # any load failure is reported to the client
            log.debug("policy load failed", exc_info=True)
            self._refuse(transport, f"{type(exc).__name__}: {exc}")
            return None
        asked = hello.policy.actions_per_chunk
        try:
            transport.reply(
                HandshakeReply(
                    accepted=True,
                    image_shapes=policy.image_shapes,
                    action_names=policy.action_names,
                    actions_per_chunk=policy.chunk_size,
                    message=""
                    if asked
                    else f"the policy gives {policy.chunk_size} actions per chunk",
                )
            )
        except BaseException:
            batcher.leave(key)
            raise
        log.info("session started: %d joints, cameras %s", len(hello.joint_names), hello.cameras)
        return policy, batcher, key

    def _session(
        self,
        transport: ServerTransport,
        policy: Policy,
        hello: Handshake,
        should_stop: Callable[[], bool],
        *,
        beat: Callable[[], None],
        batcher: Batcher,
        key: int,
        stats: SessionStats,
    ) -> None:
        last_state: np.ndarray | None = None
        joints = len(hello.joint_names)
        # The client sends the cameras the policy named, fitted to its shapes; all of them, as
        # captured, when it named none (client.py, _plan_fit).
        images = policy.image_shapes or hello.cameras
        rtc = hello.policy.rtc
        refused = 0
        while not should_stop():
            beat()
            lease = transport.next_observation(self.config.poll_s)
            if lease is None:
                continue
            with lease:
                obs = lease.observation
                why = check_observation(obs, joints, images, policy.chunk_size if rtc else None)
                if why is not None:
                    refused += 1
                    if refused == 1:  # the client counts every one; the log says it once
                        log.warning("refusing observations of this session: %s", why)
                    reply: ActionChunk | ErrorMessage = ErrorMessage(
                        "bad_observation", why, obs.timestep
                    )
                elif self._similar(obs.state, last_state) and not obs.must_go:
                    continue
                else:
                    last_state = obs.state.copy()
                    reply = self._infer(policy, lease, batcher, stats, key=key, rtc=rtc)
            if isinstance(reply, ErrorMessage):
                transport.send_error(reply)
                stats.errors += 1
                with self._lock:
                    self.errors_sent += 1
                continue
            try:
                transport.publish_chunk(reply, self.config.publish_timeout_s)
            except queue.Full:
                raise TransportError(
                    f"client took no chunk for {self.config.publish_timeout_s} s"
                ) from None
            stats.chunks += 1
            with self._lock:
                self.chunks_published += 1

    def _similar(self, state: np.ndarray, last: np.ndarray | None) -> bool:
        atol = self.config.similarity_atol
        return atol is not None and last is not None and bool(np.all(np.abs(state - last) < atol))

    @staticmethod
    def _infer(
        policy: Policy,
        lease: Lease,
        batcher: Batcher,
        stats: SessionStats,
        *,
        key: int,  # the session's, at its batcher
        rtc: RtcSettings | None = None,
    ) -> ActionChunk | ErrorMessage:
        obs = lease.observation
        t0 = lease.taken_ns
        try:
            inputs = policy.preprocess(obs)
            t1 = time.monotonic_ns()
            told = (
                None
                if rtc is None
                else RtcInput(obs.inference_delay, obs.prev_chunk_left_over, rtc)
            )
            # This observation alone, or in a batch; with this session's state loaded.
            done = batcher.predict(inputs, told, key)
            t2 = time.monotonic_ns()
            actions = policy.postprocess(done.outputs)
            t3 = time.monotonic_ns()
        except Exception as exc:  # the client is told; the server goes on
            log.exception("inference failed for timestep %d", obs.timestep)
            return ErrorMessage("inference", f"{type(exc).__name__}: {exc}", obs.timestep)
        # Waiting for company or for the batch before counts as queue wait, not inference.
        queue_wait_ns = lease.queue_wait_ns + done.wait_ns
        stats.queue_wait_ns.record(queue_wait_ns)
        stats.inference_share_ns.record(done.inference_ns / done.batch_size)
        stats.batch_sizes[done.batch_size] = stats.batch_sizes.get(done.batch_size, 0) + 1
        return ActionChunk(
            timestep=obs.timestep,
            actions=actions,
            obs_sent_ns=obs.sent_ns,
            queue_wait_ns=queue_wait_ns,
            preprocess_ns=t1 - t0,
            inference_ns=t2 - t1 - done.wait_ns,
            postprocess_ns=t3 - t2,
            batch_size=done.batch_size,
        )


def _check_loaded_rtc(hello: Handshake, policy: Policy) -> None:
    """A policy of a type that can do RTC, loaded in a version that cannot, is refused too."""
    if hello.policy.rtc is not None and not policy.supports_rtc:
        raise PolicyError(f"--rtc: this {hello.policy.type} policy cannot do real-time chunking")


def _label(transport: ServerTransport, hello: Handshake, index: int) -> str:
    """A name for the session in the summary: the robot's, where the transport knows it."""
    robot = hello.robot_type or "robot"
    return transport.session_label or f"session {index} ({robot})"


def _shortened(text: str, limit: int = 300) -> str:
    """A message bounded in size, whatever a client sent: one line of at most `limit`."""
    text = " ".join(text.split())
    return text if len(text) <= limit else f"{text[: limit - 20]}... ({len(text)} chars)"
