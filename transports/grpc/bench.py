"""Round-trip benchmark of the gRPC transport and the bare-gRPC floor it is judged against.

- `grpc_roundtrip`: a `GrpcClientTransport` and a `GrpcServerTransport` on loopback in this
  process; the server echoes each observation with a 50×14 float32 chunk. One sample is
  `send_observation` → the chunk out of `receive`, i.e. everything the transport adds:
  fitting and encoding images, protobuf, checks, the hand-offs between threads.
- `grpc_floor`: the least a gRPC bidi stream in Python can do with the same sizes: raw bytes
  up (the observation's size), 2,800 raw bytes down, no schema, no checks, one thread each
  side iterating the stream.

Both return samples in nanoseconds; `asyncinf bench transport` turns them into rows.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import numpy as np

from asyncinf.runtime.bench_transport import summarize
from asyncinf.runtime.messages import (
    ActionChunk,
    Handshake,
    Observation,
    PolicySpec,
)
from asyncinf.transports.grpc.client import GrpcClientTransport
from asyncinf.transports.grpc.config import (
    DEFAULT_MAX_MESSAGE_BYTES,
    GrpcClientConfig,
    GrpcServerConfig,
)
from asyncinf.transports.grpc.server import GrpcServerTransport
from asyncinf.transports.testing import CHUNK_SHAPE, EchoServer

log = logging.getLogger(__name__)

CHUNK_BYTES = CHUNK_SHAPE[0] * CHUNK_SHAPE[1] * 4
MODES = ("raw", "jpeg", "resize_jpeg")  # resize_jpeg: 224x224 center crop, then JPEG q90


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
