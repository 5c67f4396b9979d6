"""The same round trip as posix_ring.py, over iceoryx2 (an outside zero-copy IPC library).

Two publish-subscribe services carry the bytes and two event services wake the other side,
as iceoryx2's own event-driven pattern does: the sender loans a sample of exactly the
observation's S bytes, copies the payload in, sends it and notifies; the peer, woken by its
listener, takes the sample zero-copy, answers with a 50×14 float32 chunk the same way and
the sender copies the chunk out. Every wait looks for events for up to `spin_us` (as
posix_ring.py's and the shm transport's ends do: `iceoryx2` in `asyncinf bench transport`
spins as long as shm does by default), then blocks on the listener with a timeout.

The peer writes what it saw into the chunk (row 0: the observation's byte count and its
last byte), so a round trip that returned a stale or empty chunk shows as wrong, not fast.

iceoryx2 keeps its own files: node and service records under /tmp/iceoryx2/ and its
segments as /dev/shm/iox2_*. Services and nodes are named `asyncinf/<pid>-<hex>/<role>` (the
run id of our POSIX objects), so parallel runs never meet. Each side calls iceoryx2's
dead-node cleanup when it opens and when it closes: a peer whose parent was killed leaves
within POLL_S and removes the dead parent's node and services on its way out, and whatever
a run killed as a whole left behind goes when the next run opens. (iceoryx2's default
config cleans at node creation and destruction too; a user's config may not.) Only its
global segment (/dev/shm/iox2_*_node.<version>.global_mgmt, 16 B) and its empty folders
stay, as iceoryx2 means them to.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing as mp
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from asyncinf.runtime.bench.peer import spawned, spin
from asyncinf.transports.shm import names

POLL_S = 1.0  # the peer's wait between looks at whether its parent is still there
READY_S = 60.0  # how long the peer may take to start (a spawned interpreter, imports)
STOP_EVENT = 1  # peer ← sender: leave (data events use id 0)
READY_EVENT = 2  # peer → sender: my ports exist, send
OBS, CHUNK = "obs", "chunk"  # one pub/sub service and one event service each
SENDER, PEER = "sender", "peer"  # node names: asyncinf/<run>/<side>
MISSING = "iceoryx2 row needs the iceoryx2 package: pip install 'asyncinf[bench]'"


def load() -> Any:
    """The iceoryx2 module, imported only when the row runs (it is an optional extra)."""
    try:
        import iceoryx2  # noqa: PLC0415
    except ImportError:
        raise ModuleNotFoundError(MISSING) from None
    iceoryx2.set_log_level(iceoryx2.LogLevel.Error)
    return iceoryx2


def service_names(run_id: str) -> tuple[str, str]:
    """The (observation, chunk) service names of one run."""
    return tuple(f"{names.PREFIX}/{run_id}/{role}" for role in (OBS, CHUNK))


def _view(address: int, n: int) -> np.ndarray:
    """The `n` bytes of a sample at `address`, as an array over the shared memory itself.
    (`sample.payload()` gives the same through a typed Slice, at some µs more per call.)"""
    return np.frombuffer((ctypes.c_uint8 * n).from_address(address), np.uint8)


class _Ports:
    """One side's ports: a publisher + notifier for what it sends, a subscriber + listener
    for what it receives. `close` releases every port, then the node, so iceoryx2 removes
    the services once the other side has released its own (or died and been cleaned up)."""

    def __init__(
        self, iox2: Any, run_id: str, send: str, send_bytes: int, *, receive: str, spin_ns: int
    ):
        self._spin_ns = spin_ns
        svc = dict(zip((OBS, CHUNK), service_names(run_id), strict=True))
        role = SENDER if send == OBS else PEER
        self.node = (
            iox2.NodeBuilder.new()
            .name(iox2.NodeName.new(f"{names.PREFIX}/{run_id}/{role}"))
            .signal_handling_mode(iox2.SignalHandlingMode.Disabled)  # the CLI owns signals
            .create(iox2.ServiceType.Ipc)
        )
        self.node.try_cleanup_dead_nodes()  # what killed runs left behind
        self._ports: list[Any] = []
        self._services: list[Any] = []
        pub = self._service(iox2, svc[send]).publisher_builder()
        self.publisher = self._keep(
            pub.initial_max_slice_len(send_bytes)
            .allocation_strategy(iox2.AllocationStrategy.Static)
            .max_loaned_samples(1)
            .create()
        )
        self.notifier = self._keep(self._event(iox2, svc[send]).notifier_builder().create())
        self.subscriber = self._keep(
            self._service(iox2, svc[receive]).subscriber_builder().buffer_size(1).create()
        )
        self.listener = self._keep(self._event(iox2, svc[receive]).listener_builder().create())
        self.iox2 = iox2

    def _service(self, iox2: Any, name: str) -> Any:
        return self._keep_service(
            self.node.service_builder(iox2.ServiceName.new(name))
            .publish_subscribe(iox2.Slice[ctypes.c_uint8])
            .max_publishers(1)
            .max_subscribers(1)
            .max_nodes(2)
            .history_size(0)
            .subscriber_max_buffer_size(1)
            .subscriber_max_borrowed_samples(1)
            .open_or_create()
        )

    def _event(self, iox2: Any, name: str) -> Any:
        return self._keep_service(
            self.node.service_builder(iox2.ServiceName.new(name))
            .event()
            .max_notifiers(1)
            .max_listeners(1)
            .max_nodes(2)
            .open_or_create()
        )

    def _keep(self, port: Any) -> Any:
        self._ports.append(port)
        return port

    def _keep_service(self, service: Any) -> Any:
        self._services.append(service)
        return service

    def ids(self) -> tuple[str, ...]:
        """How iceoryx2's files name this side's node, ports and services."""
        return (
            str(self.node.id.value),
            *(str(p.id.value) for p in self._ports),
            *(svc.service_hash.as_str for svc in self._services),
        )

    def send(self, parts: list[np.ndarray]) -> None:
        """Loan a sample of the parts' total size, copy them in, send it, ring."""
        n = sum(p.nbytes for p in parts)
        sample = self.publisher.loan_slice_uninit(n)
        dst = _view(sample.payload_ptr, n)
        offset = 0
        for part in parts:
            np.copyto(dst[offset : offset + part.nbytes], part.reshape(-1).view(np.uint8))
            offset += part.nbytes
        del dst
        sample.assume_init().send()
        self.notifier.notify()

    def wait(self, timeout_s: float) -> list[int]:
        """The event ids that arrived within `timeout_s` (empty on timeout)."""
        got = spin(self.listener.try_wait, self._spin_ns) if self._spin_ns else None
        if not got:
            got = self.listener.timed_wait(self.iox2.Duration.from_secs_f64(timeout_s))
        return [e.id.as_value for e in got]

    def close(self) -> None:
        self.node.try_cleanup_dead_nodes()  # a killed other side's node and its services
        for port in reversed(self._ports):
            port.delete()
        self._ports.clear()
        self._services.clear()
        self.publisher = self.notifier = self.subscriber = self.listener = None
        self.node = None


def _peer(run_id: str, obs_bytes: int, chunk_shape: tuple[int, ...], spin_ns: int) -> None:
    """Child: answer each observation with a chunk until told to stop or orphaned."""
    iox2 = load()
    chunk = np.zeros(chunk_shape, np.float32)
    ports = _Ports(iox2, run_id, CHUNK, chunk.nbytes, receive=OBS, spin_ns=spin_ns)
    parent = os.getppid()
    try:
        ports.notifier.notify_with_custom_event_id(iox2.EventId.new(READY_EVENT))
        while True:
            events = ports.wait(POLL_S)
            if STOP_EVENT in events:
                return
            if not events:
                if os.getppid() != parent:
                    return  # orphaned: close() removes what the killed parent left
                continue
            sample = ports.subscriber.receive()
            if sample is None:
                continue
            obs = _view(sample.payload_ptr, sample.header.number_of_elements)  # zero-copy
            chunk[0, :2] = (obs.size, obs[-1] if obs.size else 0)
            del obs
            sample.delete()
            ports.send([chunk])
    finally:
        ports.close()


class _Sender:
    """The sender's end: `self(arrays, timeout_s)` is one round trip."""

    def __init__(self, ports: _Ports, run_id: str, chunk_shape: tuple[int, ...]):
        self._ports = ports
        self._shape = chunk_shape
        self.run_id = run_id  # names the nodes and services (service_names)
        self.ids = ports.ids()  # the sender's node, ports and services, as files name them

    def __call__(self, arrays: list[np.ndarray], timeout_s: float) -> np.ndarray:
        self._ports.send(arrays)
        if not self._ports.wait(timeout_s):
            raise TimeoutError(f"iceoryx2: no chunk within {timeout_s} s")
        sample = self._ports.subscriber.receive()
        if sample is None:
            raise RuntimeError("iceoryx2: woken for a chunk that is not there")
        n = sample.header.number_of_elements
        chunk = _view(sample.payload_ptr, n).view(np.float32).reshape(self._shape).copy()
        sample.delete()
        return chunk

    def stop(self) -> None:
        self._ports.notifier.notify_with_custom_event_id(self._ports.iox2.EventId.new(STOP_EVENT))


def _await_ready(ports: _Ports, child: mp.process.BaseProcess) -> None:
    """Until the peer says its ports exist: a sample sent before would reach nobody."""
    for _ in range(int(READY_S / POLL_S)):
        if READY_EVENT in ports.wait(POLL_S):
            ports.publisher.update_connections()
            return
        if not child.is_alive():
            raise RuntimeError(f"iceoryx2 peer exited with {child.exitcode} before it was ready")
    raise TimeoutError(f"iceoryx2 peer not ready within {READY_S} s")


@contextlib.contextmanager
def iceoryx2_ring(
    obs_bytes: int, chunk_shape: tuple[int, ...], spin_us: int = 0
) -> Iterator[_Sender]:
    """Open the services, start the peer in a spawned child, and yield the sender: each
    `sender(arrays, timeout_s)` sends the arrays' bytes (at most `obs_bytes` in all), waits
    for the chunk and returns a copy of it. Both sides spin up to `spin_us` before they
    block. Every port and node is released on the way out, also on failure, and iceoryx2
    then removes the services."""
    iox2 = load()
    run_id = names.make_run_id()
    ports = _Ports(iox2, run_id, OBS, obs_bytes, receive=CHUNK, spin_ns=spin_us * 1000)
    sender = _Sender(ports, run_id, chunk_shape)
    try:
        args = (run_id, obs_bytes, chunk_shape, spin_us * 1000)
        with spawned(_peer, args, "iceoryx2-peer", sender.stop) as child:
            _await_ready(ports, child)
            yield sender
    finally:
        ports.close()
