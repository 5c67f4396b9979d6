"""Helpers for tests of code on the gRPC transport, on loopback.

Liveness is shortened (`FAST`) so a lost peer is seen in about a second, and a client
reconnects within a third of one; `EchoReplica` is a server a test can lose and bring back
on the same port, as a replica that crashed and was restarted.
"""

from __future__ import annotations

from typing import Any

from asyncinf.transports.grpc.client import GrpcClientTransport
from asyncinf.transports.grpc.config import GrpcClientConfig, GrpcServerConfig
from asyncinf.transports.grpc.server import GrpcServerTransport
from asyncinf.transports.testing import EchoServer

FAST: dict[str, Any] = {"heartbeat_interval_s": 0.1, "heartbeat_timeout_s": 1.0}


def fast_server(port: int = 0, **options: Any) -> GrpcServerTransport:
    """A server on 127.0.0.1:`port` (0: a free one) with `FAST` liveness; `options` override."""
    return GrpcServerTransport(GrpcServerConfig(port=port, **{**FAST, **options}))


def fast_client(port: int, **options: Any) -> GrpcClientTransport:
    """A client of 127.0.0.1:`port` with `FAST` liveness and quick reconnects; `options`
    override."""
    base = {
        "target": f"127.0.0.1:{port}",
        "connect_timeout_s": 5.0,
        "reconnect_backoff_s": 0.05,
        "reconnect_backoff_max_s": 0.3,
        **FAST,
    }
    return GrpcClientTransport(GrpcClientConfig(**{**base, **options}))


class EchoReplica:
    """A `fast_server` with an `EchoServer` answering chunks of `chunk_shape`: `crash()` or
    `close()` loses it, `start()` brings a new one back on the same port."""

    def __init__(self, chunk_shape: tuple[int, int] = (4, 2)) -> None:
        self.chunk_shape = chunk_shape
        self.port = 0
        self.start()

    def start(self) -> None:
        self.server = fast_server(self.port)
        self.port = self.server.port
        self.echo = EchoServer(self.server, chunk_shape=self.chunk_shape).__enter__()

    def crash(self) -> None:
        """Streams cancelled without a goodbye, like a replica killed with kill -9."""
        self.echo.stop()
        self.server._server.stop(None)

    def close(self) -> None:
        """Stop serving with a goodbye (after `crash()`: release what is left)."""
        self.echo.stop()
        self.server.close()
