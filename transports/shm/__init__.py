"""Shared-memory transport: both ends on one host, frames in slots, posix_ipc semaphores.

- `ShmSession.create(run_id, generation, config)` — the supervisor (owner) creates every
  object and later `unlink()`s them;
- `ShmClientTransport.attach(name)` / `ShmServerTransport.attach(name)` — the children open
  the existing objects, check the header, and only ever `close()`.

Layout: `layout.py`. Names and stale-run cleanup: `names.py`. What is checked of everything
read back from the segment (CRCs, ring positions, indexes, pids): `integrity.py`.
Design: DESIGN.md §4.

Submodules import lazily, as in `transports.grpc`: `asyncinf clean` and the tests' leak check
need `names` only, not both ends and their posix_ipc set-up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from asyncinf.transports.base import ServerTransport
    from asyncinf.transports.factory import ShmOptions
    from asyncinf.transports.shm.client import ShmClientTransport
    from asyncinf.transports.shm.server import ShmServerTransport

_LAZY = {
    "PeerStatus": "asyncinf.transports.shm.peer",
    "ShmClientTransport": "asyncinf.transports.shm.client",
    "ShmConfig": "asyncinf.transports.shm.config",
    "ShmServerTransport": "asyncinf.transports.shm.server",
    "ShmSession": "asyncinf.transports.shm.session",
    "WhenFull": "asyncinf.transports.base",
    "clean_stale": "asyncinf.transports.shm.names",
    "make_run_id": "asyncinf.transports.shm.names",
}
__all__ = [
    "PeerStatus",
    "ShmClientTransport",
    "ShmConfig",
    "ShmServerTransport",
    "ShmSession",
    "WhenFull",
    "clean_stale",
    "make_run_id",
    "open_client",
    "open_server",
]


def open_client(options: ShmOptions) -> ShmClientTransport:
    """The client end of the session `options.name` (transports.factory's hook)."""
    from asyncinf.transports.shm.client import ShmClientTransport  # noqa: PLC0415

    return ShmClientTransport.attach(options.name)


def open_server(options: ShmOptions) -> ServerTransport:
    """The server end of the session `options.name`, or of all the sessions in
    `options.names` served at once (transports.factory's hook)."""
    from asyncinf.transports.shm.server import ShmServerTransport  # noqa: PLC0415

    if options.names:
        from asyncinf.transports.shm.lanes import ShmLanes  # noqa: PLC0415

        return ShmLanes.attach(list(options.names), list(options.labels))
    return ShmServerTransport.attach(options.name)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib  # noqa: PLC0415

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
