"""`asyncinf bench e2e`: the whole runtime, supervised, per chunk-size threshold g."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from asyncinf.runtime.config import parse_dotted_args, parse_value, writable_file
from asyncinf.runtime.errors import ConfigError, FlagError, PolicyError
from asyncinf.runtime.stats import KEYS
from asyncinf.runtime.supervise.exitcodes import ExitCode

Opt = typer.Option


# fmt: off
def e2e(
    ctx: typer.Context,
    latency_ms: Annotated[float, Opt("--latency_ms", help="The scripted policy's emulated inference time.")] = 100.0,
    thresholds: Annotated[str, Opt("--g", help="Chunk-size thresholds to run, comma-separated (0 = synchronous).")] = "0,0.5,0.7,1.0",
    duration: Annotated[float, Opt("--duration", help="Seconds per run.")] = 20.0,
    fps: Annotated[float, Opt("--fps", help="Control-loop rate.")] = 30.0,
    chunk: Annotated[int | None, Opt("--actions_per_chunk", help="Actions per chunk (T; default 50, or all a --policy.* returns per call).")] = None,
    width: Annotated[int, Opt("--width", help="Sim camera width (without --robot.*).")] = 640,
    height: Annotated[int, Opt("--height", help="Sim camera height (without --robot.*).")] = 480,
    transport: Annotated[str, Opt("--transport", help="shm (up --local) or grpc (up --remote against a loopback asyncinf serve).")] = "shm",
    json_path: Annotated[Path | None, Opt("--json", metavar="PATH", help="Also write the rows as JSON here.")] = None,
    rtc: Annotated[bool, Opt("--rtc", help="Run each g without real-time chunking and with it (--rtc.* sets it), and compare the seams.")] = False,
    disagreement: Annotated[float, Opt("--disagreement", help="The scripted policy's per-chunk offset, ± joint units (without --policy.*; 0: none).")] = 0.0,
) -> None:
    # fmt: on
    """Idle frames, actions/s, round trip, overhead and period error of real runs.

    Each g runs the sim arm with one camera and the `scripted` policy at --latency_ms (or the
    policy given as --policy.type/--policy.path/--policy.device/--policy.*, e.g. a LeRobot
    checkpoint; or on the robot given as --robot.type/--robot.*, e.g. a LeRobot plugin robot)
    under the supervisor, exactly as `asyncinf up` does, and reads the client's
    summary. Overhead is round trip minus the server's queue wait and compute: what the
    runtime and the transport cost in both directions; it is printed over the bare
    transport's round trip at the same payload, back to back and paced (100 Hz) as `bench
    transport` times it, and one per tick at --fps as a run sends, like for like (both ends
    idle between round trips, as in a run). With --policy.*, the same model call
    is also timed in this process, back to back and paced like the server (one call per
    chunk interval of the first run): the floor for the server's inference time.

    Every row reports its seams: per chunk, the largest joint jump between the old plan and
    the new one at the first action that executes from it. With --rtc each g runs twice,
    without and with real-time chunking, and the ratio of their seams is printed.
    """
    from asyncinf.runtime.bench.e2e import (  # noqa: PLC0415
        e2e_options,
        e2e_plan,
        inprocess_inference,
        overhead_ratio,
        run_e2e,
        transport_roundtrip,
    )
    from asyncinf.runtime.supervise.supervisor import SupervisorConfig  # noqa: PLC0415
    from asyncinf.runtime.supervise.worker import leave_a_core_for_the_client  # noqa: PLC0415
    from asyncinf.transports.factory import TransportSpec  # noqa: PLC0415

    err = Console(stderr=True)
    # The table is the output: children log warnings only, unless `asyncinf -v`.
    log_level = "DEBUG" if logging.getLogger().isEnabledFor(logging.DEBUG) else "WARNING"
    try:
        dotted = parse_dotted_args(ctx.args)
        policy = {k: parse_value(v) for k, v in dotted.pop("policy", {}).items()} or None
        robot = {k: parse_value(v) for k, v in dotted.pop("robot", {}).items()} or None
        rtc_map = {k: parse_value(v) for k, v in dotted.pop("rtc", {}).items()}
        if dotted:
            others = [a for a in ctx.args if not a.startswith(("--policy.", "--robot.", "--rtc."))]
            raise FlagError(f"bench e2e takes --policy.*, --robot.* and --rtc.* flags only, not {others}")
        if rtc_map and not rtc:
            raise FlagError(f"--rtc.{next(iter(rtc_map))} given without --rtc: add --rtc")
        if disagreement and policy is not None:
            raise FlagError("--disagreement is the default scripted policy's: with --policy.*, give --policy.disagreement")
        rtc_opts = rtc_map if rtc else None
        if robot is not None and "type" not in robot:
            raise ConfigError("--robot.* given without --robot.type")
        if chunk is None and policy is None:
            chunk = 50
        try:
            gs = [float(g) for g in thresholds.split(",") if g.strip()]
        except ValueError:
            raise typer.BadParameter(f"--g must be comma-separated numbers, got {thresholds!r}") from None
        if transport not in ("shm", "grpc"):
            raise typer.BadParameter(f"--transport={transport!r}: choose shm or grpc")
        for flag, pixels in (("--width", width), ("--height", height)):
            if pixels <= 0:
                raise ConfigError(f"{flag}={pixels}: the sim camera's size, must be > 0 pixels")
        # Every run's plan, as each run will build it: all checked before the first starts.
        SupervisorConfig(duration_s=duration)
        for g in gs:
            for run_rtc in (None, rtc_opts):
                e2e_plan(e2e_options(g=g, latency_ms=latency_ms, fps=fps, chunk=chunk, width=width,
                                     height=height, policy=policy, robot=robot,
                                     disagreement=disagreement, rtc=run_rtc))  # fmt: skip
        if json_path is not None:
            writable_file("--json", json_path)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(ExitCode.USAGE if isinstance(exc, FlagError) else ExitCode.CONFIG_ERROR) from None
    # The table is the output; per-run lifecycle logs would bury it (warnings still show).
    logging.getLogger("asyncinf.runtime.supervise.supervisor").setLevel(logging.WARNING)
    server = _start_serve() if transport == "grpc" else None
    try:
        remote = None if server is None else TransportSpec("grpc", {"target": f"127.0.0.1:{server[1]}"})
        rows = run_e2e(
            gs, latency_ms=latency_ms, duration_s=duration, fps=fps, chunk=chunk,
            width=width, height=height, remote=remote, progress=err.print, policy=policy,
            robot=robot, log_level=log_level, disagreement=disagreement, rtc=rtc_opts,
        )  # fmt: skip
        # The bare transport at the runs' payload (one frame per camera), in this same run:
        # the runtime's overhead over it is the figure the transport work is judged by.
        err.print(f"timing the bare {transport} transport at the same payload")
        payload = _payload_bytes(rows[0]["options"]) if robot is None else None
        bare, at_fps = transport_roundtrip(transport, payload, fps) if payload else (None, None)
        for r in rows if bare else ():
            r["overhead_over_transport"] = overhead_ratio(r, {**bare, "at_fps": at_fps})
        floor = None
        if policy is not None:
            err.print("timing the same model call in this process")
            if server is None:  # the up --local server's thread cap, for a like-for-like floor
                leave_a_core_for_the_client()
            first = rows[0]
            interval_s = duration / max(1, first["chunks"]) - first["server_inference_ms"]["p50"] / 1e3
            floor = inprocess_inference(first["options"], max(0.0, interval_s))
    except (RuntimeError, PolicyError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(ExitCode.RUNTIME_FAILURE) from None
    finally:
        if server is not None:
            server[0].send_signal(signal.SIGTERM)
            server[0].wait(20)
    out = Console()
    out.width = max(out.width, 180)
    out.print(_table(rows))
    for line in _seam_ratios(rows):
        out.print(line)
    if bare is not None:
        _print_bare(out, transport, payload, bare, at_fps, fps, rows)
    if floor is not None:
        for how, ms in floor.items():
            out.print(
                f"in-process predict_chunk ({how.replace('_', ' ')}; same model, this process): "
                f"p50 {ms['p50']:.2f} ms, p99 {ms['p99']:.2f} ms"
            )
    if json_path is not None:
        doc = {"schema": 1, "results": rows, "inprocess_inference_ms": floor,
               "transport_roundtrip_ms": bare, "transport_roundtrip_at_fps_ms": at_fps,
               "payload_bytes": payload}  # fmt: skip
        json_path.write_text(json.dumps(doc, indent=2) + "\n")
        err.print(f"wrote {json_path}")


def _payload_bytes(options: dict[str, Any]) -> int:
    """The image bytes of one observation of the sim robot: one frame per camera."""
    cams = options["robot"].get("cameras", {})
    return sum(c.get("width", 640) * c.get("height", 480) * 3 for c in cams.values())


def _print_bare(
    out: Console, transport: str, payload: int, bare: dict, at_fps: dict, fps: float, rows: list
) -> None:
    """The bare transport's round trip, and each run's overhead over it (targets: p50 ≤ 1.2×,
    p99 ≤ 2× back to back); at the runs' fps too, which is like for like."""
    for mode, ms in bare.items():
        out.print(
            f"bare {transport} transport round trip at {payload:,} B ({mode}, bench transport's "
            f"{transport} row, this run): p50 {ms['p50']:.3f} ms, p99 {ms['p99']:.3f} ms"
        )
    out.print(
        f"bare {transport} transport round trip at {payload:,} B (one per tick at {fps:g} fps "
        f"as a run at g = 1 sends, both ends idle in between; this run): "
        f"p50 {at_fps['p50']:.3f} ms, p99 {at_fps['p99']:.3f} ms"
    )
    for r in rows:
        line = ", ".join(
            f"{f'at {fps:g} fps' if mode == 'at_fps' else mode} "
            f"p50 {q['p50']:.2f}× p99 {q['p99']:.2f}×"
            for mode, q in r["overhead_over_transport"].items()
        )
        rtc = ", rtc on" if r["rtc"] else ""
        out.print(f"g = {r['g']:g}{rtc}: overhead / bare round trip: {line}")


def _start_serve() -> tuple[subprocess.Popen, int]:
    """A loopback `asyncinf serve` on a free port, for --transport grpc."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "asyncinf.runtime.cli", "serve", "--port=0"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        if "serving on " in line:
            _drain(proc)
            return proc, int(line.rsplit(":", 1)[1])
    proc.kill()
    raise RuntimeError("asyncinf serve did not start")


def _drain(proc: subprocess.Popen) -> None:
    """Keep reading the server's log so its pipe never fills and stalls it."""
    threading.Thread(target=proc.stderr.read, daemon=True).start()


def _table(rows: list[dict[str, Any]]) -> Table:
    policy = rows[0]["policy"]["type"] if rows else "scripted"
    robot = rows[0]["options"]["robot"]["type"] if rows else "sim"
    t = Table(title=f"end to end: {'sim arm' if robot == 'sim' else robot} + {policy} policy (ms)")
    cols = ("transport", "g", "rtc", "T", "idle %", "idle after 1st", "actions/s", "rtt p50",
            "rtt p99", "overhead p50", "overhead p99", "infer p50", "server MB", "period err p99",
            "seam p50", "seam p99", "seam max", "step max")  # fmt: skip
    for c in cols:
        t.add_column(c, justify="right")
    for r in rows:
        t.add_row(
            r["transport"], f"{r['g']:g}", "on" if r["rtc"] else "off", str(r["chunk"]),
            f"{r['idle_pct']:.1f}",
            str(r["idle_frames_after_first_chunk"]), f"{r['actions_per_s']:.1f}",
            f"{r['roundtrip_ms']['p50']:.2f}", f"{r['roundtrip_ms']['p99']:.2f}",
            f"{r['overhead_ms']['p50']:.3f}", f"{r['overhead_ms']['p99']:.3f}",
            f"{r['server_inference_ms']['p50']:.2f}", f"{r['server_rss_mb']:.0f}",
            f"{r['period_error_ms']['p99']:.3f}", *(f"{r['seam_jump'][k]:.3f}" for k in KEYS),
            f"{r['command_step']['max']:.3f}",
        )  # fmt: skip
    return t


def _seam_ratios(rows: list[dict[str, Any]]) -> list[str]:
    """Per g run both ways: the seams with RTC over those without, and how the delay
    estimate did (steady-state chunks: equal to the measured delay, one above, off)."""
    lines = []
    for on in (r for r in rows if r["rtc"]):
        off = next(r for r in rows if r["g"] == on["g"] and not r["rtc"])
        ratios = ", ".join(
            f"{k} {on['seam_jump'][k]:.3f}/{off['seam_jump'][k]:.3f} = "
            f"{on['seam_jump'][k] / off['seam_jump'][k] if off['seam_jump'][k] else float('nan'):.3f}"
            for k in KEYS
        )
        d = on["inference_delay"]
        within = d["exact"] + d["one_above"]
        lines.append(
            f"g = {on['g']:g}: seam with RTC / without: {ratios}; delay estimate equal or one "
            f"above the measured one for {within}/{d['chunks']} chunks "
            f"(too low {d['too_low']}, too high {d['too_high']})"
        )
    return lines
