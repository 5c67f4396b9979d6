"""The owner's side of a session: the supervisor creates every object and unlinks every one.

Children only attach (`ShmClientTransport.attach`, `ShmServerTransport.attach`) and close.
"""

from __future__ import annotations

import logging

from asyncinf.runtime.errors import TransportError
from asyncinf.transports.shm import names
from asyncinf.transports.shm.config import ShmConfig
from asyncinf.transports.shm.layout import Layout
from asyncinf.transports.shm.peer import PeerStatus, read_peer_status
from asyncinf.transports.shm.segment import Segment, create_objects

log = logging.getLogger(__name__)


class ShmSession:
    """One session's objects, owned by this process.

    `create` makes all of them or none (a failure unlinks what it had made). `unlink`
    removes them and unmaps this process's view; it is safe twice and after a failed create.
    """

    def __init__(self, name: str, layout: Layout) -> None:
        self.name = name  # what children attach to: asyncinf.<run>.g<gen>
        self.layout = layout
        self._created: list[str] = []  # roles this process created, in order
        self._segment: Segment | None = None

    @classmethod
    def create(cls, run_id: str, generation: int, config: ShmConfig | None = None) -> ShmSession:
        """Create a session's segment and semaphores (O_CREX: never adopts existing ones)."""
        config = config or ShmConfig()
        name = names.session_name(run_id, generation)
        session = cls(name, Layout.compute(config, generation))
        try:
            session._segment = create_objects(name, session.layout, session._created)
            # The owner never waits on the semaphores: only the children's handles stay open.
            for sem in session._segment.sems.values():
                sem.close()
            session._segment.sems = {}
        except BaseException:
            session.unlink()
            raise
        log.debug(
            "created session %s: %.1f MiB, %d objects",
            name, session.layout.segment_bytes / 2**20, len(session._created),
        )  # fmt: skip
        return session

    @property
    def config(self) -> ShmConfig:
        return self.layout.config

    @property
    def generation(self) -> int:
        return self.layout.generation

    def heartbeats(self) -> dict[str, PeerStatus]:
        """Both sides' pid and last heartbeat, read from the header (no lock, no waiting)."""
        seg = self._segment
        if seg is None or seg.words is None:
            raise TransportError(f"session {self.name} is closed")
        timeout_ns = round(self.config.peer_timeout_s * 1e9)
        return {
            side: read_peer_status(seg.words, side, timeout_ns) for side in ("client", "server")
        }

    def close(self) -> None:
        """Unmap this process's view of the header; the objects stay (see `unlink`)."""
        seg, self._segment = self._segment, None
        if seg is not None:
            seg.close()

    def unlink(self) -> None:
        """Remove every object this session created, and close. Children's mappings stay
        valid until they close; nobody can attach any more."""
        self.close()
        created, self._created = self._created, []
        for role in created:
            names.unlink_role(self.name, role)
        if created:
            log.debug("unlinked session %s (%d objects)", self.name, len(created))

    def __enter__(self) -> ShmSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.unlink()

    def __repr__(self) -> str:
        return f"ShmSession({self.name})"
