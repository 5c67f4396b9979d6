"""The remote transport: one bidirectional gRPC stream per session (DESIGN §5).

- `asyncinf.proto` — the typed, versioned wire schema; `asyncinf_pb2*.py` are generated from
  it by `python -m asyncinf.transports.grpc.gen` and committed (a test fails when stale).
- `convert` — runtime messages ⇄ protobuf, every received claim checked before allocating.
- `service` — the method paths and metadata keys both ends must spell alike.
- `images` — fitting frames to the negotiated shape, JPEG.
- `client` / `server` — `GrpcClientTransport` / `GrpcServerTransport` and their configs.
- `bench` — the round-trip benchmark and the bare-gRPC floor it is compared with.

Submodules import lazily, so `python -m asyncinf.transports.grpc.gen` works even when the
generated files are stale or missing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from asyncinf.transports.grpc.client import GrpcClientTransport
    from asyncinf.transports.grpc.server import GrpcServerTransport

_LAZY = {
    "GrpcClientConfig": "asyncinf.transports.grpc.config",
    "GrpcServerConfig": "asyncinf.transports.grpc.config",
    "GrpcClientTransport": "asyncinf.transports.grpc.client",
    "GrpcServerTransport": "asyncinf.transports.grpc.server",
    "server_info": "asyncinf.transports.grpc.client",
}
__all__ = [
    "GrpcClientConfig",
    "GrpcClientTransport",
    "GrpcServerConfig",
    "GrpcServerTransport",
    "open_client",
    "open_server",
    "server_info",
]


def open_client(spec: dict[str, Any]) -> GrpcClientTransport:
    """A client end from `GrpcClientConfig` fields, e.g. `{"target": "gpu-host:8080"}`."""
    from asyncinf.transports.grpc.client import open_client as _open  # noqa: PLC0415

    return _open(spec)


def open_server(spec: dict[str, Any]) -> GrpcServerTransport:
    """A listening server end from `GrpcServerConfig` fields, e.g. `{"port": 8080}`."""
    from asyncinf.transports.grpc.server import open_server as _open  # noqa: PLC0415

    return _open(spec)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib  # noqa: PLC0415

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
