"""A handshake whose stream is reset before any answer, as a balancer resets it when the
replica it picked goes away (nginx: INTERNAL, "Stream removed"), is retried like an
unreachable server: the robot lands on a live replica instead of giving up."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent import futures

import grpc
import numpy as np
import pytest

from asyncinf.runtime.errors import PeerGone
from asyncinf.runtime.messages import ActionChunk, Observation
from asyncinf.runtime.testing import hello
from asyncinf.transports.grpc.service import SESSION_METHOD
from asyncinf.transports.grpc.testing import EchoReplica, fast_client

pytestmark = pytest.mark.faults


class ResettingProxy:
    """A real gRPC server in front of `upstream_port` that resets the first `resets` session
    streams with INTERNAL before forwarding anything, then relays the bytes both ways."""

    def __init__(self, upstream_port: int, resets: int) -> None:
        self.resets_left = resets
        self._lock = threading.Lock()
        self._upstream = grpc.insecure_channel(f"127.0.0.1:{upstream_port}")
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        handler = grpc.stream_stream_rpc_method_handler(self._session)  # bytes, undecoded
        service, method = SESSION_METHOD.strip("/").split("/")
        self._server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler(service, {method: handler})]
        )
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()

    def _session(self, requests: Iterator[bytes], context: grpc.ServicerContext):
        with self._lock:
            reset = self.resets_left > 0
            self.resets_left -= reset
        if reset:
            context.abort(grpc.StatusCode.INTERNAL, "Stream removed (RST_STREAM)")
        call = self._upstream.stream_stream(SESSION_METHOD)(
            requests, metadata=context.invocation_metadata()
        )
        context.add_callback(call.cancel)
        yield from call

    def close(self) -> None:
        self._server.stop(0).wait(5)
        self._upstream.close()


@pytest.fixture
def replica():
    r = EchoReplica()
    yield r
    r.close()


def test_a_handshake_reset_before_any_answer_is_retried(replica):
    proxy = ResettingProxy(replica.port, resets=2)
    client = fast_client(proxy.port)
    try:
        client.handshake(hello(), 10)  # the third stream gets through
        assert proxy.resets_left == 0
        client.send_observation(Observation(3, time.monotonic_ns(), np.zeros(2, np.float32)))
        msg = client.receive(5)
        assert isinstance(msg, ActionChunk) and msg.timestep == 3
    finally:
        client.close()
        proxy.close()


def test_resets_past_the_connect_timeout_give_up_naming_the_target(replica):
    proxy = ResettingProxy(replica.port, resets=10_000)
    client = fast_client(proxy.port, connect_timeout_s=1.0)
    try:
        with pytest.raises(PeerGone, match=f"cannot reach 127.0.0.1:{proxy.port} within 1 s"):
            client.handshake(hello(), 10)
    finally:
        client.close()
        proxy.close()
