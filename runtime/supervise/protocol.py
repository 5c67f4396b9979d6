"""What the supervisor and its children say to each other, in one place.

A child runs as `python -m asyncinf.runtime.supervise.worker ROLE SPEC_JSON --events-fd N
--log-level LEVEL` (`worker_argv`). Two pipes, JSON lines both ways, never pickle:

- the child's stdin carries commands: `{"cmd": "stop"}`, `{"cmd": "detach"}` (the server is
  gone: hold), `{"cmd": "attach", "transport": {...}, "timeout_s": S}` (a new server or
  shared-memory generation to attach to, the handshake bounded by `timeout_s`);
  end-of-file means the supervisor is gone, which stops the child safely;
- the fd `--events-fd` carries events, `{"event": KIND, "pid": PID, **fields}`, one class per
  (role, kind) below; `beat` is sent from the child's main loop itself, so a hung loop stops
  beating.

The log level travels on the command line rather than in the environment: `asyncinf -v up`
sets the supervisor's, and the children log at the same level.
"""

from __future__ import annotations

import enum
import json
import sys
from dataclasses import dataclass, field
from typing import Any

from asyncinf.runtime import records
from asyncinf.runtime.server import LoadedPolicy
from asyncinf.runtime.summary import RunSummary
from asyncinf.transports.factory import TransportSpec

WORKER_MODULE = "asyncinf.runtime.supervise.worker"


class Role(str, enum.Enum):
    CLIENT = "client"
    SERVER = "server"


class Command(str, enum.Enum):
    STOP = "stop"
    DETACH = "detach"  # the server is gone: hold the robot until told to attach
    ATTACH = "attach"  # carries the new server's transport


def worker_argv(role: Role, spec_json: str, events_fd: int, log_level: str) -> list[str]:
    return [
        sys.executable, "-m", WORKER_MODULE, role.value, spec_json,
        "--events-fd", str(events_fd), "--log-level", log_level,
    ]  # fmt: skip


def encode_command(
    cmd: Command, transport: TransportSpec | None = None, timeout_s: float | None = None
) -> bytes:
    body: dict[str, Any] = {"cmd": cmd.value}
    if transport is not None:
        body["transport"] = transport.to_json()
    if timeout_s is not None:
        body["timeout_s"] = timeout_s
    return (json.dumps(body) + "\n").encode()


def decode_command(line: str) -> tuple[Command, TransportSpec | None, float | None]:
    """Raises ValueError (json.JSONDecodeError is one) on a line that is not a command."""
    body = json.loads(line)
    cmd = Command(body["cmd"])
    transport = body.get("transport")
    timeout_s = body.get("timeout_s")
    spec = None if transport is None else TransportSpec.from_json(transport)
    return cmd, spec, None if timeout_s is None else float(timeout_s)


# --- events, child -> supervisor ---------------------------------------------------------


@dataclass(frozen=True)
class ClientReady:
    """Robot connected, handshake done."""

    actions_per_chunk: int  # T, as agreed at handshake
    joints: list[str]
    reply_shapes: dict[str, list[int]]  # camera -> the shape the policy asked for


@dataclass(frozen=True)
class ServerReady:
    """Policy loaded and warmed up (or none preloaded)."""

    policy: dict[str, LoadedPolicy]  # by "type path device"


@dataclass(frozen=True)
class ClientBeat:
    ticks: int
    actions: int
    idle: int
    queue: int
    chunks: int
    errors: int
    attached: bool
    roundtrip_ms: float | None
    hold_s: float = 0.0  # the hold in progress (no action executed), seconds
    hold_reason: str = ""  # why (runtime/holds.py); "" when moving
    held_s: float = 0.0  # all holds of the run so far


@dataclass(frozen=True)
class ServerBeat:
    chunks: int
    # Batches formed so far by size ("1", "2", ...), over every loaded policy.
    batch_sizes: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Failed:
    """Why the child is about to exit with `code` (an ExitCode)."""

    code: int
    message: str


@dataclass(frozen=True)
class Holding:
    """The client's loop has ended: nothing commands the robot any more."""

    target: list[float] | None  # the last commanded joint positions
    joints: list[str]


@dataclass(frozen=True)
class Summary:
    summary: RunSummary


Event = ClientReady | ServerReady | ClientBeat | ServerBeat | Failed | Holding | Summary

_KINDS: dict[tuple[Role, str], type] = {
    (Role.CLIENT, "ready"): ClientReady,
    (Role.SERVER, "ready"): ServerReady,
    (Role.CLIENT, "beat"): ClientBeat,
    (Role.SERVER, "beat"): ServerBeat,
    (Role.CLIENT, "failed"): Failed,
    (Role.SERVER, "failed"): Failed,
    (Role.CLIENT, "holding"): Holding,
    (Role.CLIENT, "summary"): Summary,
}
_KIND_OF = {cls: kind for (_, kind), cls in _KINDS.items()}


# Events that hold records of their own; the others are flat, and travel as their fields as
# they are (`vars`), not through `records.to_json` or `dataclasses.asdict`: the latter's
# generator expressions, run for the client's beat 4 times a second, grew the client's
# resident memory by ~2 bytes a control tick (scripts/measure_client_growth.py).
_NESTED = (ServerReady, Summary)


def encode_event(event: Event, pid: int) -> bytes:
    fields = records.fields_to_json(event) if isinstance(event, _NESTED) else vars(event)
    body = {"event": _KIND_OF[type(event)], "pid": pid, **fields}
    return (json.dumps(body) + "\n").encode()


def decode_event(role: Role, line: bytes) -> Event:
    """Raises ValueError naming what is wrong with a line that is not an event of `role`."""
    body = json.loads(line)
    if not isinstance(body, dict):  # then no event kind: refused below
        body = {}
    kind = body.pop("event", None)
    body.pop("pid", None)
    cls = _KINDS.get((role, kind))
    if cls is None:
        raise ValueError(f"{role.value} sends no {kind!r} event")
    try:
        return records.from_json(cls, body)
    except ValueError as exc:
        raise ValueError(f"malformed {kind!r} event: {exc}") from None
