"""What each child is told to run: `ClientSpec` and `ServerSpec`, JSON on its command line.

The plan (`plan.py`) builds them from the merged options, the supervisor fills in the
transport it created, and the worker decodes them: one declared shape from end to end.
Configs travel as their own dataclasses' fields, so a child rebuilds (and re-validates)
exactly what the supervisor validated.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from asyncinf.runtime.client import ClientConfig
from asyncinf.runtime.messages import Handshake, Options, PolicySpec
from asyncinf.runtime.server import ServerConfig
from asyncinf.runtime.supervise.metrics_file import DEFAULT_MAX_MB
from asyncinf.transports.factory import TransportSpec


@dataclass(frozen=True)
class RobotSpec:
    type: str  # --robot.type
    options: Options = field(default_factory=dict)  # the rest of --robot.*, the type's own


@dataclass(frozen=True)
class ClientSpec:
    robot: RobotSpec
    client: ClientConfig
    policy: PolicySpec
    transport: TransportSpec | None = None  # the supervisor fills it in
    metrics_path: str | None = None  # one JSON line per control tick
    # A busy server (another session) is asked again for this long (the supervisor sets its
    # --start-timeout) before the client gives up with ExitCode.SERVER_BUSY.
    busy_retry_s: float = 0.0
    metrics_max_mb: float = DEFAULT_MAX_MB  # the file and its rotated predecessor together

    def to_json(self) -> str:
        return json.dumps(
            {
                "robot": dataclasses.asdict(self.robot),
                "client": dataclasses.asdict(self.client),
                "policy": dataclasses.asdict(self.policy),
                "transport": _transport_json(self.transport),
                "metrics_path": self.metrics_path,
                "busy_retry_s": self.busy_retry_s,
                "metrics_max_mb": self.metrics_max_mb,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> ClientSpec:
        """Raises ConfigError from the configs' own checks, KeyError/TypeError on a bad shape."""
        d = json.loads(text)
        return cls(
            robot=RobotSpec(**d["robot"]),
            client=ClientConfig(**d["client"]),
            policy=PolicySpec(**d["policy"]),
            transport=_transport(d["transport"]),
            metrics_path=d["metrics_path"],
            busy_retry_s=float(d.get("busy_retry_s", 0.0)),
            metrics_max_mb=d["metrics_max_mb"],
        )


@dataclass(frozen=True)
class ServerSpec:
    server: ServerConfig
    # The handshake to load and warm the policy with before READY (the robot's features and
    # the policy asked for); None: load on the first client's handshake.
    preload: Handshake | None
    transport: TransportSpec | None = None  # the supervisor fills it in

    def to_json(self) -> str:
        return json.dumps(
            {
                "server": dataclasses.asdict(self.server),
                "preload": None if self.preload is None else dataclasses.asdict(self.preload),
                "transport": _transport_json(self.transport),
            }
        )

    @classmethod
    def from_json(cls, text: str) -> ServerSpec:
        d = json.loads(text)
        preload = d["preload"]
        if preload is not None:
            preload = Handshake(
                **{
                    **preload,
                    "policy": PolicySpec(**preload["policy"]),
                    "cameras": {k: tuple(v) for k, v in preload["cameras"].items()},
                }
            )
        return cls(
            server=ServerConfig(**d["server"]),
            preload=preload,
            transport=_transport(d["transport"]),
        )


def _transport_json(spec: TransportSpec | None) -> dict[str, Any] | None:
    return None if spec is None else spec.to_json()


def _transport(data: dict[str, Any] | None) -> TransportSpec | None:
    return None if data is None else TransportSpec.from_json(data)
