"""From merged options (config file + flags) to what the supervisor runs.

Option names follow LeRobot's async-inference flags: `fps`, `actions_per_chunk`,
`chunk_size_threshold`, `aggregate_fn_name`, `task`, `robot.*`, `policy.*`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from asyncinf.robots.robot import make_robot
from asyncinf.runtime.client import ClientConfig
from asyncinf.runtime.config import build
from asyncinf.runtime.errors import ConfigError
from asyncinf.runtime.messages import PolicySpec
from asyncinf.runtime.server import ServerConfig
from asyncinf.runtime.supervise.supervisor import RunPlan

DEFAULTS: dict[str, Any] = {"robot": {"type": "sim"}, "policy": {"type": "scripted"}}
_POLICY_FIELDS = ("type", "path", "device")


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


def _build_own(cls: type, options: dict[str, Any]) -> Any:
    """Build `cls` from the top-level options that are its fields."""
    return build(cls, {k: v for k, v in options.items() if k in _fields(cls)})


def build_plan(options: dict[str, Any], remote: dict[str, Any] | None = None) -> RunPlan:
    """Validate everything here, in the supervisor, before any process starts."""
    options = merge(DEFAULTS, options)
    robot_opts = dict(options.get("robot") or {})
    robot_type = robot_opts.pop("type")
    robot = make_robot(robot_type, robot_opts)  # built, not connected: names and shapes
    client_cfg = build(
        ClientConfig, {k: v for k, v in options.items() if k in _fields(ClientConfig)}
    )
    server_cfg = build(
        ServerConfig, {k: v for k, v in options.items() if k in _fields(ServerConfig)}
    )
    known = _fields(ClientConfig) | _fields(ServerConfig) | {"robot", "policy", "shm"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"--{unknown[0]} is not an option; known: {sorted(known)}")
    policy_opts = dict(options.get("policy") or {})
    policy = PolicySpec(
        **{k: str(policy_opts.pop(k)) for k in _POLICY_FIELDS if k in policy_opts},
        actions_per_chunk=client_cfg.actions_per_chunk or 0,
        options=policy_opts,
    )
    policy_dict = dataclasses.asdict(policy)
    client = {
        "robot": {"type": robot_type, "options": robot_opts},
        "client": dataclasses.asdict(client_cfg),
        "policy": policy_dict,
    }
    server = None
    if remote is None:
        server = {
            "server": dataclasses.asdict(server_cfg),
            "preload": {
                "joint_names": robot.joint_names,
                "cameras": {k: list(v) for k, v in robot.camera_shapes.items()},
                "policy": policy_dict,
                "fps": client_cfg.fps,
                "task": client_cfg.task,
                "robot_type": robot_type,
            },
        }
    return RunPlan(client=client, server=server, remote=remote, shm=dict(options.get("shm") or {}))
