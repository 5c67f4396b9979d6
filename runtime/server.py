"""The policy server: newest observation in, chunk out, errors reported (DESIGN §7).

One `PolicyServer` serves successive sessions on any `ServerTransport`: accept a handshake,
answer with what the policy expects, then loop on the newest observation until the client
leaves. Policies are loaded once per set of features they are built for (`built_for`) and
kept across sessions. A handshake beyond the limits, or an observation unlike what its
handshake announced, is refused before the policy sees it (`asyncinf.runtime.limits`).
An exception in the policy becomes an `ErrorMessage` to the client — never swallowed.
"""

from __future__ import annotations

import json
import logging
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from asyncinf.policies.policy import Policy, check_rtc, make_policy
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

    def __post_init__(self) -> None:
        if self.similarity_atol is not None and self.similarity_atol < 0:
            raise ConfigError(f"--similarity_atol={self.similarity_atol}: must be >= 0")
        for name in ("publish_timeout_s", "poll_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"--{name}={getattr(self, name)}: must be > 0 seconds")
        if self.max_policies < 1:
            raise ConfigError(f"--max_policies={self.max_policies}: must be >= 1")


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

    def get(self, hello: Handshake) -> Policy:
        key = built_for(hello)
        policy = self._policies.get(key)
        if policy is not None:
            if key != next(iter(self._policies)):  # keep the pinned one first
                self._policies[key] = self._policies.pop(key)
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

    def info(self) -> dict[str, object]:
        """What is loaded, for the status file: type, path, device and versions."""
        out: dict[str, object] = {}
        for key, policy in self._policies.items():
            name = " ".join(key[:3])
            if name in out:  # the same checkpoint built for another robot
                name = f"{name} ({len(key[5])} joints, cameras {[c for c, _ in key[6]]})"
            out[name] = {"chunk": policy.chunk_size, **policy.info}
        return out


def _name(key: tuple) -> str:
    cameras = [cam for cam, _shape in key[6]]
    return (
        f"type={key[0]} path={key[1]!r} device={key[2]} for {len(key[5])} joints, cameras {cameras}"
    )


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
        self.chunks_published = 0
        self.errors_sent = 0
        self.sessions_corrupted = 0  # ended because the transport found its memory overwritten
        self.in_session = False  # a drain waits while this is True

    def serve(self, transport: ServerTransport, should_stop: Callable[[], bool]) -> None:
        """Serve sessions one after another until `should_stop()`."""
        while not should_stop():
            self._on_beat()
            hello = transport.accept(self.config.poll_s)
            if hello is None:
                continue
            policy = self._answer(transport, hello)
            if policy is None:
                continue
            self.in_session = True
            try:
                self._session(transport, policy, hello, should_stop)
            except PeerClosed:
                log.info("client said goodbye")
            except SegmentCorrupt as exc:
                self.sessions_corrupted += 1
                log.error(
                    "session ended (%d so far by corruption): %s", self.sessions_corrupted, exc
                )
            except TransportError as exc:
                log.warning("session ended: %s", exc)
            finally:
                self.in_session = False

    def _refuse(self, transport: ServerTransport, why: str) -> None:
        """One line in the log, however large the handshake; the client is told the same."""
        why = _shortened(why)
        log.error("handshake refused: %s", why)
        transport.reply(HandshakeReply(accepted=False, message=why))

    def _answer(self, transport: ServerTransport, hello: Handshake) -> Policy | None:
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
            policy = self.cache.get(hello)
            _check_loaded_rtc(hello, policy)
        except (PolicyError, ConfigError) as exc:  # the client is told why, in one line
            self._refuse(transport, str(exc))
            return None
        except Exception as exc:  # any load failure is reported to the client
            log.debug("policy load failed", exc_info=True)
            self._refuse(transport, f"{type(exc).__name__}: {exc}")
            return None
        asked = hello.policy.actions_per_chunk
        transport.reply(
            HandshakeReply(
                accepted=True,
                image_shapes=policy.image_shapes,
                action_names=policy.action_names,
                actions_per_chunk=policy.chunk_size,
                message="" if asked else f"the policy gives {policy.chunk_size} actions per chunk",
            )
        )
        log.info("session started: %d joints, cameras %s", len(hello.joint_names), hello.cameras)
        return policy

    def _session(
        self,
        transport: ServerTransport,
        policy: Policy,
        hello: Handshake,
        should_stop: Callable[[], bool],
    ) -> None:
        last_state: np.ndarray | None = None
        joints = len(hello.joint_names)
        # The client sends the cameras the policy named, fitted to its shapes; all of them, as
        # captured, when it named none (client.py, _plan_fit).
        images = policy.image_shapes or hello.cameras
        rtc = hello.policy.rtc
        refused = 0
        while not should_stop():
            self._on_beat()
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
                    reply = self._infer(policy, lease, rtc)
            if isinstance(reply, ErrorMessage):
                transport.send_error(reply)
                self.errors_sent += 1
                continue
            try:
                transport.publish_chunk(reply, self.config.publish_timeout_s)
            except queue.Full:
                raise TransportError(
                    f"client took no chunk for {self.config.publish_timeout_s} s"
                ) from None
            self.chunks_published += 1

    def _similar(self, state: np.ndarray, last: np.ndarray | None) -> bool:
        atol = self.config.similarity_atol
        return atol is not None and last is not None and bool(np.all(np.abs(state - last) < atol))

    @staticmethod
    def _infer(
        policy: Policy, lease: Lease, rtc: RtcSettings | None = None
    ) -> ActionChunk | ErrorMessage:
        obs = lease.observation
        t0 = lease.taken_ns
        try:
            inputs = policy.preprocess(obs)
            t1 = time.monotonic_ns()
            if rtc is None:
                outputs = policy.predict_chunk(inputs)
            else:
                tail = obs.prev_chunk_left_over
                outputs = policy.predict_chunk(inputs, rtc=RtcInput(obs.inference_delay, tail, rtc))
            t2 = time.monotonic_ns()
            actions = policy.postprocess(outputs)
            t3 = time.monotonic_ns()
        except Exception as exc:  # the client is told; the server goes on
            log.exception("inference failed for timestep %d", obs.timestep)
            return ErrorMessage("inference", f"{type(exc).__name__}: {exc}", obs.timestep)
        return ActionChunk(
            timestep=obs.timestep,
            actions=actions,
            obs_sent_ns=obs.sent_ns,
            queue_wait_ns=lease.queue_wait_ns,
            preprocess_ns=t1 - t0,
            inference_ns=t2 - t1,
            postprocess_ns=t3 - t2,
        )


def _check_loaded_rtc(hello: Handshake, policy: Policy) -> None:
    """A policy of a type that can do RTC, loaded in a version that cannot, is refused too."""
    if hello.policy.rtc is not None and not policy.supports_rtc:
        raise PolicyError(f"--rtc: this {hello.policy.type} policy cannot do real-time chunking")


def _shortened(text: str, limit: int = 300) -> str:
    """A message bounded in size, whatever a client sent: one line of at most `limit`."""
    text = " ".join(text.split())
    return text if len(text) <= limit else f"{text[: limit - 20]}... ({len(text)} chars)"
