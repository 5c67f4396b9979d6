"""The floor the gRPC transport is judged against: a bare gRPC bidi stream of raw bytes.

The least a gRPC stream in Python can do with the same sizes: raw bytes up and the same
bytes back, no schema, no checks, one thread each side iterating the stream. The
`grpc_floor` row of `asyncinf bench transport` (bench/transport.py) runs it.
"""

from __future__ import annotations

import queue
from collections.abc import Iterator
from concurrent import futures

import grpc

from asyncinf.transports.grpc.config import DEFAULT_MAX_MESSAGE_BYTES

_FLOOR_METHOD = "/asyncinf.bench.Floor/Echo"
_FLOOR_LIMITS = [
    ("grpc.max_send_message_length", DEFAULT_MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", DEFAULT_MAX_MESSAGE_BYTES),
]


def floor_server() -> tuple[grpc.Server, int]:
    """A bare gRPC bidi-stream server on a free loopback port echoing each message."""

    def echo(requests: Iterator[bytes], _context: grpc.ServicerContext) -> Iterator[bytes]:
        yield from requests

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
