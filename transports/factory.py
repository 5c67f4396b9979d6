"""Opening a transport end from a `TransportSpec`, and the IPC objects a supervisor owns.

A spec is a kind and that kind's options, a record that names its fields: `shm` takes
`ShmOptions` (which sessions to attach to; their sizes travel in the segments' headers);
`grpc` takes a `GrpcClientConfig` (it has a `target`) or a `GrpcServerConfig`. A map of them,
as a caller or the JSON a child is started with gives it, is read into that record, refusing
unknown keys. Each kind's module is imported only when used, so the robot side never imports
grpc unless asked to.

`LocalSessions` is the owner's side of the co-located case: the supervisor asks it for a
fresh shared-memory session per server generation and to remove them, and never builds one
itself.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

from asyncinf.runtime import records
from asyncinf.runtime.errors import ConfigError
from asyncinf.transports.base import ClientTransport, ServerTransport

if TYPE_CHECKING:
    from asyncinf.transports.grpc.config import GrpcClientConfig, GrpcServerConfig
    from asyncinf.transports.shm.session import ShmSession

# (kind, end) -> (module, function taking the spec's options, the options' class)
_OPENERS = {
    ("shm", "client"): ("asyncinf.transports.shm", "open_client", "ShmOptions"),
    ("shm", "server"): ("asyncinf.transports.shm", "open_server", "ShmOptions"),
    ("grpc", "client"): ("asyncinf.transports.grpc.client", "GrpcClientTransport",
                         "GrpcClientConfig"),
    ("grpc", "server"): ("asyncinf.transports.grpc.server", "GrpcServerTransport",
                         "GrpcServerConfig"),
}  # fmt: skip


@dataclass(frozen=True)
class ShmOptions:
    """The shared-memory sessions an end attaches to, by name: one (a client's, or a server
    of one robot), or with `names` every robot's at once (a server's lanes, `--robots`)."""

    name: str = ""
    names: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()  # the robots' names, in the order of `names`

    def __post_init__(self) -> None:
        if bool(self.name) == bool(self.names):
            raise ConfigError(f"shm transport: give a session name or names, not {self}")


TransportOptions = Union[ShmOptions, "GrpcClientConfig", "GrpcServerConfig"]


@dataclass(frozen=True)
class TransportSpec:
    kind: str  # "shm" or "grpc"
    # A map is read into the kind's record (see the module docstring); ConfigError if it
    # is not one.
    options: TransportOptions | Mapping[str, Any]

    def __post_init__(self) -> None:
        if self.kind not in {kind for kind, _end in _OPENERS}:
            raise ConfigError(f"transport kind {self.kind!r} is not known; choose 'shm' or 'grpc'")
        if isinstance(self.options, Mapping):
            object.__setattr__(self, "options", _read_options(self.kind, dict(self.options)))

    def to_json(self) -> dict[str, Any]:
        """The flat map `{"kind": ..., **options}` that travels to a child."""
        return {"kind": self.kind, **records.to_json(self.options)}

    @classmethod
    def from_json(cls, data: Any) -> TransportSpec:
        """Raises ConfigError for a kind or an option that is not known, or a bad value."""
        if not isinstance(data, dict):
            raise ConfigError(f"transport spec {data!r}: expected a map with a kind")
        options = dict(data)
        return cls(str(options.pop("kind", "")), options)


def _read_options(kind: str, options: dict[str, Any]) -> TransportOptions:
    if kind == "grpc":  # a client's options name the server (`target`), a server's never do
        from asyncinf.transports.grpc import config  # noqa: PLC0415

        end = config.GrpcClientConfig if "target" in options else config.GrpcServerConfig
        return end.from_dict(options)
    try:
        return records.from_json(ShmOptions, options)
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(f"shm transport: {exc}") from None


def _open(spec: TransportSpec, end: str) -> Any:
    module, function, options_class = _OPENERS[spec.kind, end]
    if type(spec.options).__name__ != options_class:
        raise ConfigError(
            f"a {spec.kind} transport's {end} end takes {options_class}, not "
            f"{type(spec.options).__name__}"
        )
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
        return [TransportSpec("shm", ShmOptions(s.name)) for s in self._sessions]

    def server_spec(self) -> TransportSpec:
        """The server's end of the current sessions: one, or every robot's (its lanes)."""
        if len(self._sessions) == 1:
            return TransportSpec("shm", ShmOptions(self._sessions[0].name))
        names = tuple(s.name for s in self._sessions)
        return TransportSpec("shm", ShmOptions(names=names, labels=tuple(self._labels)))

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
