"""Opening a transport end from a `TransportSpec`, and the IPC objects a supervisor owns.

A spec is a kind and that kind's options: `shm` takes the session `name`; `grpc` takes
`GrpcClientConfig` or `GrpcServerConfig` fields, checked by those classes when the end opens.
Each kind's module is imported only when used, so the robot side never imports grpc unless
asked to.

`LocalSessions` is the owner's side of the co-located case: the supervisor asks it for a
fresh shared-memory session per server generation and to remove them, and never builds one
itself.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from asyncinf.runtime.errors import ConfigError
from asyncinf.transports.base import ClientTransport, ServerTransport

if TYPE_CHECKING:
    from asyncinf.transports.shm.session import ShmSession

# (kind, end) -> (module, function taking the spec's options)
_OPENERS = {
    ("shm", "client"): ("asyncinf.transports.shm", "open_client"),
    ("shm", "server"): ("asyncinf.transports.shm", "open_server"),
    ("grpc", "client"): ("asyncinf.transports.grpc", "open_client"),
    ("grpc", "server"): ("asyncinf.transports.grpc", "open_server"),
}


@dataclass(frozen=True)
class TransportSpec:
    kind: str  # "shm" or "grpc"
    options: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The flat map `{"kind": ..., **options}` that travels to a child."""
        return {"kind": self.kind, **self.options}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TransportSpec:
        options = dict(data)
        return cls(str(options.pop("kind", "")), options)


def _open(spec: TransportSpec, end: str) -> Any:
    if (spec.kind, end) not in _OPENERS:
        raise ConfigError(f"transport kind {spec.kind!r} is not known; choose 'shm' or 'grpc'")
    module, function = _OPENERS[spec.kind, end]
    return getattr(importlib.import_module(module), function)(spec.options)


def open_client(spec: TransportSpec) -> ClientTransport:
    return _open(spec, "client")


def open_server(spec: TransportSpec) -> ServerTransport:
    return _open(spec, "server")


class LocalSessions:
    """One supervised run's shared-memory sessions: `create()` makes the next generation's
    objects and returns the spec both children attach to; `unlink()` removes the current
    ones (safe when there are none). The run id carries this process's pid, which is how
    `clean_stale` later tells a dead run's objects from a live one's."""

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        from asyncinf.transports.shm.names import make_run_id  # noqa: PLC0415

        self.run_id = make_run_id()
        self._options = dict(options or {})  # ShmConfig fields
        self._generation = 0
        self._sessions: list[ShmSession] = []

    def create(self) -> TransportSpec:
        return self.create_many(1)[0]

    def create_many(self, count: int, labels: list[str] | None = None) -> list[TransportSpec]:
        """`count` sessions at once (one per robot of `--robots`), replacing the current ones:
        each robot's client attaches to its own spec, the server to `server_spec()`."""
        from asyncinf.transports.shm import ShmConfig, ShmSession  # noqa: PLC0415

        self.unlink()
        config = ShmConfig(**self._options)
        try:
            for _ in range(count):  # each its own generation number: names stay unique
                self._sessions.append(ShmSession.create(self.run_id, self._generation, config))
                self._generation += 1
        except BaseException:
            self.unlink()
            raise
        self._labels = labels or []
        return [TransportSpec("shm", {"name": s.name}) for s in self._sessions]

    def server_spec(self) -> TransportSpec:
        """The server's end of the current sessions: one, or every robot's (its lanes)."""
        if len(self._sessions) == 1:
            return TransportSpec("shm", {"name": self._sessions[0].name})
        names = [s.name for s in self._sessions]
        return TransportSpec("shm", {"names": names, "labels": self._labels})

    def unlink(self) -> bool:
        """Remove the current sessions' objects; False when there were none."""
        sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.unlink()  # children keep their mappings until they close them
        return bool(sessions)


def clean_stale() -> list[str]:
    """Remove the IPC objects that dead runs left behind; returns their names."""
    from asyncinf.transports.shm.names import clean_stale as clean  # noqa: PLC0415

    return clean()
