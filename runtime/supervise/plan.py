"""From merged options (config file + flags) to the specs the supervisor runs.

Option names follow LeRobot's async-inference flags: `fps`, `actions_per_chunk`,
`chunk_size_threshold`, `aggregate_fn_name`, `task`, `robot.*`, `policy.*`; and `rtc`
(true, or a map of `RtcSettings` fields, which also turns it on).
`build_plan` serves `asyncinf up`; `build_server_spec` serves both its local server and
`asyncinf serve`, so the two accept the same server options and refuse the same unknown ones.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from asyncinf.policies.policy import check_spec
from asyncinf.robots.robot import policy_robot_type
from asyncinf.runtime.client import ClientConfig
from asyncinf.runtime.config import build, group, refuse_unknown
from asyncinf.runtime.errors import ConfigError, PayloadTooLarge
from asyncinf.runtime.limits import MAX_ACTIONS_PER_CHUNK
from asyncinf.runtime.messages import Handshake, Observation, PolicySpec, RtcSettings
from asyncinf.runtime.server import ServerConfig
from asyncinf.runtime.supervise.robot_shape import robot_shape
from asyncinf.runtime.supervise.specs import ClientSpec, RobotSpec, ServerSpec
from asyncinf.transports.codec import FrameWriter
from asyncinf.transports.factory import TransportSpec
from asyncinf.transports.shm.config import ShmConfig
from asyncinf.transports.shm.endpoint import raise_too_large

DEFAULTS: dict[str, Any] = {"robot": {"type": "sim"}, "policy": {"type": "scripted"}}
# Read from the top level by the server for its preload, beside ServerConfig's own fields.
_PRELOAD_OPTIONS = {"fps", "actions_per_chunk", "task"}


@dataclass(frozen=True)
class RunPlan:
    """What to run: the children's specs, minus the transport the supervisor creates."""

    client: ClientSpec
    server: ServerSpec | None  # None: remote server, not ours to start
    remote: TransportSpec | None = None  # the client's transport to a remote server
    shm: dict[str, Any] = field(default_factory=dict)  # ShmConfig options
    # `--robots FILE`: (name, client spec) per robot, one client process each, all served by
    # `server` over a shared-memory session each; () runs `client` alone.
    robots: tuple[tuple[str, ClientSpec], ...] = ()


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Nested-map merge: `override` wins, groups (`robot`, `policy`, …) merge key by key."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def _fields(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


# Top-level options `up` takes and `serve` does not.
_UP_ONLY = _fields(ClientConfig) | {"shm"}


def _own(cls: type, options: dict[str, Any]) -> Any:
    """Build `cls` from the top-level options that are its fields."""
    return build(cls, {k: v for k, v in options.items() if k in _fields(cls)})


def server_options() -> set[str]:
    """The top-level options `serve` takes (and `up --local`'s server)."""
    return _fields(ServerConfig) | _PRELOAD_OPTIONS | {"robot", "policy", "rtc"}


def up_options() -> set[str]:
    """The top-level options `up` takes: the client's, the server's, shared memory's."""
    return server_options() | _UP_ONLY


def robot_spec(options: dict[str, Any]) -> RobotSpec:
    robot = dict(group(options, "robot"))
    if "type" not in robot:
        raise ConfigError("--robot.type is missing (e.g. --robot.type=sim)")
    return RobotSpec(str(robot.pop("type")), robot)


def policy_spec(options: dict[str, Any]) -> PolicySpec:
    spec = PolicySpec.from_flags(group(options, "policy"), options.get("actions_per_chunk"))
    return dataclasses.replace(spec, rtc=rtc_settings(options.get("rtc")))


def rtc_settings(value: Any) -> RtcSettings | None:
    """`rtc` as given: absent or false (off), true (on, LeRobot's defaults), or a map of
    `--rtc.*` settings (on)."""
    if value is None or value is False:
        return None
    if value is True:
        return RtcSettings()
    if isinstance(value, dict):
        return build(RtcSettings, value, prefix="rtc.")
    raise ConfigError(
        f"--rtc={value!r}: expected true, false or a map of --rtc.* settings, e.g. "
        "`rtc: {execution_horizon: 10}` in a file"
    )


def preload_handshake(robot: RobotSpec, policy: PolicySpec, fps: float, task: str) -> Handshake:
    """What the server loads the policy with before READY: the robot's joint and camera
    names and shapes (the robot is built, not connected) and the policy asked for."""
    joints, cameras = robot_shape(robot)
    return Handshake(
        joints,
        cameras,
        policy,
        float(fps),
        task=task,
        robot_type=policy_robot_type(robot.type),
    )


def build_server_spec(
    options: dict[str, Any], *, others: set[str] | None = None, loads_here: bool = True
) -> ServerSpec:
    """The policy server's spec; `others`: top-level options another part reads (the
    client's, under `up`); `loads_here`: False when the policy loads on a remote server.
    Preloads when --policy.* is given, after checking its options."""
    refuse_unknown(options, server_options() | (others or set()))
    server = _own(ServerConfig, options)
    # The preload's fps, actions_per_chunk and task mean what they mean to the client.
    _own(ClientConfig, {k: v for k, v in options.items() if k in _PRELOAD_OPTIONS})
    rtc_settings(options.get("rtc"))  # checked with a preload or without
    preload = None
    if group(options, "policy"):
        check_spec(policy_spec(options), loads_here=loads_here)
        if "type" not in group(options, "robot"):
            raise ConfigError(
                "--policy.* given without --robot.type: the server needs the robot's joint and "
                "camera names to load a policy before a client connects (or omit --policy.*)"
            )
        preload = preload_handshake(
            robot_spec(options),
            policy_spec(options),
            options.get("fps") or ClientConfig.fps,
            str(options.get("task") or ""),
        )
    return ServerSpec(server, preload)


def build_plan(
    options: dict[str, Any],
    remote: TransportSpec | None = None,
    robots: list[tuple[str, RobotSpec]] | None = None,
) -> RunPlan:
    """Validate everything here, in the supervisor, before any process starts. `robots`
    (from `--robots`): several robots, one server serving them all at once."""
    if robots:
        return _fleet_plan(options, robots)
    options = merge(DEFAULTS, options)
    client_cfg = _own(ClientConfig, options)
    # Built for a remote server too: it validates the server options and builds the robot
    # (names and shapes), refusing bad robot options before any process starts.
    server = build_server_spec(options, others=_UP_ONLY, loads_here=remote is None)
    client = ClientSpec(robot_spec(options), client_cfg, policy_spec(options))
    shm = group(options, "shm")
    shm_config = build(ShmConfig, shm, prefix="shm.")
    if remote is None and server.preload is not None:
        _check_observation_fits(shm_config, server.preload, client_cfg.task)
    return RunPlan(
        client=client,
        server=server if remote is None else None,
        remote=remote,
        shm=dict(shm),
    )


def _check_observation_fits(shm: ShmConfig, robot: Handshake, task: str) -> None:
    """An observation of this robot, at its cameras' own sizes, fits a shared-memory slot
    (the client would otherwise fail at its first send)."""
    blank = Observation(
        timestep=2**62,  # the header's integers at their widest
        capture_ns=2**62,
        state=np.zeros(len(robot.joint_names), np.float32),
        images={k: np.zeros(shape, np.uint8) for k, shape in robot.cameras.items()},
        task=task,
        sent_ns=2**62,
    )
    if robot.policy.rtc is not None:  # the tail, at its longest
        blank.inference_delay = 2**62
        blank.prev_chunk_left_over = np.zeros(
            (MAX_ACTIONS_PER_CHUNK, len(robot.joint_names)), np.float32
        )
    try:
        nbytes = FrameWriter(blank).nbytes
        if nbytes > shm.obs_slot_bytes:
            raise_too_large("observation", nbytes, shm.obs_slot_bytes, "obs_slot_bytes")
    except PayloadTooLarge as exc:
        raise ConfigError(f"--shm.obs_slot_mb: {exc}") from None


def _fleet_plan(options: dict[str, Any], robots: list[tuple[str, RobotSpec]]) -> RunPlan:
    """One plan per robot (its own robot options; the rest shared), one server for all."""
    if group(options, "robot"):
        raise ConfigError("--robot.* and --robots both given: name every robot in the file")
    given = options.get("max_sessions")
    if given is not None and given != len(robots):
        raise ConfigError(
            f"--max_sessions={given}: the --robots file names {len(robots)} robots; omit it"
        )
    plans = []
    for name, robot in robots:
        each = {**options, "robot": {"type": robot.type, **robot.options}}
        try:
            plans.append(build_plan({**each, "max_sessions": len(robots)}))
        except ConfigError as exc:
            raise ConfigError(f"robot {name}: {exc}") from None
    first = plans[0]
    return dataclasses.replace(
        first, robots=tuple((name, p.client) for (name, _), p in zip(robots, plans, strict=True))
    )
