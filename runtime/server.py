"""The policy server: newest observation in, chunk out, errors reported (DESIGN §7).

One `PolicyServer` serves successive sessions on any `ServerTransport`: accept a handshake,
answer with what the policy expects, then loop on the newest observation until the client
leaves. Policies are loaded once per (type, path, device) and kept across sessions.
An exception in the policy becomes an `ErrorMessage` to the client — never swallowed.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from asyncinf.policies.policy import Policy, make_policy
from asyncinf.runtime.errors import (
    ConfigError,
    PeerClosed,
    PolicyError,
    SegmentCorrupt,
    TransportError,
)
from asyncinf.runtime.messages import (
    SCHEMA_VERSION,
    ActionChunk,
    ErrorMessage,
    Handshake,
    HandshakeReply,
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

    def __post_init__(self) -> None:
        if self.similarity_atol is not None and self.similarity_atol < 0:
            raise ConfigError(f"--similarity_atol={self.similarity_atol}: must be >= 0")
        for name in ("publish_timeout_s", "poll_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"--{name}={getattr(self, name)}: must be > 0 seconds")


class PolicyCache:
    """Loaded, warmed-up policies by (type, path, device)."""

    def __init__(self) -> None:
        self._policies: dict[tuple[str, str, str], tuple[Handshake, Policy]] = {}

    def get(self, hello: Handshake) -> Policy:
        key = hello.policy.key
        if key in self._policies:
            loaded_for, policy = self._policies[key]
            if (loaded_for.joint_names, loaded_for.cameras, loaded_for.policy) != (
                hello.joint_names,
                hello.cameras,
                hello.policy,
            ):
                raise ConfigError(
                    f"policy {key} is loaded for joints {loaded_for.joint_names}, cameras "
                    f"{loaded_for.cameras} and {loaded_for.policy}; this client asks for "
                    f"{hello.joint_names}, {hello.cameras}, {hello.policy}"
                )
            policy.reset()
            return policy
        log.info("loading policy type=%s path=%r device=%s", *key)
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
        self._policies[key] = (hello, policy)
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
        return {
            " ".join(key): {"chunk": policy.chunk_size, **policy.info}
            for key, (_hello, policy) in self._policies.items()
        }


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
            try:
                self._session(transport, policy, should_stop)
            except PeerClosed:
                log.info("client said goodbye")
            except SegmentCorrupt as exc:
                self.sessions_corrupted += 1
                log.error(
                    "session ended (%d so far by corruption): %s", self.sessions_corrupted, exc
                )
            except TransportError as exc:
                log.warning("session ended: %s", exc)

    def _answer(self, transport: ServerTransport, hello: Handshake) -> Policy | None:
        if hello.schema_version != SCHEMA_VERSION:
            transport.reply(
                HandshakeReply(
                    accepted=False,
                    message=f"client speaks schema version {hello.schema_version}, "
                    f"server speaks {SCHEMA_VERSION}",
                )
            )
            return None
        try:
            policy = self.cache.get(hello)
        except (PolicyError, ConfigError) as exc:  # the client is told why, in one line
            log.error("cannot serve this client: %s", exc)
            transport.reply(HandshakeReply(accepted=False, message=str(exc)))
            return None
        except Exception as exc:  # any load failure is reported to the client
            log.exception("cannot serve this client")
            transport.reply(HandshakeReply(accepted=False, message=f"{type(exc).__name__}: {exc}"))
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
        self, transport: ServerTransport, policy: Policy, should_stop: Callable[[], bool]
    ) -> None:
        last_state: np.ndarray | None = None
        while not should_stop():
            self._on_beat()
            lease = transport.next_observation(self.config.poll_s)
            if lease is None:
                continue
            with lease:
                obs = lease.observation
                if self._similar(obs.state, last_state) and not obs.must_go:
                    continue
                last_state = obs.state.copy()
                reply = self._infer(policy, lease)
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
    def _infer(policy: Policy, lease: Lease) -> ActionChunk | ErrorMessage:
        obs = lease.observation
        t0 = lease.taken_ns
        try:
            inputs = policy.preprocess(obs)
            t1 = time.monotonic_ns()
            outputs = policy.predict_chunk(inputs)
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
