"""What each child is told to run: `ClientSpec` and `ServerSpec`, JSON on its command line.

The plan (`plan.py`) builds them from the merged options, the supervisor fills in the
transport it created, and the worker decodes them: one declared shape from end to end.
Configs travel as their own dataclasses' fields, so a child rebuilds (and re-validates)
exactly what the supervisor validated.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from asyncinf.runtime import records
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
        return json.dumps(records.fields_to_json(self))

    @classmethod
    def from_json(cls, text: str) -> ClientSpec:
        """Raises ConfigError from the configs' own checks, ValueError naming a field that is
        missing, unknown or of the wrong type."""
        return records.from_json(cls, json.loads(text))


@dataclass(frozen=True)
class ServerSpec:
    server: ServerConfig
    # The handshake to load and warm the policy with before READY (the robot's features and
    # the policy asked for); None: load on the first client's handshake.
    preload: Handshake | None
    transport: TransportSpec | None = None  # the supervisor fills it in

    def to_json(self) -> str:
        return json.dumps(records.fields_to_json(self))

    @classmethod
    def from_json(cls, text: str) -> ServerSpec:
        """As `ClientSpec.from_json`."""
        return records.from_json(cls, json.loads(text))
