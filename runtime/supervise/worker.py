"""The supervisor's children: `python -m asyncinf.runtime.supervise.worker ROLE SPEC_JSON`.

Each child talks to the supervisor over two pipes, JSON lines both ways, never pickle:
- its stdin carries commands: `{"cmd": "stop"}`, `{"cmd": "detach"}` (the server is gone: hold),
  `{"cmd": "attach", "transport": {...}}`;
  end-of-file means the supervisor is gone, which stops the child safely;
- the fd named by `--events-fd` carries events: `ready`, `beat` (sent from the main loop
  itself, so a hung loop stops beating), `holding`, `summary`, `failed`.
SIGINT and SIGTERM only record a stop request; the main loop acts on it.

Exit codes follow `asyncinf.runtime.supervise.exitcodes.ExitCode`.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import logging
import os
import signal
import sys
import threading
import time
from typing import Any, TextIO

from asyncinf.runtime.errors import ConfigError, HandshakeError, RobotError, TransportError
from asyncinf.runtime.supervise.exitcodes import ExitCode

log = logging.getLogger(__name__)

BEAT_INTERVAL_S = 0.25


class SupervisorLink:
    """The child's end of its two pipes to the supervisor."""

    def __init__(self, events_fd: int, commands: TextIO) -> None:
        os.set_blocking(events_fd, False)  # a stuck supervisor must never stall the loop
        self._events_fd = events_fd
        self.stop_requested = False
        self._attach: dict[str, Any] | None = None
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
                cmd = json.loads(line)
            except json.JSONDecodeError:
                log.error("ignoring malformed supervisor command %r", line[:200])
                continue
            if cmd.get("cmd") == "attach":
                self._attach = cmd["transport"]
            elif cmd.get("cmd") == "detach":
                self.detach_requested = True
            elif cmd.get("cmd") == "stop":
                self.stop_requested = True
        log.info("supervisor link closed: stopping")
        self.stop_requested = True

    def take_attach(self) -> dict[str, Any] | None:
        spec, self._attach = self._attach, None
        return spec

    def emit(self, event: str, **fields: Any) -> None:
        line = json.dumps({"event": event, "pid": os.getpid(), **fields}) + "\n"
        try:
            os.write(self._events_fd, line.encode())
        except BlockingIOError:
            log.debug("supervisor not reading events; dropped %s", event)
        except BrokenPipeError:
            self.stop_requested = True

    def beat(self, **fields: Any) -> None:
        now = time.monotonic()
        if now - self._last_beat >= BEAT_INTERVAL_S:
            self._last_beat = now
            self.emit("beat", **fields)


def _fail(link: SupervisorLink, code: ExitCode, message: str) -> int:
    log.error("%s", message)
    link.emit("failed", code=int(code), message=message)
    return int(code)


def run_client(spec: dict[str, Any], link: SupervisorLink) -> int:
    from asyncinf.robots.robot import make_robot  # noqa: PLC0415
    from asyncinf.runtime.client import ClientConfig, ClientFailure, RobotClient  # noqa: PLC0415
    from asyncinf.runtime.messages import PolicySpec  # noqa: PLC0415
    from asyncinf.transports.factory import open_client  # noqa: PLC0415

    try:
        robot = make_robot(spec["robot"]["type"], spec["robot"].get("options", {}))
        config = ClientConfig(**spec["client"])
    except ConfigError as exc:
        return _fail(link, ExitCode.CONFIG_ERROR, str(exc))
    metrics = open(spec["metrics_path"], "w") if spec.get("metrics_path") else None  # noqa: PTH123, SIM115
    on_tick = (lambda rec: metrics.write(json.dumps(rec) + "\n")) if metrics else None
    client = RobotClient(
        robot, config, PolicySpec(**spec["policy"]), on_tick, robot_type=spec["robot"]["type"]
    )
    try:
        robot.connect()
    except (RobotError, OSError) as exc:
        return _fail(link, ExitCode.ROBOT_ERROR, f"robot connection failed: {exc}")
    code = ExitCode.OK
    try:
        try:
            client.attach(open_client(spec["transport"]))
        except HandshakeError as exc:
            return _fail(link, ExitCode.CONFIG_ERROR, f"server refused the session: {exc}")
        except (TransportError, TimeoutError) as exc:
            return _fail(link, ExitCode.RUNTIME_FAILURE, f"cannot reach the server: {exc}")
        link.emit(
            "ready",
            joints=robot.joint_names,
            reply_shapes=client.reply.image_shapes,
            actions_per_chunk=client.chunk_size,
        )

        def service() -> bool:
            """Between ticks: supervisor commands and the heartbeat."""
            if link.detach_requested:
                link.detach_requested = False
                client.detach("the supervisor saw the server exit")
            new = link.take_attach()
            if new is not None:
                client.detach("replaced by the supervisor")
                try:
                    client.attach(open_client(new))
                    log.info("attached to a new server; resuming")
                except (TransportError, TimeoutError) as exc:
                    log.error("cannot attach to the new server: %s; holding", exc)
            s = client.stats
            link.beat(
                ticks=s.ticks,
                actions=s.actions_executed,
                idle=s.idle_frames,
                queue=len(client.queue),
                chunks=s.chunks_received,
                errors=s.errors,
                attached=client.transport is not None,
                roundtrip_ms=s.roundtrip_ns[-1] / 1e6 if s.roundtrip_ns else None,
            )
            return link.stop_requested

        try:
            client.run(should_stop=service)
        except ClientFailure as exc:
            code = ExitCode(_fail(link, ExitCode.RUNTIME_FAILURE, str(exc)))
        except RobotError as exc:  # e.g. a motor that stopped answering after its retries
            code = ExitCode(_fail(link, ExitCode.RUNTIME_FAILURE, f"robot failed: {exc}"))
        # The loop has finished its tick: nothing commands the robot from here on.
        last = None if client.last_target is None else client.last_target.tolist()
        link.emit("holding", target=last, joints=robot.joint_names)
    finally:
        robot.disconnect()
        transport_stats = {}
        if client.transport is not None:
            transport_stats = client.transport.stats()
            client.transport.close()
        if metrics:
            metrics.close()
    summary = client.stats.summary(config.fps, client.chunk_size)
    if "bytes_per_observation" in transport_stats:
        summary["bytes_per_observation"] = transport_stats["bytes_per_observation"]
    summary["transport"] = transport_stats
    link.emit("summary", summary=summary)
    return int(code)


def run_server(spec: dict[str, Any], link: SupervisorLink) -> int:
    from asyncinf.runtime.messages import Handshake, PolicySpec  # noqa: PLC0415
    from asyncinf.runtime.server import PolicyCache, PolicyServer, ServerConfig  # noqa: PLC0415
    from asyncinf.transports.factory import open_server  # noqa: PLC0415

    try:
        config = ServerConfig(**spec.get("server", {}))
    except ConfigError as exc:
        return _fail(link, ExitCode.CONFIG_ERROR, str(exc))
    cache = PolicyCache()
    preload = spec.get("preload")
    if preload is not None:
        preload = dict(preload, policy=PolicySpec(**preload["policy"]))
        preload["cameras"] = {k: tuple(v) for k, v in preload["cameras"].items()}
        failure = cache.preload(Handshake(**preload))
        if failure is not None:
            return _fail(link, ExitCode.POLICY_LOAD_ERROR, f"policy load failed: {failure}")
    with open_server(spec["transport"]) as transport:
        link.emit("ready", policy=cache.info())
        server = PolicyServer(
            cache, config, on_beat=lambda: link.beat(chunks=server.chunks_published)
        )
        server.serve(transport, should_stop=lambda: link.stop_requested)
    return int(ExitCode.OK)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="asyncinf-worker")
    parser.add_argument("role", choices=("client", "server"))
    parser.add_argument("spec", help="JSON spec written by the supervisor")
    parser.add_argument("--events-fd", type=int, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=os.environ.get("ASYNCINF_LOG_LEVEL", "INFO"),
        format=f"%(asctime)s %(levelname)-7s {args.role}[%(process)d] %(name)s: %(message)s",
    )
    # SIGABRT from a supervisor that found this process hung dumps every thread's stack.
    faulthandler.enable()
    link = SupervisorLink(args.events_fd, sys.stdin)
    spec = json.loads(args.spec)
    return (run_client if args.role == "client" else run_server)(spec, link)


if __name__ == "__main__":
    sys.exit(main())
