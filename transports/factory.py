"""Opening a transport end from a plain spec map (what the supervisor hands its children).

`{"kind": "shm", "name": ...}` or `{"kind": "grpc", ...GrpcClientConfig fields}`; each kind's
module is imported only when used, so the robot side never imports grpc unless asked to.
"""

from __future__ import annotations

import importlib
from typing import Any

from asyncinf.runtime.errors import ConfigError
from asyncinf.transports.base import ClientTransport, ServerTransport

# (kind, end) -> (module, function taking the spec without "kind")
_OPENERS = {
    ("shm", "client"): ("asyncinf.transports.shm", "open_client"),
    ("shm", "server"): ("asyncinf.transports.shm", "open_server"),
    ("grpc", "client"): ("asyncinf.transports.grpc", "open_client"),
    ("grpc", "server"): ("asyncinf.transports.grpc", "open_server"),
}


def _open(spec: dict[str, Any], end: str) -> Any:
    kind = spec.get("kind")
    if (kind, end) not in _OPENERS:
        raise ConfigError(f"transport kind {kind!r} is not known; choose 'shm' or 'grpc'")
    module, function = _OPENERS[kind, end]
    opener = getattr(importlib.import_module(module), function)
    return opener({k: v for k, v in spec.items() if k != "kind"})


def open_client(spec: dict[str, Any]) -> ClientTransport:
    return _open(spec, "client")


def open_server(spec: dict[str, Any]) -> ServerTransport:
    return _open(spec, "server")
