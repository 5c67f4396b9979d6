"""The run's status file (`asyncinf up --status-json PATH`), for monitoring, tests and humans.

One small JSON object, replaced atomically on every change, so a reader sees the old state or
the new one and never a half-written file::

    {"state": "running", "pid": 4100,
     "server": {"pid": 4101, "state": "running", "restarts": 0,
                "policy": {"act /ckpt cpu": {"chunk": 50, "lerobot": "0.4.4", "torch": "2.14.1"}}},
     "client": {"pid": 4102, "state": "running",
                "hold_s": 0.0, "hold_reason": "", "held_s": 1.2},
     "robots": {},
     "updated_ns": 1718000000000000000}

`pid` is the supervisor's, so a reader can tell a stale file (supervisor gone) from a live one.
`server` is null with --remote: that server is another host's business. The client's `hold_s` is the
hold in progress (the robot executing no action) and `hold_reason` why (runtime/holds.py);
`held_s` sums every hold of the run. Under `--robots`, `robots` holds each robot's client
by name, in the same shape (and `client` is the first of them). `updated_ns` is wall
clock (`time.time_ns()`), the one clock a reader in another process can compare with.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from asyncinf.runtime import records
from asyncinf.runtime.server import LoadedPolicy

log = logging.getLogger(__name__)


class State(str, enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    RESTARTING = "restarting"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"

    @property
    def final(self) -> bool:
        """True once the run is over: no process is expected behind this state."""
        return self in (State.STOPPED, State.FAILED)


@dataclasses.dataclass
class ChildStatus:
    pid: int | None = None
    state: State = State.STARTING


@dataclasses.dataclass
class ClientStatus(ChildStatus):
    hold_s: float = 0.0
    hold_reason: str = ""
    held_s: float = 0.0


@dataclasses.dataclass
class ServerStatus(ChildStatus):
    restarts: int = 0
    # By "type path device"; in the file, flat: {"chunk": 50, "lerobot": "0.4.4", ...}
    policy: dict[str, LoadedPolicy] = dataclasses.field(default_factory=dict)
    batch_sizes: dict[str, int] = dataclasses.field(default_factory=dict)  # size -> batches


@dataclasses.dataclass
class RunStatus:
    state: State = State.STARTING
    pid: int = dataclasses.field(default_factory=os.getpid)
    server: ServerStatus | None = dataclasses.field(default_factory=ServerStatus)
    client: ClientStatus = dataclasses.field(default_factory=ClientStatus)
    robots: dict[str, ClientStatus] = dataclasses.field(default_factory=dict)  # --robots
    updated_ns: int = 0

    def to_json(self) -> dict[str, Any]:
        return records.fields_to_json(self)

    @classmethod
    def from_json(cls, data: Any) -> RunStatus:
        """Parse a decoded status file; raises ValueError naming what is wrong."""
        try:
            server, client = data["server"], data["client"]
            if server is not None:
                server = ServerStatus(
                    _pid(server["pid"]),
                    State(server["state"]),
                    _int(server["restarts"]),
                    {
                        k: LoadedPolicy.from_json(v)
                        for k, v in _map(server.get("policy", {})).items()
                    },
                    _map(server.get("batch_sizes", {})),
                )
            return cls(
                state=State(data["state"]),
                pid=_int(data["pid"]),
                server=server,
                client=_client(client),
                robots={str(k): _client(v) for k, v in _map(data.get("robots", {})).items()},
                updated_ns=_int(data["updated_ns"]),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not an asyncinf status object: missing or malformed {exc}") from None


def _client(data: Any) -> ClientStatus:
    return ClientStatus(
        _pid(data["pid"]),
        State(data["state"]),
        _seconds(data.get("hold_s", 0.0)),
        str(data.get("hold_reason", "")),
        _seconds(data.get("held_s", 0.0)),
    )


class StatusFileError(ValueError):
    """The status file is missing, unreadable or not an asyncinf status."""


def write_status_file(path: str | os.PathLike[str], status: RunStatus) -> None:
    """Stamp `status.updated_ns` and replace `path` atomically; raises OSError on failure."""
    path = Path(path)
    status.updated_ns = time.time_ns()
    data = (json.dumps(status.to_json()) + "\n").encode()
    # The temporary file sits in the same directory: os.replace is atomic only within one
    # filesystem. No fsync: readers need atomicity, not durability across a power cut.
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o644)  # mkstemp makes 0600; monitoring may run as another user
            f.write(data)
        tmp.replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def read_status_file(path: str | os.PathLike[str]) -> RunStatus:
    """The status in `path`; raises StatusFileError saying why it cannot be read."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StatusFileError(
            f"{path}: no status file (is `asyncinf up --status-json {path}` running?)"
        ) from None
    except OSError as exc:
        raise StatusFileError(f"{path}: cannot read the status file ({exc})") from None
    try:
        return RunStatus.from_json(json.loads(text))
    except ValueError as exc:  # json.JSONDecodeError is a ValueError
        raise StatusFileError(f"{path}: corrupt status file ({exc})") from None


class StatusWriter:
    """Keeps one status file current for the supervisor: change `status`, then `write()`.

    A failed write is logged (once until one succeeds again) rather than raised: a full disk
    must not interrupt a client-first shutdown.
    """

    def __init__(self, path: str | os.PathLike[str], status: RunStatus | None = None) -> None:
        self.path = Path(path)
        self.status = status if status is not None else RunStatus()
        self._failing = False

    def write(self) -> bool:
        """Write the current status; True on success."""
        try:
            write_status_file(self.path, self.status)
        except OSError as exc:
            if not self._failing:
                log.warning("cannot write the status file %s: %s", self.path, exc)
            self._failing = True
            return False
        self._failing = False
        return True


def _int(value: Any) -> int:
    if type(value) is not int:  # bool is an int subclass, and not a count
        raise ValueError(f"expected an integer, got {value!r}")
    return value


def _seconds(value: Any) -> float:
    if type(value) not in (int, float) or value < 0:
        raise ValueError(f"expected seconds >= 0, got {value!r}")
    return float(value)


def _map(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"expected a map, got {value!r}")
    return value


def _pid(value: Any) -> int | None:
    return None if value is None else _int(value)
