"""From merged options (config file + flags) to the specs the supervisor runs.

Option names follow LeRobot's async-inference flags: `fps`, `actions_per_chunk`,
`chunk_size_threshold`, `aggregate_fn_name`, `task`, `robot.*`, `policy.*`.
`build_plan` serves `asyncinf up`; `build_server_spec` serves both its local server and
`asyncinf serve`, so the two accept the same server options and refuse the same unknown ones.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from asyncinf.robots.robot import make_robot, policy_robot_type
from asyncinf.runtime.client import ClientConfig
from asyncinf.runtime.config import build, refuse_unknown
from asyncinf.runtime.errors import ConfigError
from asyncinf.runtime.messages import Handshake, PolicySpec
from asyncinf.runtime.server import ServerConfig
from asyncinf.runtime.supervise.specs import ClientSpec, RobotSpec, ServerSpec
from asyncinf.transports.factory import TransportSpec

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


def _own(cls: type, options: dict[str, Any]) -> Any:
    """Build `cls` from the top-level options that are its fields."""
    return build(cls, {k: v for k, v in options.items() if k in _fields(cls)})


def server_options() -> set[str]:
    """The top-level options `serve` takes (and `up --local`'s server)."""
    return _fields(ServerConfig) | _PRELOAD_OPTIONS | {"robot", "policy"}


def up_options() -> set[str]:
    """The top-level options `up` takes: the client's, the server's, shared memory's."""
    return server_options() | _fields(ClientConfig) | {"shm"}


def robot_spec(options: dict[str, Any]) -> RobotSpec:
    robot = dict(options.get("robot") or {})
    if "type" not in robot:
        raise ConfigError("--robot.type is missing (e.g. --robot.type=sim)")
    return RobotSpec(str(robot.pop("type")), robot)


def policy_spec(options: dict[str, Any]) -> PolicySpec:
    return PolicySpec.from_flags(options.get("policy") or {}, options.get("actions_per_chunk"))


def preload_handshake(robot: RobotSpec, policy: PolicySpec, fps: float, task: str) -> Handshake:
    """What the server loads the policy with before READY: the robot's joint and camera
    names and shapes (the robot is built, not connected) and the policy asked for."""
    built = make_robot(robot.type, robot.options)
    return Handshake(
        list(built.joint_names),
        dict(built.camera_shapes),
        policy,
        float(fps),
        task=task,
        robot_type=policy_robot_type(robot.type),
    )


def build_server_spec(options: dict[str, Any], *, others: set[str] | None = None) -> ServerSpec:
    """The policy server's spec; `others`: top-level options another part reads (the
    client's, under `up`). Preloads when --policy.* is given."""
    refuse_unknown(options, server_options() | (others or set()))
    server = _own(ServerConfig, options)
    preload = None
    if options.get("policy"):
        if "type" not in (options.get("robot") or {}):
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


def build_plan(options: dict[str, Any], remote: TransportSpec | None = None) -> RunPlan:
    """Validate everything here, in the supervisor, before any process starts."""
    options = merge(DEFAULTS, options)
    client_cfg = _own(ClientConfig, options)
    # Built for a remote server too: it validates the server options and builds the robot
    # (names and shapes), refusing bad robot options before any process starts.
    server = build_server_spec(options, others=_fields(ClientConfig) | {"shm"})
    client = ClientSpec(robot_spec(options), client_cfg, policy_spec(options))
    return RunPlan(
        client=client,
        server=server if remote is None else None,
        remote=remote,
        shm=dict(options.get("shm") or {}),
    )
