"""The server's end of several shared-memory sessions at once: one per robot of `--robots`.

Each session keeps its own segment, semaphores, heartbeat and integrity checks; this only
hands the server loop one `ShmServerTransport` per session as its lanes (`lanes()`), each
served by a thread of its own, so a robot whose client dies, pauses or corrupts its segment
ends only its own session. The session methods of this object are the first lane's.
"""

from __future__ import annotations

from asyncinf.transports.base import LanedServerTransport, ServerTransport
from asyncinf.transports.shm.server import ShmServerTransport


class ShmLanes(LanedServerTransport):
    def __init__(self, ends: list[ShmServerTransport]) -> None:
        self._ends = ends

    @classmethod
    def attach(cls, names: list[str], labels: list[str]) -> ShmLanes:
        """Attach to every session named; `labels` name their robots in the server's log."""
        ends: list[ShmServerTransport] = []
        try:
            for i, name in enumerate(names):
                end = ShmServerTransport.attach(name)
                end.session_label = labels[i] if i < len(labels) else name
                ends.append(end)
        except BaseException:
            for end in ends:
                end.close()
            raise
        return cls(ends)

    def lanes(self) -> list[ServerTransport]:
        return list(self._ends)

    def close(self) -> None:
        for end in self._ends:
            end.close()
