"""`asyncinf up`: run the robot client and (with --local) the policy server, supervised."""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from asyncinf.runtime.cli.lerobot_flags import CLIENT_FLAGS, take_client_flags
from asyncinf.runtime.config import (
    load_file,
    parse_dotted_args,
    parse_value,
    refuse_unknown,
    writable_file,
)
from asyncinf.runtime.errors import ConfigError, FlagError
from asyncinf.runtime.supervise.exitcodes import ExitCode
from asyncinf.runtime.supervise.metrics_file import DEFAULT_MAX_MB

if TYPE_CHECKING:
    from asyncinf.runtime.supervise.plan import RunPlan
    from asyncinf.runtime.supervise.specs import ClientSpec
    from asyncinf.transports.grpc import GrpcClientConfig

log = logging.getLogger(__name__)

# Robot and policy options arrive as LeRobot-style --robot.x / --policy.y extra arguments.
DOTTED_FLAGS = {"allow_extra_args": True, "ignore_unknown_options": True}
Opt = typer.Option


# fmt: off
def up(
    ctx: typer.Context,
    local: Annotated[bool, Opt("--local", help="Run the policy server here, over shared memory.")] = False,
    remote: Annotated[str | None, Opt("--remote", metavar="HOST:PORT", help="Use the policy server at HOST:PORT over gRPC.")] = None,
    config: Annotated[Path | None, Opt("--config", help="YAML or TOML file of options; flags override it.")] = None,
    robots: Annotated[Path | None, Opt("--robots", help="--local: YAML file naming several robots (name, type, options), each driven by its own client, all served by one server.")] = None,
    fps: Annotated[float | None, Opt("--fps", help="Control-loop rate (default 30).")] = None,
    actions_per_chunk: Annotated[int | None, Opt("--actions_per_chunk", help="Actions per chunk (default: all the policy returns per call; 50 for the built-in ones).")] = None,
    chunk_size_threshold: Annotated[float | None, Opt("--chunk_size_threshold", help="Send an observation when queue/chunk <= this; 0 = synchronous (default 0.5).")] = None,
    aggregate_fn_name: Annotated[str | None, Opt("--aggregate_fn_name", help="weighted_average (default), latest_only, average, conservative, or module:function.")] = None,
    task: Annotated[str | None, Opt("--task", help="Language instruction for the policy.")] = None,
    duration: Annotated[float | None, Opt("--duration", help="Stop after this many seconds (default until Ctrl-C).")] = None,
    summary_json: Annotated[Path | None, Opt("--summary-json", help="Write the end-of-run summary here.")] = None,
    metrics: Annotated[Path | None, Opt("--metrics", help="Write one JSON line per control tick here (--robots: one file per robot, ticks.jsonl → ticks.NAME.jsonl).")] = None,
    metrics_max_mb: Annotated[float, Opt("--metrics-max-mb", help=f"Cap --metrics on disk: at half this size the file moves to PATH.1 (replacing the last one) and a new one starts (default {DEFAULT_MAX_MB:g}).")] = DEFAULT_MAX_MB,
    plot: Annotated[Path | None, Opt("--plot", help="Draw queue size over time into this PNG (--robots: one per robot, queue.NAME.png).")] = None,
    start_timeout: Annotated[float, Opt("--start-timeout", help="Seconds each process may take to become ready.")] = 300.0,
    stop_timeout: Annotated[float, Opt("--stop-timeout", help="Seconds the whole client-first stop may take.")] = 10.0,
    hang_timeout: Annotated[float, Opt("--hang-timeout", help="Seconds without a heartbeat before a process counts as hung.")] = 10.0,
    progress_timeout: Annotated[float, Opt("--progress-timeout", help="Seconds the robot may hold (no action) while both processes are alive before the session is recovered: re-handshake, then server restart, then exit 6 (--robots: that robot re-handshakes, then its client alone stops). Raise it for a policy slower than this per chunk.")] = 5.0,
    max_restarts: Annotated[int, Opt("--max-restarts", help="Server restarts allowed after it was ready.")] = 3,
    restart_backoff: Annotated[float, Opt("--restart-backoff", help="Seconds before the first restart; doubles each time.")] = 1.0,
    status_json: Annotated[Path | None, Opt("--status-json", help="Keep this JSON status file current (read it with `asyncinf status`).")] = None,
    prometheus_port: Annotated[int | None, Opt("--prometheus-port", help="Serve the run's metrics (state, restarts, each robot's ticks, idle frames, queue, round trip, holds) for Prometheus over HTTP on this port (/metrics; 0 picks a free one and logs it). Off by default.")] = None,
    prometheus_host: Annotated[str, Opt("--prometheus-host", help="Address --prometheus-port listens on: 127.0.0.1 (this host only, the default) or 0.0.0.0 (a Prometheus on another host).")] = "127.0.0.1",
    token_file: Annotated[Path | None, Opt("--token-file", help="--remote: file holding the server's bearer token.")] = None,
    tls_ca: Annotated[Path | None, Opt("--tls-ca", help="--remote: PEM CA that signed the server's certificate (turns TLS on).")] = None,
    image_codec: Annotated[str | None, Opt("--image_codec", help="--remote: raw or jpeg (default raw).")] = None,
    jpeg_quality: Annotated[int | None, Opt("--jpeg_quality", help="--remote: JPEG quality 1-100 (default 90).")] = None,
    rtc: Annotated[bool | None, Opt("--rtc/--no-rtc", help="Real-time chunking: tell the policy the inference delay and the queued tail, so its chunk agrees with it (smolvla, pi0, pi05, scripted); tune it with --rtc.execution_horizon, --rtc.max_guidance_weight, --rtc.prefix_attention_schedule.")] = None,
) -> None:
    # fmt: on
    """Run a policy on a robot asynchronously, until --duration or Ctrl-C.

    Robot options use LeRobot's flags: --robot.type=sim (the default) or so101_follower,
    with --robot.port, --robot.id and --robot.cameras='{front: {type: opencv, index_or_path: 0}}'.

    Policy options: --policy.type=scripted (the default), tiny_torch, or any LeRobot type
    (act, diffusion, smolvla, pi0, …) with --policy.path=CHECKPOINT_DIR_OR_HUB_ID;
    --policy.device (cpu, cuda, cuda:N, mps, xpu), and any option of the policy, e.g.
    --policy.latency_ms=100 or --policy.rename_map='{"observation.images.front": ...}'.

    Any other client or server option as --name=value, e.g. --max_consecutive_errors=5,
    --resend_after_s=3, --similarity_atol=0.5, --image_fit=center_crop (frames of another
    aspect ratio than the policy's). Shared-memory sizes: --shm.obs_slot_mb.

    LeRobot's robot_client flags work as they are: --server_address (= --remote),
    --policy_type, --pretrained_name_or_path, --policy_device, --debug_visualize_queue_size.
    Exit codes are listed in the README: a run that held the robot for more than half its
    time, or whose recovery failed, exits 6; a server still busy after --start-timeout, 75.
    """
    from asyncinf.runtime.supervise.plan import build_plan, merge, up_options  # noqa: PLC0415
    from asyncinf.runtime.supervise.supervisor import SupervisorConfig  # noqa: PLC0415
    from asyncinf.transports.factory import TransportSpec  # noqa: PLC0415

    try:
        dotted = {
            g: {k: parse_value(v) for k, v in kv.items()}
            for g, kv in parse_dotted_args(ctx.args).items()
        }
        extra = dotted.pop("", {})
        lerobot = take_client_flags(extra, dotted)  # robot_client's names, e.g. --server_address
        refuse_unknown(extra, up_options() | CLIENT_FLAGS, FlagError)
        if remote is not None and lerobot.get("remote", remote) != remote:
            raise FlagError(f"--remote={remote} and --server_address={lerobot['remote']} disagree")
        remote = remote or lerobot.get("remote")
        plot = plot or (Path(lerobot["plot"]) if "plot" in lerobot else None)
        if local == (remote is not None):
            raise FlagError("choose exactly one of --local or --remote HOST:PORT")
        options: dict[str, Any] = load_file(str(config)) if config else {}
        if "rtc" in dotted and not rtc:
            raise FlagError(f"--rtc.{next(iter(dotted['rtc']))} given without --rtc: add --rtc")
        flags = {
            "fps": fps,
            "actions_per_chunk": actions_per_chunk,
            "chunk_size_threshold": chunk_size_threshold,
            "aggregate_fn_name": aggregate_fn_name,
            "task": task,
        }
        if rtc is False or (rtc and not isinstance(options.get("rtc"), dict)):
            flags["rtc"] = rtc  # --rtc keeps a file's rtc map (which is on)
        if not metrics_max_mb > 0:
            raise FlagError(f"--metrics-max-mb={metrics_max_mb}: must be > 0 (megabytes)")
        prometheus = None
        if prometheus_port is not None:
            from asyncinf.runtime.supervise.prometheus import check_port  # noqa: PLC0415

            check_port(prometheus_host, prometheus_port, "--prometheus-host")
            prometheus = (prometheus_host, prometheus_port)
        grpc_opts = dotted.pop("grpc", {})
        options = merge(options, {**{k: v for k, v in flags.items() if v is not None}, **extra})
        options = merge(options, dotted)
        transport = None
        if remote is not None:
            given = {"token_file": token_file, "tls_ca": tls_ca, "image_codec": image_codec,
                     "jpeg_quality": jpeg_quality}  # fmt: skip
            grpc_opts = {"target": remote, **grpc_opts}
            grpc_opts.update({k: str(v) if isinstance(v, Path) else v
                              for k, v in given.items() if v is not None})  # fmt: skip
            transport = TransportSpec("grpc", _grpc_client_config(grpc_opts))
        fleet = None
        if robots is not None:
            if not local:
                raise FlagError("--robots needs --local (start one `up --remote` per robot)")
            from asyncinf.runtime.supervise.robots_file import load_robots  # noqa: PLC0415

            fleet = load_robots(str(robots))
        plan = build_plan(options, remote=transport, robots=fleet)
        names = robot_names(plan)
        outputs = {"--summary-json": [summary_json], "--status-json": [status_json],
                   "--metrics": [robot_file(metrics, n) for n in names] if metrics else [],
                   "--plot": [robot_file(plot, n) for n in names] if plot else []}  # fmt: skip
        for flag, paths in outputs.items():
            for path in paths:
                if path is not None:
                    writable_file(flag, path)
        sup_config = SupervisorConfig(
            start_timeout_s=start_timeout,
            stop_timeout_s=stop_timeout,
            hang_timeout_s=hang_timeout,
            progress_timeout_s=progress_timeout,
            max_restarts=max_restarts,
            restart_backoff_s=restart_backoff,
            duration_s=duration,
            status_json=str(status_json) if status_json else None,
        )
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        bad_line = isinstance(exc, FlagError)
        raise typer.Exit(ExitCode.USAGE if bad_line else ExitCode.CONFIG_ERROR) from None
    raise typer.Exit(
        run_supervised(plan, sup_config, summary_json, metrics, plot, metrics_max_mb, prometheus)
    )


def _grpc_client_config(options: dict[str, Any]) -> GrpcClientConfig:
    """The gRPC client options, validated here, before any process starts."""
    from asyncinf.runtime.config import build  # noqa: PLC0415
    from asyncinf.transports.grpc import GrpcClientConfig  # noqa: PLC0415

    return build(GrpcClientConfig, options, prefix="grpc.")


def robot_names(plan: RunPlan) -> list[str]:
    """The robots' names under --robots, else [""] (the one robot)."""
    return [name for name, _ in plan.robots] or [""]


def robot_file(path: Path, name: str) -> Path:
    """Robot `name`'s own file of a per-robot output (--metrics, --plot) under --robots:
    ticks.jsonl → ticks.left.jsonl; the path itself for the one robot."""
    return path.with_name(f"{path.stem}.{name}{path.suffix}") if name else path


def _with_metrics(plan: RunPlan, metrics: Path, max_mb: float) -> RunPlan:
    """Each client writes its ticks to its own file (`max_mb` caps each)."""

    def spec(client: ClientSpec, name: str) -> ClientSpec:
        path = str(robot_file(metrics, name))
        return dataclasses.replace(client, metrics_path=path, metrics_max_mb=max_mb)

    return dataclasses.replace(
        plan,
        client=spec(plan.client, robot_names(plan)[0]),
        robots=tuple((name, spec(client, name)) for name, client in plan.robots),
    )


def run_supervised(
    plan: RunPlan,
    sup_config,
    summary_json,
    metrics,
    plot,
    metrics_max_mb=DEFAULT_MAX_MB,
    prometheus: tuple[str, int] | None = None,
) -> int:
    """Run the plan under a supervisor; print and write what was asked for, serve the metrics
    at `prometheus` (host, port); return the code."""
    with tempfile.TemporaryDirectory(prefix="asyncinf-ticks-") as tmp:
        if plot and not metrics:  # the plot is drawn from the ticks: keep them meanwhile
            metrics = Path(tmp) / "ticks.jsonl"
        if metrics:
            plan = _with_metrics(plan, metrics, metrics_max_mb)
        code, clients = _supervise(plan, sup_config, summary_json, prometheus)
        if plot and metrics:
            _plot(plan, clients, metrics, plot)
    return code


def _supervise(plan: RunPlan, sup_config, summary_json, prometheus) -> tuple[int, list]:
    """The supervised run, its start screen, live line, metrics and summary; (exit code,
    clients)."""
    from asyncinf.runtime.cli import report  # noqa: PLC0415
    from asyncinf.runtime.supervise.status_file import State  # noqa: PLC0415
    from asyncinf.runtime.supervise.supervisor import Supervisor  # noqa: PLC0415

    transport = (
        "shared memory (local)" if plan.server else f"gRPC {plan.remote.options.target}"
    )

    run_metrics = None
    if prometheus is not None:
        from asyncinf.runtime.supervise.prometheus_run import RunMetrics  # noqa: PLC0415

        run_metrics = RunMetrics()
        try:
            run_metrics.serve(*prometheus)
        except ConfigError as exc:  # taken between the check and now
            typer.echo(f"error: {exc}", err=True)
            return int(ExitCode.CONFIG_ERROR), []

    def on_state(state: State, sup: Supervisor) -> None:
        if run_metrics is not None:
            run_metrics.update(sup)
        if state is State.RUNNING and sup.restarts == 0:
            pids = {c.label: c.pid for c in (sup.server, *sup.clients) if c is not None}
            report.start_screen(plan.client, transport, pids, sup.client.ready_event)

    def on_beat(sup: Supervisor) -> None:
        if run_metrics is not None:
            run_metrics.update(sup)
        if sup.client and sup.client.beat and sup.state is State.RUNNING:
            report.live_line(sup.client.beat)

    supervisor = Supervisor(plan, sup_config, on_state=on_state, on_beat=on_beat)
    try:
        code = supervisor.run()
    finally:
        if run_metrics is not None:
            run_metrics.close()
    if supervisor.summary is not None:
        for name, summary in supervisor.summaries.items():
            report.summary_table(summary, name)
        if summary_json:
            summary_json.write_text(json.dumps(supervisor.summary, indent=2) + "\n")
    return code, supervisor.clients


def _plot(plan: RunPlan, clients: list, metrics: Path, plot: Path) -> None:
    """Each robot's queue plot, from its ticks, once the run is over."""
    from asyncinf.runtime.cli.metrics import plot_queue  # noqa: PLC0415

    specs = dict(plan.robots) or {"": plan.client}
    for child in clients:
        ticks, spec = robot_file(metrics, child.name), specs[child.name]
        ready = child.ready_event
        chunk = (ready.actions_per_chunk if ready else 0) or spec.client.actions_per_chunk
        if chunk and ticks.exists():  # chunk unknown: it never got through its handshake
            try:
                plot_queue(ticks, robot_file(plot, child.name), spec.client, chunk)
            except ValueError as exc:  # the run's result stands; only its plot is missing
                log.error("no queue plot for %s: %s", child.label, exc)
