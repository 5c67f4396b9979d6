"""`asyncinf serve`: the policy server for clients on other machines, over gRPC."""

from __future__ import annotations

import dataclasses
import logging
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from asyncinf.runtime.cli.lerobot_flags import SERVER_FLAGS, take_server_flags
from asyncinf.runtime.config import build, group, parse_dotted_args, parse_value, refuse_unknown
from asyncinf.runtime.errors import ConfigError, FlagError
from asyncinf.runtime.supervise.exitcodes import ExitCode

if TYPE_CHECKING:
    from asyncinf.runtime.supervise.specs import ServerSpec

log = logging.getLogger(__name__)
Opt = typer.Option


# fmt: off
def serve(
    ctx: typer.Context,
    host: Annotated[str, Opt("--host", help="Address to bind; non-loopback needs --tls-cert/--token-file to be safe.")] = "127.0.0.1",
    port: Annotated[int, Opt("--port", help="TCP port (0 picks a free one and logs it).")] = 8080,
    tls_cert: Annotated[Path | None, Opt("--tls-cert", help="PEM certificate chain of this server.")] = None,
    tls_key: Annotated[Path | None, Opt("--tls-key", help="PEM private key of --tls-cert.")] = None,
    token_file: Annotated[Path | None, Opt("--token-file", help="File holding the bearer token every call must carry.")] = None,
    rtc: Annotated[bool, Opt("--rtc", help="Preload the policy for real-time chunking (--rtc.* as up takes them), so that up --remote --rtc clients use it instead of a second copy.")] = False,
    drain_timeout: Annotated[float, Opt("--drain-timeout", help="On SIGTERM: seconds the current session may go on (health NOT_SERVING, new sessions refused) before its client is told to reconnect elsewhere. Ctrl-C or a second signal stops at once.")] = 10.0,
    prometheus_port: Annotated[int | None, Opt("--prometheus-port", help="Serve Prometheus metrics over HTTP on this port of --host (/metrics; 0 picks a free one and logs it). Off by default.")] = None,
) -> None:
    # fmt: on
    """Serve a policy to robot clients (`asyncinf up --remote HOST:PORT`) until SIGTERM/Ctrl-C.

    The policy is loaded once per set of features it is built for (type, path, device,
    options, joints, cameras) and kept across client sessions: either now, from
    --policy.type/--policy.path/--policy.device plus the robot it will drive (--robot.type
    and its options, used only for joint and camera names; the robot is not connected), or
    when the first client's handshake asks for it. A client with another robot gets one
    built for it; --max_policies (default 2) bound how many stay loaded, the first always.

    Server options as `up --local` takes them, e.g. --similarity_atol=0.5; --fps and
    --actions_per_chunk shape the preload. --max_sessions=N (default 1) serves N clients at
    once, each in its own session; one more is refused (RESOURCE_EXHAUSTED, "server busy",
    which clients retry). Sessions on one policy share it, and observations waiting at once
    run in one batch where the policy takes one (tiny_torch): --batch.max_size (default
    max_sessions; 1 turns batching off) and --batch.max_wait_ms (default 2), how long the
    first may wait for company. Any GrpcServerConfig
    field is accepted as --grpc.NAME=VALUE. LeRobot's policy_server flags work as they are
    (--inference_latency and --obs_queue_timeout are noted and not needed).

    Health: the standard gRPC health service (grpc.health.v1, no token needed) says
    NOT_SERVING until the policy is loaded and warmed up, SERVING after, and NOT_SERVING
    again from SIGTERM on (the drain, bounded by --drain-timeout).

    Metrics: --prometheus-port serves sessions, chunks, errors, the clients' idle frames,
    inference, batch-size and round-trip histograms, labelled per policy and per session.
    """
    from asyncinf.runtime.supervise.plan import build_server_spec, server_options  # noqa: PLC0415
    from asyncinf.runtime.supervise.prometheus import check_port  # noqa: PLC0415
    from asyncinf.transports.factory import TransportSpec  # noqa: PLC0415
    from asyncinf.transports.grpc import GrpcServerConfig  # noqa: PLC0415
    from asyncinf.transports.grpc.config import check_bindable  # noqa: PLC0415

    try:
        if not drain_timeout >= 0:
            raise FlagError(f"--drain-timeout={drain_timeout}: must be >= 0 seconds")
        dotted = parse_dotted_args(ctx.args)
        grpc_opts = {
            "host": host, "port": port, "tls_cert": tls_cert and str(tls_cert),
            "tls_key": tls_key and str(tls_key), "token_file": token_file and str(token_file),
            **dotted.pop("grpc", {}),
        }  # fmt: skip
        # Validated, and the address tried, before the policy loads (which can take minutes).
        check_bindable(build(GrpcServerConfig, grpc_opts, prefix="grpc."))
        if prometheus_port is not None:
            check_port(host, prometheus_port)
        options = {k: parse_value(v) for k, v in dotted.pop("", {}).items()}
        take_server_flags(options)  # policy_server's names, e.g. --inference_latency
        refuse_unknown(options, server_options() | SERVER_FLAGS, FlagError)
        for name in ("robot", "policy", "batch"):  # --robot=5 is refused, not overwritten
            given = {k: parse_value(v) for k, v in dotted.pop(name, {}).items()}
            options[name] = {**group(options, name), **given}
        rtc_map = {k: parse_value(v) for k, v in dotted.pop("rtc", {}).items()}
        if rtc_map and not rtc:
            raise FlagError(f"--rtc.{next(iter(rtc_map))} given without --rtc: add --rtc")
        if rtc:
            options["rtc"] = rtc_map
        if dotted:
            raise FlagError(f"--{next(iter(dotted))}.* options are not known to serve")
        spec = build_server_spec(options)
        # As many sessions on the wire as the server loop serves at once.
        grpc_opts["max_sessions"] = spec.server.max_sessions
        grpc = build(GrpcServerConfig, grpc_opts, prefix="grpc.")
        spec = dataclasses.replace(spec, transport=TransportSpec("grpc", grpc))
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        bad_line = isinstance(exc, FlagError)
        raise typer.Exit(ExitCode.USAGE if bad_line else ExitCode.CONFIG_ERROR) from None
    raise typer.Exit(run_server(spec, drain_timeout, prometheus_port))


def run_server(
    spec: ServerSpec, drain_timeout_s: float = 0.0, prometheus_port: int | None = None
) -> int:
    from asyncinf.runtime.supervise import sdnotify, stop_signals  # noqa: PLC0415
    from asyncinf.runtime.supervise.serving import serve_policy  # noqa: PLC0415

    stop = []
    for sig in stop_signals.STOP_SIGNALS:
        signal.signal(sig, lambda signum, _frame: stop.append(signum))
    stop.extend(stop_signals.take())  # received while this command was starting

    def ready(transport: Any, _cache: object) -> None:
        log.info("serving on %s:%d", spec.transport.options.host, transport.port)
        sdnotify.notify("READY=1", f"STATUS=serving on port {transport.port}")

    def fail(code: ExitCode, message: str) -> int:  # a boot error: no restart loop
        typer.echo(f"error: {message}", err=True)
        return int(code)

    metrics = None
    if prometheus_port is not None:
        from asyncinf.runtime.supervise.prometheus import PrometheusMetrics  # noqa: PLC0415

        metrics = PrometheusMetrics()
        try:
            metrics.serve(spec.transport.options.host, prometheus_port)
        except ConfigError as exc:  # taken between the check and now
            return fail(ExitCode.CONFIG_ERROR, str(exc))
    try:
        code = serve_policy(
            spec,
            on_ready=ready,
            on_beat=lambda _server: sdnotify.watchdog_ping(),
            should_stop=lambda: bool(stop),
            fail=fail,
            drain_timeout_s=drain_timeout_s,
            # SIGTERM drains (a balancer's or Kubernetes' stop); Ctrl-C or a second signal
            # hurries.
            hurry=lambda: signal.SIGINT in stop or len(stop) > 1,
            events=metrics,
        )
    finally:
        if metrics is not None:
            metrics.close()
    if code != ExitCode.OK:
        return code
    sdnotify.notify("STOPPING=1")
    return int(ExitCode.INTERRUPTED if signal.SIGINT in stop else ExitCode.OK)
