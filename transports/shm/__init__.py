"""Shared-memory transport: both ends on one host, frames in slots, posix_ipc semaphores.

- `ShmSession.create(run_id, generation, config)` — the supervisor (owner) creates every
  object and later `unlink()`s them;
- `ShmClientTransport.attach(name)` / `ShmServerTransport.attach(name)` — the children open
  the existing objects, check the header, and only ever `close()`.

Layout: `layout.py`. Names and stale-run cleanup: `names.py`. Design: DESIGN.md §4.
"""

from __future__ import annotations

from asyncinf.transports.base import WhenFull
from asyncinf.transports.shm.client import ShmClientTransport
from asyncinf.transports.shm.config import ShmConfig
from asyncinf.transports.shm.names import clean_stale, make_run_id
from asyncinf.transports.shm.peer import PeerStatus
from asyncinf.transports.shm.server import ShmServerTransport
from asyncinf.transports.shm.session import ShmSession

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


def open_client(spec: dict) -> ShmClientTransport:
    """The client end of the session named in `spec["name"]` (transports.factory's hook)."""
    return ShmClientTransport.attach(spec["name"])


def open_server(spec: dict) -> ShmServerTransport:
    """The server end of the session named in `spec["name"]` (transports.factory's hook)."""
    return ShmServerTransport.attach(spec["name"])
