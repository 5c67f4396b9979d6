"""Helpers for tests and benchmarks of transports: an echo server and camera-like frames.

`EchoServer` serves sessions one after another, as the real server loop does, and answers
each observation with a fixed chunk (or what `answer` returns), so a transport or a client
can be tested without a policy, and a benchmark measures the transport alone.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

import numpy as np

from asyncinf.runtime.errors import PeerClosed, PeerGone, TransportError
from asyncinf.runtime.messages import ActionChunk, ErrorMessage, HandshakeReply, Observation
from asyncinf.transports.base import ServerTransport

T = TypeVar("T")
CHUNK_SHAPE = (50, 14)  # actions per chunk x joints of the default answer


def synthetic_frame(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A camera-like RGB frame: smooth shapes plus sensor noise (JPEG sizes are realistic;
    an all-zero frame would compress a thousandfold and flatter the codec)."""
    import cv2  # noqa: PLC0415

    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (max(2, height // 40), max(2, width // 40), 3), np.uint8)
    img = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC).astype(np.int16)
    img += rng.normal(0, 3, img.shape).astype(np.int16)
    return np.clip(img, 0, 255).astype(np.uint8)


class EchoServer:
    """Serves sessions on `transport` in a thread: each observation gets a chunk back.

    `image_shapes` is the reply's ask (default: as captured); `answer` may return an
    ErrorMessage (sent with `send_error`) or a chunk.
    """

    def __init__(
        self,
        transport: ServerTransport,
        *,
        image_shapes: dict[str, tuple[int, int, int]] | None = None,
        chunk_shape: tuple[int, int] = CHUNK_SHAPE,
        answer: Callable[[Observation], ActionChunk | ErrorMessage | None] | None = None,
        poll_s: float = 0.05,
    ) -> None:
        self.transport = transport
        self.image_shapes = image_shapes
        self.chunk = np.zeros(chunk_shape, np.float32)
        self.answer = answer
        self.poll_s = poll_s
        self.sessions = 0
        # The last few only: keeping every frame would grow memory (and fault in fresh pages
        # on every round trip, which is what a benchmark must not measure).
        self.observations: collections.deque[Observation] = collections.deque(maxlen=8)
        self.session_errors: list[TransportError] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="echo-server", daemon=True)

    def __enter__(self) -> EchoServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _until_stopped(self, get: Callable[[float], T | None]) -> Iterator[T]:
        """What `get(poll_s)` returns (None: nothing yet, ask again), until `stop()`."""
        while not self._stop.is_set():
            got = get(self.poll_s)
            if got is not None:
                yield got

    def _run(self) -> None:
        t = self.transport
        for hello in self._until_stopped(t.accept):
            shapes = self.image_shapes if self.image_shapes is not None else hello.cameras
            t.reply(
                HandshakeReply(
                    accepted=True,
                    image_shapes=shapes,
                    action_names=list(hello.joint_names),
                    actions_per_chunk=len(self.chunk),
                )
            )
            self.sessions += 1
            try:
                self._session()
            except (PeerClosed, PeerGone) as exc:
                self.session_errors.append(exc)

    def _session(self) -> None:
        t = self.transport
        for lease in self._until_stopped(t.next_observation):
            with lease:
                obs = lease.observation
                self.observations.append(obs)
                out = self.answer(obs) if self.answer else None
                if out is None:
                    out = ActionChunk(
                        obs.timestep,
                        self.chunk,
                        obs_sent_ns=obs.sent_ns,
                        queue_wait_ns=lease.queue_wait_ns,
                    )
            if isinstance(out, ErrorMessage):
                t.send_error(out)
            else:
                t.publish_chunk(out, 5.0)
