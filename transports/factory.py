"""Opening a transport end from a plain spec map (what the supervisor hands its children).

`{"kind": "shm", "name": ...}` or `{"kind": "grpc", ...GrpcClientConfig fields}`; each kind's
module is imported only when used, so the robot side never imports grpc unless asked to.
"""

from __future__ import annotations

from typing import Any

from asyncinf.runtime.errors import ConfigError
from asyncinf.transports.base import ClientTransport, ServerTransport


def open_client(spec: dict[str, Any]) -> ClientTransport:
    kind = spec.get("kind")
    if kind == "shm":
        from asyncinf.transports.shm import ShmClientTransport  # noqa: PLC0415

        return ShmClientTransport.attach(spec["name"])
    if kind == "grpc":
        from asyncinf.transports.grpc import open_client as open_grpc  # noqa: PLC0415

        return open_grpc({k: v for k, v in spec.items() if k != "kind"})
    raise ConfigError(f"transport kind {kind!r} is not known; choose 'shm' or 'grpc'")


def open_server(spec: dict[str, Any]) -> ServerTransport:
    kind = spec.get("kind")
    if kind == "shm":
        from asyncinf.transports.shm import ShmServerTransport  # noqa: PLC0415

        return ShmServerTransport.attach(spec["name"])
    if kind == "grpc":
        from asyncinf.transports.grpc import open_server as open_grpc  # noqa: PLC0415

        return open_grpc({k: v for k, v in spec.items() if k != "kind"})
    raise ConfigError(f"transport kind {kind!r} is not known; choose 'shm' or 'grpc'")
