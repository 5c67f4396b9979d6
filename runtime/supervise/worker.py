"""The supervisor's children: `python -m asyncinf.runtime.supervise.worker ROLE SPEC_JSON`.

What travels on the two pipes, and how, is `protocol.py`; what the spec holds is `specs.py`.
SIGINT and SIGTERM only record a stop request; the main loop acts on it.

Exit codes follow `asyncinf.runtime.supervise.exitcodes.ExitCode`.
"""

from __future__ import annotations

import argparse
import faulthandler
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

from asyncinf.runtime.errors import (
    ConfigError,
    HandshakeError,
    PayloadTooLarge,
    RobotError,
    SessionBusy,
    TransportError,
)
from asyncinf.runtime.supervise import protocol
from asyncinf.runtime.supervise.exitcodes import ExitCode
from asyncinf.runtime.supervise.metrics_file import MetricsFile
from asyncinf.runtime.supervise.protocol import Command, Role
from asyncinf.runtime.supervise.specs import ClientSpec, ServerSpec
from asyncinf.transports.counters import ClientCounters, NoCounters
from asyncinf.transports.factory import TransportSpec

log = logging.getLogger(__name__)

BEAT_INTERVAL_S = 0.25
BUSY_BACKOFF_S = (0.25, 2.0)  # first and longest wait between handshakes to a busy server


class SupervisorLink:
    """The child's end of its two pipes to the supervisor."""

    def __init__(self, events_fd: int, commands: TextIO) -> None:
        os.set_blocking(events_fd, False)  # a stuck supervisor must never stall the loop
        self._events_fd = events_fd
        self.stop_requested = False
        self._attach: tuple[TransportSpec, float | None] | None = None
        self.detach_requested = False
        self._last_beat = 0.0
        threading.Thread(target=self._read, args=(commands,), daemon=True).start()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.stop_requested = True

    def _read(self, commands: TextIO) -> None:
        for line in commands:
            try:
                cmd, transport, timeout_s = protocol.decode_command(line)
            except (ValueError, KeyError, TypeError):
                log.error("ignoring malformed supervisor command %r", line[:200])
                continue
            if cmd is Command.ATTACH and transport is not None:
                self._attach = (transport, timeout_s)
            elif cmd is Command.DETACH:
                self.detach_requested = True
            elif cmd is Command.STOP:
                self.stop_requested = True
        log.info("supervisor link closed: stopping")
        self.stop_requested = True

    def take_attach(self) -> tuple[TransportSpec, float | None] | None:
        spec, self._attach = self._attach, None
        return spec

    def emit(self, event: protocol.Event) -> None:
        try:
            os.write(self._events_fd, protocol.encode_event(event, os.getpid()))
        except BlockingIOError:
            log.debug("supervisor not reading events; dropped %s", type(event).__name__)
        except BrokenPipeError:
            self.stop_requested = True

    def beat(self, build: Callable[[], protocol.Event], now: bool = False) -> None:
        """Emit the beat `build()` makes, at most every BEAT_INTERVAL_S (or `now`)."""
        t = time.monotonic()
        if now or t - self._last_beat >= BEAT_INTERVAL_S:
            self._last_beat = t
            self.emit(build())


def _fail(link: SupervisorLink, code: ExitCode, message: str) -> int:
    log.error("%s", message)
    link.emit(protocol.Failed(code=int(code), message=message))
    return int(code)


def attach_retrying(client, spec: TransportSpec, busy_s: float, timeout_s: float | None) -> None:
    """Open `spec` and handshake. A busy server (another session) is asked again, with
    backoff, until `busy_s` has passed; then SessionBusy is raised. With `timeout_s`, the
    whole attempt ends by then (else each handshake has --handshake_timeout_s). A transport
    whose handshake failed is closed."""
    from asyncinf.transports.factory import open_client  # noqa: PLC0415

    start = time.monotonic()
    backoff_s, longest_s = BUSY_BACKOFF_S
    while True:
        transport = open_client(spec)
        left = None if timeout_s is None else max(0.1, start + timeout_s - time.monotonic())
        try:
            client.attach(transport, timeout_s=left)
        except SessionBusy as exc:
            transport.close()
            wait_s = min(backoff_s, start + busy_s - time.monotonic())
            if wait_s <= 0:
                raise SessionBusy(f"{exc} (still busy after {busy_s:g} s of retries)") from None
            log.info("%s; asking again in %.2f s", exc, wait_s)
            time.sleep(wait_s)  # a retry backoff, not a wait on another process
            backoff_s = min(2 * backoff_s, longest_s)
        except BaseException:
            transport.close()
            raise
        else:
            return


def run_client(spec: ClientSpec, link: SupervisorLink) -> int:
    from asyncinf.robots.robot import make_robot, policy_robot_type  # noqa: PLC0415
    from asyncinf.runtime.client import ClientFailure, RobotClient  # noqa: PLC0415

    try:
        robot = make_robot(spec.robot.type, spec.robot.options)
    except ConfigError as exc:
        return _fail(link, ExitCode.CONFIG_ERROR, str(exc))
    metrics = MetricsFile(spec.metrics_path, spec.metrics_max_mb) if spec.metrics_path else None
    on_tick = metrics.write if metrics else None
    client = RobotClient(
        robot, spec.client, spec.policy, on_tick, robot_type=policy_robot_type(spec.robot.type)
    )
    try:
        robot.connect()
    except (RobotError, OSError) as exc:
        return _fail(link, ExitCode.ROBOT_ERROR, f"robot connection failed: {exc}")
    code = ExitCode.OK
    try:
        try:
            attach_retrying(client, spec.transport, spec.busy_retry_s, None)
        except SessionBusy as exc:
            return _fail(link, ExitCode.SERVER_BUSY, str(exc))
        except HandshakeError as exc:
            return _fail(link, ExitCode.CONFIG_ERROR, f"server refused the session: {exc}")
        except (TransportError, TimeoutError) as exc:
            return _fail(link, ExitCode.RUNTIME_FAILURE, f"cannot reach the server: {exc}")
        link.emit(
            protocol.ClientReady(
                actions_per_chunk=client.chunk_size,
                joints=robot.joint_names,
                reply_shapes={k: list(v) for k, v in client.reply.image_shapes.items()},
            )
        )

        def beat() -> protocol.ClientBeat:
            s = client.stats
            return protocol.ClientBeat(
                ticks=s.ticks,
                actions=s.actions_executed,
                idle=s.idle_frames,
                queue=len(client.queue),
                chunks=s.chunks_received,
                errors=s.errors,
                attached=client.transport is not None,
                roundtrip_ms=s.roundtrip_ns.last / 1e6 if s.roundtrip_ns.count else None,
                hold_s=round(client.holds.current_s(time.monotonic_ns()), 3),
                hold_reason=client.holds.reason,
                held_s=round(client.holds.held_s, 3),
            )

        def service() -> bool:
            """Between ticks: supervisor commands and the heartbeat."""
            if link.detach_requested:
                link.detach_requested = False
                client.detach("the supervisor saw the server exit")
            new = link.take_attach()
            if new is not None:
                target, timeout_s = new
                client.detach("replaced by the supervisor")
                link.beat(beat, now=True)  # the handshake below may take up to timeout_s
                try:
                    attach_retrying(client, target, timeout_s or 0.0, timeout_s)
                    log.info("attached to the server anew; resuming")
                except (TransportError, TimeoutError) as exc:
                    log.error("cannot attach to the server: %s; holding", exc)
            link.beat(beat)
            return link.stop_requested

        try:
            client.run(should_stop=service)
        except ClientFailure as exc:
            code = ExitCode(_fail(link, ExitCode.RUNTIME_FAILURE, str(exc)))
        except RobotError as exc:  # e.g. a motor that stopped answering after its retries
            code = ExitCode(_fail(link, ExitCode.RUNTIME_FAILURE, f"robot failed: {exc}"))
        except PayloadTooLarge as exc:  # the frames the policy asked for outgrow their slot
            code = ExitCode(_fail(link, ExitCode.CONFIG_ERROR, str(exc)))
        # The loop has finished its tick: nothing commands the robot from here on.
        last = None if client.last_target is None else client.last_target.tolist()
        link.emit(protocol.Holding(target=last, joints=robot.joint_names))
    finally:
        robot.disconnect()
        counters: ClientCounters = NoCounters()
        if client.transport is not None:
            counters = client.transport.stats()
            client.transport.close()
        if metrics:
            metrics.close()
    summary = client.stats.summary(
        spec.client.fps, client.chunk_size, counters, client.holds.summary()
    )
    link.emit(protocol.Summary(summary=summary))
    return int(code)


def leave_a_core_for_the_client() -> None:
    """Cap the co-located server's OpenMP threads (torch's) at one fewer than the cores.

    OpenMP threads wait for each other at every operator. With as many as there are cores,
    one of them shares a core with the control loop and the whole operator waits for it to be
    scheduled again: on 2 cores a tiny Diffusion's inference went from 63 ms alone to 466 ms
    beside the client, and 94 ms with one thread. Read by torch when it starts, so set before
    the policy loads; a value the user set is kept.
    """
    cores = len(os.sched_getaffinity(0))
    if cores > 1:
        os.environ.setdefault("OMP_NUM_THREADS", str(cores - 1))


def run_server(spec: ServerSpec, link: SupervisorLink) -> int:
    from asyncinf.runtime.supervise.serving import serve_policy  # noqa: PLC0415

    leave_a_core_for_the_client()  # this worker is the server of `up --local`: same host
    return serve_policy(
        spec,
        on_ready=lambda _transport, cache: link.emit(protocol.ServerReady(policy=cache.info())),
        on_beat=lambda server: link.beat(
            lambda: protocol.ServerBeat(server.chunks_published, server.batch_sizes())
        ),
        should_stop=lambda: link.stop_requested,
        fail=lambda code, message: _fail(link, code, message),
        take_attach=lambda: next(iter(link.take_attach() or ()), None),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="asyncinf-worker")
    parser.add_argument("role", type=Role, choices=list(Role))
    parser.add_argument("spec", help="JSON spec written by the supervisor")
    parser.add_argument("--events-fd", type=int, required=True)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        format=f"%(asctime)s %(levelname)-7s {args.role.value}[%(process)d] %(name)s: %(message)s",
    )
    # SIGABRT from a supervisor that found this process hung dumps every thread's stack.
    faulthandler.enable()
    link = SupervisorLink(args.events_fd, sys.stdin)
    try:
        spec = (ClientSpec if args.role is Role.CLIENT else ServerSpec).from_json(args.spec)
    except ValueError as exc:  # a ConfigError, or a spec not of its declared shape
        return _fail(link, ExitCode.CONFIG_ERROR, str(exc))
    if isinstance(spec, ClientSpec):
        return run_client(spec, link)
    return run_server(spec, link)


if __name__ == "__main__":
    sys.exit(main())
