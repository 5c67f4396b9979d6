"""The shipped nginx config (transports/grpc/nginx-grpc.conf) run by a real nginx in front of
a real gRPC server on loopback: TLS terminated at nginx, or end to end (grpcs), and the
bearer token passed through to the replica, which checks it."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from test_grpc_transport import _self_signed

from asyncinf.runtime.errors import Unauthenticated
from asyncinf.runtime.messages import Observation
from asyncinf.runtime.testing import hello
from asyncinf.transports.grpc.balancer import CONF, Nginx, free_port, render
from asyncinf.transports.grpc.client import GrpcClientTransport
from asyncinf.transports.grpc.config import GrpcClientConfig, GrpcServerConfig
from asyncinf.transports.grpc.server import GrpcServerTransport
from asyncinf.transports.testing import EchoServer


def test_render_only_puts_in_the_ports():
    text = render(9000, ["127.0.0.1:9001", "10.0.0.7:8080"]).splitlines()
    shipped = CONF.read_text().splitlines()
    added = [line.strip() for line in text if line not in shipped]
    removed = [line.strip() for line in shipped if line not in text]
    assert added == [
        "server 127.0.0.1:9001 max_fails=1 fail_timeout=2s;",
        "server 10.0.0.7:8080 max_fails=1 fail_timeout=2s;",
        "listen 127.0.0.1:9000 http2;",
    ]
    assert removed == [
        "server 127.0.0.1:8081 max_fails=1 fail_timeout=2s;",
        "server 127.0.0.1:8082 max_fails=1 fail_timeout=2s;",
        "listen 127.0.0.1:8080 http2;",
    ]


@pytest.mark.parametrize("mode", ["tls_at_nginx", "tls_end_to_end"])
def test_tls_and_the_token_through_nginx(tmp_path: Path, mode: str):
    token, wrong = tmp_path / "token", tmp_path / "wrong"
    token.write_text("s3cret-token\n")
    wrong.write_text("nope\n")
    nginx_key, nginx_cert = _self_signed(tmp_path, "balancer")
    options = {"token_file": str(token)}
    grpcs = None
    if mode == "tls_end_to_end":
        key, cert = _self_signed(tmp_path, "replica")
        options |= {"tls_cert": str(cert), "tls_key": str(key)}
        grpcs = (str(cert), "localhost")
    server = GrpcServerTransport(GrpcServerConfig(port=0, **options))
    port = free_port()
    conf = render(port, [f"127.0.0.1:{server.port}"], tls=(str(nginx_cert), str(nginx_key)),
                  grpcs=grpcs)  # fmt: skip
    try:
        with EchoServer(server, chunk_shape=(4, 2)), Nginx(tmp_path / "nginx", conf, port):
            target = f"127.0.0.1:{port}"
            c = GrpcClientTransport(
                GrpcClientConfig(target=target, tls_ca=str(nginx_cert), token_file=str(token))
            )
            c.handshake(hello(), 10)
            c.send_observation(Observation(3, time.monotonic_ns(), np.zeros(2, np.float32)))
            assert c.receive(5).timestep == 3
            c.close()
            bad = GrpcClientTransport(
                GrpcClientConfig(target=target, tls_ca=str(nginx_cert), token_file=str(wrong))
            )
            with pytest.raises(Unauthenticated, match="bearer token"):
                bad.handshake(hello(), 10)
            bad.close()
    finally:
        server.close()
