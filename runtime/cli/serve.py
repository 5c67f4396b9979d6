"""`asyncinf serve`: the policy server for clients on other machines, over gRPC."""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import Annotated, Any

import typer

from asyncinf.runtime.config import build, parse_dotted_args, parse_value
from asyncinf.runtime.errors import ConfigError
from asyncinf.runtime.supervise.exitcodes import ExitCode

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
) -> None:
    # fmt: on
    """Serve a policy to robot clients (`asyncinf up --remote HOST:PORT`) until SIGTERM/Ctrl-C.

    The policy is loaded once per (type, path, device) and kept across client sessions:
    either now, from --policy.type/--policy.path/--policy.device plus the robot it will
    drive (--robot.type and its options, used only for joint and camera names; the robot
    is not connected), or when the first client's handshake asks for it.

    One client at a time: a second concurrent client is refused (RESOURCE_EXHAUSTED) with
    the active session named. Any GrpcServerConfig field is accepted as --grpc.NAME=VALUE.
    """
    from asyncinf.transports.grpc import GrpcServerConfig, open_server  # noqa: PLC0415

    try:
        dotted = parse_dotted_args(ctx.args)
        grpc_opts = {
            "host": host, "port": port, "tls_cert": tls_cert and str(tls_cert),
            "tls_key": tls_key and str(tls_key), "token_file": token_file and str(token_file),
            **dotted.pop("grpc", {}),
        }  # fmt: skip
        build(GrpcServerConfig, grpc_opts, prefix="grpc.")  # validate before binding
        preload = _preload_hello(dotted)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(ExitCode.CONFIG_ERROR) from None
    raise typer.Exit(run_server(open_server, grpc_opts, preload))


def _preload_hello(dotted: dict[str, dict[str, str]]) -> Any:
    """The Handshake to load the policy with at start, when the flags say enough for one."""
    from asyncinf.robots.robot import make_robot  # noqa: PLC0415
    from asyncinf.runtime.messages import Handshake, PolicySpec  # noqa: PLC0415

    policy = {k: parse_value(v) for k, v in dotted.pop("policy", {}).items()}
    robot = {k: parse_value(v) for k, v in dotted.pop("robot", {}).items()}
    top = {k: parse_value(v) for k, v in dotted.pop("", {}).items()}
    if dotted:
        raise ConfigError(f"--{next(iter(dotted))}.* options are not known to serve")
    if not policy:
        return None
    if "type" not in robot:
        raise ConfigError(
            "--policy.* given without --robot.type: the server needs the robot's joint and "
            "camera names to load a policy before a client connects (or omit --policy.*)"
        )
    robot_type = str(robot.pop("type"))
    built = make_robot(robot_type, robot)
    spec = PolicySpec(
        **{k: str(policy.pop(k)) for k in ("type", "path", "device") if k in policy},
        actions_per_chunk=int(top.pop("actions_per_chunk", 0)),
        options=policy,
    )
    return Handshake(
        built.joint_names,
        dict(built.camera_shapes),
        spec,
        float(top.pop("fps", 30)),
        robot_type=robot_type,
    )


def run_server(open_server, grpc_opts: dict[str, Any], preload: Any) -> int:
    from asyncinf.runtime.server import PolicyCache, PolicyServer  # noqa: PLC0415
    from asyncinf.runtime.supervise import sdnotify  # noqa: PLC0415

    stop = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, _frame: stop.append(signum))
    cache = PolicyCache()
    if preload is not None:
        failure = cache.preload(preload)
        if failure is not None:  # a boot error: no restart loop
            typer.echo(f"error: policy load failed: {failure}", err=True)
            return int(ExitCode.POLICY_LOAD_ERROR)
    with open_server(grpc_opts) as transport:
        log.info("serving on %s:%d", grpc_opts["host"], transport.port)
        sdnotify.notify("READY=1", f"STATUS=serving on port {transport.port}")
        PolicyServer(cache, on_beat=sdnotify.watchdog_ping).serve(transport, lambda: bool(stop))
        sdnotify.notify("STOPPING=1")
    return int(ExitCode.INTERRUPTED if signal.SIGINT in stop else ExitCode.OK)
