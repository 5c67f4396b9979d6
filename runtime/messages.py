"""The messages the client and the server exchange, and the schema version they share.

Every transport carries exactly these. Arrays stay numpy arrays here; how they travel is the
transport's business (`asyncinf.transports.codec` for shared memory, protobuf for gRPC).

Timesteps follow DESIGN §3: an observation captured when action `t` is the next to execute
carries `timestep = t`, and the chunk it produces covers `t, t+1, …, t+T-1`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from asyncinf.runtime.errors import ConfigError

# Bump on any change to a message's fields or meaning. Peers refuse a version they do not know.
# 2: Handshake.robot_type; actions_per_chunk 0 = the policy's own. 3: real-time chunking
# (Observation.inference_delay and prev_chunk_left_over, PolicySpec.rtc). 4: observations and
# chunks in the shm codec's fixed header.
SCHEMA_VERSION = 4

NO_RTC = -1  # Observation.inference_delay of a session without real-time chunking

# A robot's or policy's own options (`--robot.*`, `--policy.*`), passed through untouched:
# their keys are declared by that type, the robot's `config_class` and the policy's
# `default_options`, and checked against them before anything starts. Values are what YAML
# flags and JSON carry (a camera's options are a map).
OptionValue = str | int | float | bool | None | list[Any] | dict[str, Any]
Options = dict[str, OptionValue]


@dataclass
class Observation:
    """What the robot saw when action `timestep` was the next to execute."""

    timestep: int
    capture_ns: int  # time.monotonic_ns() when the robot state was read
    state: np.ndarray  # float32 [A], in the order of Handshake.joint_names
    images: dict[str, np.ndarray] = field(default_factory=dict)  # camera -> HxWx3 uint8 RGB
    task: str = ""
    must_go: bool = False  # the server must run it even if it looks like the previous one
    sent_ns: int = 0  # time.monotonic_ns() when handed to the transport (set by the client)
    # Real-time chunking (PolicySpec.rtc set): the client's estimate of how many actions run
    # before this observation's chunk lands (ticks; NO_RTC without RTC), and its queue from
    # `timestep` on, as it will execute it (float32 [K, A], robot units; K = 0 without RTC).
    inference_delay: int = NO_RTC
    prev_chunk_left_over: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))


@dataclass
class ActionChunk:
    """Actions for timesteps `timestep … timestep+T-1`, with the server's own timings."""

    timestep: int
    actions: np.ndarray  # float32 [T, A]
    # The answered observation's sent_ns, echoed: the client computes its round trip on its
    # own clock, which stays valid when the server runs on another host.
    obs_sent_ns: int = 0
    queue_wait_ns: int = 0  # observation available to the server -> server taking it
    preprocess_ns: int = 0
    inference_ns: int = 0
    postprocess_ns: int = 0
    batch_size: int = 1  # observations (of as many sessions) in the model call that made it

    @property
    def compute_ns(self) -> int:
        """Server time from taking the observation to publishing the chunk."""
        return self.preprocess_ns + self.inference_ns + self.postprocess_ns


@dataclass
class PolicySpec:
    """Which policy the client wants, and how many actions per chunk."""

    type: str = "scripted"
    path: str = ""
    device: str = "cpu"
    actions_per_chunk: int = 0  # 0: as many as the policy returns per call
    # The policy type's own: an `Options`, spelled out because transports/codec.py picks
    # each field's reader by its annotation as written.
    options: dict[str, Any] = field(default_factory=dict)
    rtc: RtcSettings | None = None  # None: no real-time chunking (no --rtc)

    def __post_init__(self) -> None:
        if isinstance(self.rtc, dict):  # as it travels in JSON (the supervisor's specs)
            self.rtc = RtcSettings(**self.rtc)

    @classmethod
    def from_flags(cls, flags: dict[str, Any], actions_per_chunk: int | None) -> PolicySpec:
        """From the `--policy.*` map: type, path and device; every other key is an option."""
        options = dict(flags)
        named = {k: str(options.pop(k)) for k in ("type", "path", "device") if k in options}
        return cls(**named, actions_per_chunk=actions_per_chunk or 0, options=options)

    @property
    def key(self) -> tuple[str, str, str]:
        """A policy is loaded once per (type, path, device)."""
        return (self.type, self.path, self.device)


@dataclass(frozen=True)
class RtcSettings:
    """Real-time chunking's knobs (`--rtc.*`), passed to a policy that supports it."""

    execution_horizon: int = 10  # how far into the new chunk the old tail still guides it
    max_guidance_weight: float = 10.0
    prefix_attention_schedule: str = "LINEAR"  # LINEAR, EXP, ONES or ZEROS (LeRobot's names)

    def __post_init__(self) -> None:
        h, g = self.execution_horizon, self.max_guidance_weight
        if not isinstance(h, int) or isinstance(h, bool) or not 1 <= h <= MAX_RTC_HORIZON:
            raise ConfigError(
                f"--rtc.execution_horizon={h!r}: must be an integer from 1 to {MAX_RTC_HORIZON} "
                "(actions of the new chunk the old tail still guides)"
            )
        if not isinstance(g, (int, float)) or isinstance(g, bool) or not 0 < g < math.inf:
            raise ConfigError(f"--rtc.max_guidance_weight={g!r}: must be a number > 0")
        if self.prefix_attention_schedule not in RTC_SCHEDULES:
            raise ConfigError(
                f"--rtc.prefix_attention_schedule={self.prefix_attention_schedule!r}: "
                f"choose one of {list(RTC_SCHEDULES)}"
            )


RTC_SCHEDULES = ("LINEAR", "EXP", "ONES", "ZEROS")
MAX_RTC_HORIZON = 1000  # = limits.MAX_ACTIONS_PER_CHUNK: no chunk is longer


@dataclass
class RtcInput:
    """What one RTC call is told: how many actions run before its chunk lands, and what the
    client will execute meanwhile and after (DESIGN §3 timesteps).

    `prev_chunk_left_over[0]` is the queued action for the observation's own timestep, the one
    the new chunk's first action replaces; in the robot's units. It may be empty (cold start).
    """

    inference_delay: int  # control ticks, >= 0
    prev_chunk_left_over: np.ndarray  # float32 [K, A], K >= 0
    settings: RtcSettings


@dataclass
class Handshake:
    """The client's opening message: who it is and what it wants."""

    joint_names: list[str]
    cameras: dict[str, tuple[int, int, int]]  # camera -> (H, W, 3) as captured
    policy: PolicySpec
    fps: float
    task: str = ""
    robot_type: str = ""  # what LeRobot's policies are told the robot is (e.g. so101_follower)
    schema_version: int = SCHEMA_VERSION


@dataclass
class HandshakeReply:
    """The server's answer: what the policy expects, so the client can adapt before sending."""

    accepted: bool
    image_shapes: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    action_names: list[str] = field(default_factory=list)
    actions_per_chunk: int = 0
    message: str = ""
    schema_version: int = SCHEMA_VERSION


@dataclass
class ErrorMessage:
    """An error the server reports to the client instead of a chunk."""

    code: str  # short machine-readable kind: "inference", "bad_observation", "load", ...
    message: str
    timestep: int = -1  # the observation it answers, or -1
    fatal: bool = False  # the server cannot go on; the client should stop


@dataclass
class Heartbeat:
    seq: int
    sent_ns: int


@dataclass
class ClientReport:
    """What the robot's loop counts, told to the server for its metrics (never used to
    compute anything there): this session's cumulative counters, and the round trips (the
    client's clock) of the chunks since the last report. Optional on the wire: a peer that
    does not know it ignores it."""

    ticks: int = 0
    idle_frames: int = 0
    idle_frames_after_first_chunk: int = 0
    roundtrip_ns: list[int] = field(default_factory=list)


@dataclass
class Goodbye:
    """An orderly end of the session."""

    reason: str = ""


Message = (
    Observation | ActionChunk | Handshake | HandshakeReply | ErrorMessage | Heartbeat | Goodbye
)
