"""`serve --prometheus-port`: a policy server's metrics in the Prometheus text format, served
over HTTP (`/metrics`) by the official client library (`prometheus_client`, in the `grpc`
extra), from a registry of our own.

Every series is labelled `policy` (`TYPE`, `TYPE:PATH` for a checkpoint, then `@DEVICE`) and,
where it is per session, `session` (the id the server gave the session, in its log and its
handshake reply). The series of ended sessions stay for the last `KEEP_ENDED` sessions and are
then removed, so a server that runs for weeks exposes a bounded set.

Fed by the transport's `SessionEvents` (opened, chunk, error, client report, ended) from its
own threads; prometheus_client's metrics are thread-safe, and our session table has a lock.
Round trips and idle frames are what the clients report (`ClientReport`, measured on the
robot's clock), never computed from two machines' clocks.

`Endpoint` (a registry and its HTTP server) and `check_port` serve `up --prometheus-port`
too (prometheus_run.py).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
from typing import TYPE_CHECKING, Any

from asyncinf.runtime.errors import ConfigError, FlagError
from asyncinf.transports.base import SessionEvents

if TYPE_CHECKING:
    from asyncinf.runtime.messages import ActionChunk, ClientReport, Handshake

log = logging.getLogger(__name__)

KEEP_ENDED = 32
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
# Seconds: from a fast policy on a GPU (1 ms) to a slow VLA on a CPU (10 s).
LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


def import_prometheus() -> Any:
    try:
        import prometheus_client  # noqa: PLC0415
    except ImportError:
        raise ConfigError(
            "--prometheus-port needs prometheus_client, in the grpc extra: "
            "pip install 'asyncinf[grpc]'"
        ) from None
    return prometheus_client


def policy_label(hello: Handshake) -> str:
    spec = hello.policy
    name = f"{spec.type}:{spec.path}" if spec.path else spec.type
    return f"{name}@{spec.device}" if spec.device else name


def check_port(host: str, port: int, host_flag: str = "--host") -> None:
    """--prometheus-port: in range, the library installed, the address free (before start);
    `host_flag` names the option that gave `host`."""
    from asyncinf.transports.grpc.config import check_address  # noqa: PLC0415

    if not 0 <= port <= 65535:
        raise FlagError(f"--prometheus-port={port}: must be 0..65535 (0 picks a free port)")
    import_prometheus()
    check_address(host, port, "--prometheus-port", host_flag)


class Endpoint:
    """A registry of metrics and the HTTP server that exposes it (`/metrics`)."""

    def __init__(self) -> None:
        self.registry = import_prometheus().CollectorRegistry(auto_describe=True)
        self._http: Any = None

    def serve(self, host: str, port: int) -> int:
        """Listen on `host:port` (0: a free port); returns the port."""
        prom = import_prometheus()
        try:
            self._http, _thread = prom.start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise ConfigError(
                f"--prometheus-port={port}: cannot listen on {host} ({exc.strerror})"
            ) from None
        bound = self._http.server_port
        log.info("Prometheus metrics on http://%s:%d/metrics", host, bound)
        return bound

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None


class PrometheusMetrics(Endpoint, SessionEvents):
    """A policy server's metrics; `serve(host, port)` exposes them."""

    def __init__(self) -> None:
        super().__init__()
        prom = import_prometheus()
        r, per_session = self.registry, ("policy", "session")
        self.sessions = prom.Gauge("asyncinf_sessions", "Sessions open now", ["policy"], registry=r)
        self.sessions_started = prom.Counter(
            "asyncinf_sessions_started", "Sessions accepted", ["policy"], registry=r
        )
        self.chunks = prom.Counter(
            "asyncinf_chunks", "Action chunks sent to the client", per_session, registry=r
        )
        self.errors = prom.Counter(
            "asyncinf_errors", "Errors sent to the client, by code (inference, bad_observation, "
            "protocol, ...)", [*per_session, "code"], registry=r,
        )  # fmt: skip
        self.inference = prom.Histogram(
            "asyncinf_inference_seconds", "The policy's inference time per chunk (server clock)",
            per_session, buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.roundtrip = prom.Histogram(
            "asyncinf_roundtrip_seconds", "Observation sent to chunk received, as the client "
            "measures and reports it", per_session, buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.idle_frames = prom.Gauge(
            "asyncinf_client_idle_frames", "Control ticks the robot held for want of an action, "
            "as its client reports (counted from the client's start)", per_session, registry=r,
        )  # fmt: skip
        self.idle_after_first = prom.Gauge(
            "asyncinf_client_idle_frames_after_first_chunk", "Of those, the ones after its "
            "first chunk", per_session, registry=r,
        )  # fmt: skip
        self.batch_size = prom.Histogram(
            "asyncinf_batch_size", "Observations in the model call that made each chunk "
            "(several robots' batched: --batch.max_size)", per_session,
            buckets=BATCH_BUCKETS, registry=r,
        )  # fmt: skip
        self.ticks = prom.Gauge(
            "asyncinf_client_ticks", "Control ticks, as the client reports", per_session,
            registry=r,
        )  # fmt: skip
        self._per_session = (self.chunks, self.inference, self.batch_size, self.roundtrip,
                             self.idle_frames, self.idle_after_first, self.ticks)  # fmt: skip
        self._lock = threading.Lock()
        self._policy: dict[str, str] = {}  # session -> policy label, open and recently ended
        self._error_codes: dict[str, set[str]] = {}
        self._ended: collections.deque[str] = collections.deque()

    def _labels(self, session: str) -> tuple[str, str] | None:
        with self._lock:
            policy = self._policy.get(session)
        return None if policy is None else (policy, session)

    # --- SessionEvents ---------------------------------------------------------------------

    def opened(self, session: str, hello: Handshake) -> None:
        policy = policy_label(hello)
        with self._lock:
            self._policy[session] = policy
        self.sessions.labels(policy).inc()
        self.sessions_started.labels(policy).inc()
        self.chunks.labels(policy, session)  # the series exist (at 0) from the start

    def chunk(self, session: str, chunk: ActionChunk) -> None:
        labels = self._labels(session)
        if labels is not None:
            self.chunks.labels(*labels).inc()
            self.inference.labels(*labels).observe(chunk.inference_ns / 1e9)
            self.batch_size.labels(*labels).observe(chunk.batch_size)

    def error(self, session: str, code: str) -> None:
        labels = self._labels(session)
        if labels is not None:
            with self._lock:
                self._error_codes.setdefault(session, set()).add(code)
            self.errors.labels(*labels, code).inc()

    def client_report(self, session: str, report: ClientReport) -> None:
        labels = self._labels(session)
        if labels is None:
            return
        self.idle_frames.labels(*labels).set(report.idle_frames)
        self.idle_after_first.labels(*labels).set(report.idle_frames_after_first_chunk)
        self.ticks.labels(*labels).set(report.ticks)
        roundtrip = self.roundtrip.labels(*labels)
        for ns in report.roundtrip_ns:
            roundtrip.observe(ns / 1e9)

    def ended(self, session: str) -> None:
        with self._lock:
            policy = self._policy.get(session)
            if policy is None:
                return
            self._ended.append(session)
            gone = self._ended.popleft() if len(self._ended) > KEEP_ENDED else None
            gone_policy = self._policy.pop(gone, None) if gone else None
            gone_codes = self._error_codes.pop(gone, set()) if gone else set()
        self.sessions.labels(policy).dec()
        if gone_policy is not None:
            for metric in self._per_session:
                _remove(metric, gone_policy, gone)
            for code in gone_codes:
                _remove(self.errors, gone_policy, gone, code)


def _remove(metric: Any, *labels: str) -> None:
    with contextlib.suppress(KeyError):  # never observed (no report came): nothing to remove
        metric.remove(*labels)
