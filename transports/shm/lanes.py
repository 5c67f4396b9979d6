"""The server's end of several shared-memory sessions at once: one per robot of `--robots`.

Each session keeps its own segment, semaphores, heartbeat and integrity checks; this only
hands the server loop one `ShmServerTransport` per session as its lanes (`lanes()`), each
served by a thread of its own, so a robot whose client dies, pauses or corrupts its segment
ends only its own session. The session methods of this object are the first lane's.
"""

from __future__ import annotations

from asyncinf.runtime.messages import ActionChunk, ErrorMessage, Handshake, HandshakeReply
from asyncinf.transports.base import Lease, ServerTransport
from asyncinf.transports.shm.server import ShmServerTransport


class ShmLanes(ServerTransport):
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

    def accept(self, timeout_s: float) -> Handshake | None:
        return self._ends[0].accept(timeout_s)

    def reply(self, reply: HandshakeReply) -> None:
        self._ends[0].reply(reply)

    def next_observation(self, timeout_s: float) -> Lease | None:
        return self._ends[0].next_observation(timeout_s)

    def publish_chunk(self, chunk: ActionChunk, timeout_s: float) -> None:
        self._ends[0].publish_chunk(chunk, timeout_s)

    def send_error(self, error: ErrorMessage) -> None:
        self._ends[0].send_error(error)

    def close(self) -> None:
        for end in self._ends:
            end.close()
