"""Round-trip benchmark of the gRPC transport and the bare-gRPC floor it is judged against.

- `grpc_roundtrip`: a `GrpcClientTransport` and a `GrpcServerTransport` on loopback in this
  process; the server echoes each observation with a 50×14 float32 chunk. One sample is
  `send_observation` → the chunk out of `receive`, i.e. everything the transport adds:
  fitting and encoding images, protobuf, checks, the hand-offs between threads.
- `grpc_floor`: the least a gRPC bidi stream in Python can do with the same sizes: raw bytes
  up (the observation's size), 2,800 raw bytes down, no schema, no checks, one thread each
  side iterating the stream.

Both return samples in nanoseconds; `asyncinf bench transport` turns them into rows.
`EchoServer` (also used by the tests) serves sessions one after another like the real
server loop does.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
import numpy as np

from asyncinf.runtime.bench_transport import summarize
from asyncinf.runtime.errors import PeerClosed, PeerGone, TransportError
from asyncinf.runtime.messages import (
    ActionChunk,
    ErrorMessage,
    Handshake,
    HandshakeReply,
    Observation,
    PolicySpec,
)
from asyncinf.transports.base import ServerTransport
from asyncinf.transports.grpc.client import GrpcClientTransport
from asyncinf.transports.grpc.config import (
    DEFAULT_MAX_MESSAGE_BYTES,
    GrpcClientConfig,
    GrpcServerConfig,
)
from asyncinf.transports.grpc.server import GrpcServerTransport

log = logging.getLogger(__name__)

CHUNK_SHAPE = (50, 14)
CHUNK_BYTES = CHUNK_SHAPE[0] * CHUNK_SHAPE[1] * 4
MODES = ("raw", "jpeg", "resize_jpeg")  # resize_jpeg: 224x224 center crop, then JPEG q90


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

    def _run(self) -> None:
        t = self.transport
        while not self._stop.is_set():
            hello = t.accept(self.poll_s)
            if hello is None:
                continue
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
        while not self._stop.is_set():
            lease = t.next_observation(self.poll_s)
            if lease is None:
                continue
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


def synthetic_frame(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A camera-like RGB frame: smooth shapes plus sensor noise (JPEG sizes are realistic;
    an all-zero frame would compress a thousandfold and flatter the codec)."""
    import cv2  # noqa: PLC0415

    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (max(2, height // 40), max(2, width // 40), 3), np.uint8)
    img = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC).astype(np.int16)
    img += rng.normal(0, 3, img.shape).astype(np.int16)
    return np.clip(img, 0, 255).astype(np.uint8)


def _frame_shape(payload_bytes: int) -> tuple[int, int, int]:
    if payload_bytes % 3:
        raise ValueError(f"payload of {payload_bytes} B is not a whole number of RGB pixels")
    pixels = payload_bytes // 3
    width = 640 if pixels % 640 == 0 else pixels
    return (pixels // width, width, 3)


def grpc_roundtrip(
    payload_bytes: int,
    iterations: int,
    *,
    warmup: int = 20,
    mode: str = "raw",
    timeout_s: float = 10.0,
) -> dict[str, Any]:
    """Round trips through both gRPC transport ends on loopback.

    Returns {"samples_ns": [...], "bytes_per_observation": ..., "raw_bytes_per_observation":
    ...}. `mode`: raw, jpeg (q90, no resize), resize_jpeg (224×224 center crop + JPEG q90).
    """
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: choose one of {MODES}")
    shape = _frame_shape(payload_bytes)
    frame = synthetic_frame(shape[0], shape[1]) if mode != "raw" else np.zeros(shape, np.uint8)
    wanted = {"cam": (224, 224, 3)} if mode == "resize_jpeg" else None
    server = GrpcServerTransport(GrpcServerConfig(port=0))
    client = None
    try:
        with EchoServer(server, image_shapes=wanted):
            client = GrpcClientTransport(
                GrpcClientConfig(
                    target=f"127.0.0.1:{server.port}",
                    image_codec="raw" if mode == "raw" else "jpeg",
                    image_fit="center_crop",
                )
            )
            hello = Handshake(
                joint_names=[f"j{i}" for i in range(CHUNK_SHAPE[1])],
                cameras={"cam": shape},
                policy=PolicySpec(actions_per_chunk=CHUNK_SHAPE[0]),
                fps=30.0,
            )
            client.handshake(hello, timeout_s)
            state = np.zeros(CHUNK_SHAPE[1], np.float32)
            samples = []
            for i in range(warmup + iterations):
                obs = Observation(i, time.monotonic_ns(), state, {"cam": frame})
                t0 = time.perf_counter_ns()
                client.send_observation(obs)
                deadline = time.monotonic() + timeout_s
                while True:
                    msg = client.receive(max(0.0, deadline - time.monotonic()))
                    if msg is None:
                        raise TimeoutError(f"no chunk for observation {i} within {timeout_s} s")
                    if isinstance(msg, ActionChunk) and msg.timestep == i:
                        break
                if i >= warmup:
                    samples.append(time.perf_counter_ns() - t0)
            stats = client.stats()
    finally:
        if client is not None:
            client.close()
        server.close()
    return {
        "samples_ns": samples,
        "bytes_per_observation": stats["bytes_per_observation"],
        "raw_bytes_per_observation": stats["raw_image_bytes_per_observation"],
    }


_FLOOR_METHOD = "/asyncinf.bench.Floor/Echo"
_FLOOR_LIMITS = [
    ("grpc.max_send_message_length", DEFAULT_MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", DEFAULT_MAX_MESSAGE_BYTES),
]


def floor_server(reply_bytes: int | None = None) -> tuple[grpc.Server, int]:
    """A bare gRPC bidi-stream server on a free loopback port: raw bytes in, raw bytes out.

    By default it echoes each message (the `grpc_floor` row as specified: "echoing raw bytes
    of the same size"); with `reply_bytes` it answers with that many bytes instead.
    """
    fixed = None if reply_bytes is None else bytes(reply_bytes)

    def echo(requests: Iterator[bytes], _context: grpc.ServicerContext) -> Iterator[bytes]:
        for request in requests:
            yield request if fixed is None else fixed

    server = grpc.server(futures.ThreadPoolExecutor(2), options=_FLOOR_LIMITS)
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "asyncinf.bench.Floor", {"Echo": grpc.stream_stream_rpc_method_handler(echo)}
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


class FloorStream:
    """The client of `floor_server`: one stream, one message up and one down per round trip."""

    def __init__(self, port: int, timeout_s: float = 10.0) -> None:
        self._channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=_FLOOR_LIMITS)
        self._outbox: queue.Queue[bytes | None] = queue.Queue()
        self._timeout_s = timeout_s

        def requests() -> Iterator[bytes]:
            while (item := self._outbox.get(timeout=timeout_s)) is not None:
                yield item

        self._responses = self._channel.stream_stream(_FLOOR_METHOD)(requests(), timeout=None)

    def roundtrip(self, payload: bytes) -> None:
        self._outbox.put(payload)
        next(self._responses)

    def close(self) -> None:
        self._outbox.put(None)
        self._responses.cancel()
        self._channel.close()


def grpc_floor(
    payload_bytes: int,
    iterations: int,
    *,
    warmup: int = 20,
    reply_bytes: int | None = None,
    timeout_s: float = 10.0,
) -> list[int]:
    """Round trips of raw bytes over a bare gRPC bidi stream in this process (see
    `floor_server`); with `reply_bytes=CHUNK_BYTES` the same traffic as `grpc_roundtrip`."""
    server, port = floor_server(reply_bytes)
    stream = FloorStream(port, timeout_s)
    try:
        payload = bytes(payload_bytes)
        samples = []
        for i in range(warmup + iterations):
            t0 = time.perf_counter_ns()
            stream.roundtrip(payload)
            if i >= warmup:
                samples.append(time.perf_counter_ns() - t0)
    finally:
        stream.close()
        server.stop(None)
    return samples


def rows(
    sizes: tuple[int, ...] = (921_600, 3_686_400), iterations: int = 300
) -> list[dict[str, Any]]:
    """Benchmark rows in the transport benchmark's shape: `grpc` (per mode), `grpc_floor`
    (echo, as specified) and `grpc_floor_oneway` (payload up, a chunk's bytes down)."""
    out = []
    for size in sizes:
        floors = {
            "grpc_floor": grpc_floor(size, iterations),
            "grpc_floor_oneway": grpc_floor(size, iterations, reply_bytes=CHUNK_BYTES),
        }
        for name, samples in floors.items():
            out.append({"transport": name, "payload_bytes": size, **summarize(samples)})
        for mode in MODES:
            res = grpc_roundtrip(size, iterations, mode=mode)
            out.append(
                {
                    "transport": "grpc",
                    "mode": mode,
                    "payload_bytes": size,
                    **summarize(res["samples_ns"]),
                    "bytes_per_observation": res["bytes_per_observation"],
                    "raw_bytes_per_observation": res["raw_bytes_per_observation"],
                }
            )
    return out


def main() -> None:  # a developer's quick look; `asyncinf bench transport` prints the table
    table = rows()
    floors = {(r["transport"], r["payload_bytes"]): r["p50_us"] for r in table}
    for r in table:
        line = f"{r['payload_bytes']:>9} B {r['transport']:<18} {r.get('mode', ''):<12}"
        line += f" p50 {r['p50_us']:8.0f} us  p99 {r['p99_us']:8.0f} us"
        if r["transport"] == "grpc":
            echo = r["p50_us"] / floors[("grpc_floor", r["payload_bytes"])]
            oneway = r["p50_us"] / floors[("grpc_floor_oneway", r["payload_bytes"])]
            line += f"  ×floor {echo:.2f}  ×oneway floor {oneway:.2f}"
            line += f"  {r['bytes_per_observation']:.0f} B/obs"
        print(line)  # a developer tool's output


if __name__ == "__main__":
    main()
