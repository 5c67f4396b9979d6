"""`asyncinf bench e2e`: the real supervised processes, the sim robot (or another), a policy.

The policy is `scripted` at a latency by default, or any policy given as `--policy.*` (a
LeRobot checkpoint, say). One run per chunk-size threshold g (0 = synchronous). Each row
reports idle frames, actions per second, control-period error, round trip and the overhead
the runtime adds (round trip minus the server's queue wait and compute), the server's time
per stage, and the server process's peak resident memory, from the client's own summary.
`inprocess_inference` times the same policy's model call in this process, as the floor the
server's inference time is compared with.

With `rtc` (`--rtc`), each g runs twice, without real-time chunking and with it, and the rows
carry the seams (`seam_jump`) of both, so the table compares them in one invocation.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from asyncinf.runtime.messages import Observation
from asyncinf.runtime.rate import Rate
from asyncinf.runtime.stats import percentiles
from asyncinf.runtime.supervise.plan import (
    RunPlan,
    build_plan,
    policy_spec,
    preload_handshake,
    robot_spec,
)
from asyncinf.runtime.supervise.supervisor import Supervisor, SupervisorConfig
from asyncinf.transports.factory import TransportSpec


def e2e_options(
    *,
    g: float,
    latency_ms: float,
    fps: float,
    chunk: int | None,
    width: int,
    height: int,
    policy: dict[str, Any] | None = None,
    robot: dict[str, Any] | None = None,
    disagreement: float = 0.0,
    rtc: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """`robot`: the `--robot.*` map (with its type); default the sim arm, one sim camera.
    `disagreement`: the default scripted policy's; `rtc`: the `--rtc.*` map (None: off)."""
    scripted = {"type": "scripted", "latency_ms": latency_ms}
    if disagreement:
        scripted["disagreement"] = disagreement
    return {
        "rtc": rtc,
        "fps": fps,
        "actions_per_chunk": chunk,
        "chunk_size_threshold": g,
        "robot": robot
        or {"type": "sim", "cameras": {"front": {"type": "sim", "width": width, "height": height}}},
        "policy": policy or scripted,
    }


def e2e_plan(options: dict[str, Any], remote: TransportSpec | None = None) -> RunPlan:
    """The plan of one run (options left None take their defaults); raises ConfigError."""
    return build_plan({k: v for k, v in options.items() if v is not None}, remote=remote)


def _rss_mb(pid: int) -> float:
    """Resident memory of a live process, from /proc (0 where there is none)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def run_one(
    options: dict[str, Any],
    duration_s: float,
    remote: TransportSpec | None = None,
    log_level: str = "WARNING",
) -> dict:
    """One supervised run; the client's summary plus `server_rss_mb` (raises if it failed).
    `log_level`: the children's (the table is the output; warnings still show)."""
    plan = e2e_plan(options, remote)
    peak = [0.0]

    def sample(sup: Supervisor) -> None:
        if sup.server is not None and sup.server.ready:
            peak[0] = max(peak[0], _rss_mb(sup.server.pid))

    config = SupervisorConfig(duration_s=duration_s, start_timeout_s=300, log_level=log_level)
    sup = Supervisor(plan, config, on_beat=sample)
    code = sup.run()
    if code != 0 or sup.summary is None:
        raise RuntimeError(f"e2e run failed with exit code {code}: {options}")
    return {**sup.summary, "server_rss_mb": peak[0]}


def inprocess_inference(
    options: dict[str, Any], interval_s: float, calls: int = 30
) -> dict[str, dict[str, float]]:
    """The policy's `predict_chunk` timed here on its warm-up input: the floor for the
    server's inference time (same model, same machine, no runtime around it), twice.

    `back_to_back` calls it in a loop. `paced` waits `interval_s` (the run's time between
    chunks) before each call, as the server does: on this VM a core that idled for a chunk
    period runs the next call much slower (a tiny ACT: 28 ms back to back, 41 ms paced at
    0.3 s), so only the paced floor compares with the server's figure.
    """
    from asyncinf.policies.policy import make_policy  # noqa: PLC0415

    hello = preload_handshake(robot_spec(options), policy_spec(options), options["fps"], "")
    policy = make_policy(hello.policy, hello)
    policy.warmup()
    inputs = policy.preprocess(policy.blank_observation())

    def timed(pause_s: float) -> dict[str, float]:
        samples = []
        for _ in range(calls):
            time.sleep(pause_s)
            t0 = time.monotonic_ns()
            policy.predict_chunk(inputs)
            samples.append(time.monotonic_ns() - t0)
        return percentiles(samples, 1e-6)

    return {"back_to_back": timed(0.0), "paced": timed(interval_s)}


def transport_roundtrip(
    transport: str, payload_bytes: int, fps: float, n: int = 300, n_at_fps: int = 90
) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """The bare transport's round trip at the runs' payload, measured now, in ms: what the
    runs' overhead is compared with. First `bench transport`'s row of that name in both its
    modes; then one round trip per tick at the runs' `fps`, the most a run at g = 1 sends:
    each then starts with the threads of both ends asleep since the last one and their
    caches gone cold, as in a run, which neither back to back nor 100 Hz reproduces (on
    this VM the bare gRPC transport's p50 is ~1.5× its back-to-back one at 30 Hz)."""
    from asyncinf.runtime.bench import transport as bt  # noqa: PLC0415

    modes = {}
    with bt.ROWS[transport]() as roundtrip:
        for mode in bt.MODES:
            samples = bt.measure({transport: roundtrip}, payload_bytes, mode, n=n, warmup=20)
            modes[mode] = percentiles(samples[transport], 1e-6)
        state, images = bt.payload_arrays(payload_bytes)
        rate, ticks = Rate(fps), []
        for i in range(n_at_fps):
            rate.sleep()
            t0 = time.perf_counter_ns()
            roundtrip(Observation(i, time.monotonic_ns(), state, images))
            ticks.append(time.perf_counter_ns() - t0)
    return modes, percentiles(ticks, 1e-6)


def overhead_ratio(
    row: dict[str, Any], roundtrip: dict[str, dict[str, float]]
) -> dict[str, dict[str, float]]:
    """A run's overhead p50 and p99 over the bare transport's, per mode."""
    over = row["overhead_ms"]
    return {
        mode: {q: over[q] / rt[q] if rt[q] else float("nan") for q in ("p50", "p99")}
        for mode, rt in roundtrip.items()
    }


def run_e2e(
    gs: list[float],
    *,
    latency_ms: float,
    duration_s: float,
    fps: float = 30.0,
    chunk: int | None = 50,
    width: int = 640,
    height: int = 480,
    remote: TransportSpec | None = None,
    policy: dict[str, Any] | None = None,
    robot: dict[str, Any] | None = None,
    log_level: str = "WARNING",
    progress: Callable[[str], None] = lambda _msg: None,
    disagreement: float = 0.0,
    rtc: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """`rtc`: the `--rtc.*` map ({} for the defaults): each g without RTC, then with it."""
    rows = []
    runs = [(g, r) for g in gs for r in ((None, rtc) if rtc is not None else (None,))]
    for g, run_rtc in runs:
        progress(f"g = {g:g}{' with RTC' if run_rtc is not None else ''}: running {duration_s:g} s")
        options = e2e_options(
            g=g,
            latency_ms=latency_ms,
            fps=fps,
            chunk=chunk,
            width=width,
            height=height,
            policy=policy,
            robot=robot,
            disagreement=disagreement,
            rtc=run_rtc,
        )
        s = run_one(options, duration_s, remote, log_level)
        ticks = max(1, s["ticks"])
        extra = {k: s["transport"][k] for k in ("bytes_per_observation",) if k in s["transport"]}
        rows.append(
            {
                "transport": "grpc" if remote else "shm",
                "g": g,
                "rtc": run_rtc is not None,
                "policy": options["policy"],
                "options": options,
                "fps": fps,
                "chunk": s["actions_per_chunk"],
                "ticks": s["ticks"],
                "idle_pct": 100.0 * s["idle_frames"] / ticks,
                "idle_frames_after_first_chunk": s["idle_frames_after_first_chunk"],
                "actions_per_s": s["actions_executed"] / duration_s,
                "chunks": s["chunks_received"],
                "errors": s["errors"],
                "period_error_ms": s["period_error_ms"],
                "roundtrip_ms": s["roundtrip_ms"],
                "overhead_ms": s["overhead_ms"],
                "server_compute_ms": s["server_compute_ms"],
                "server_preprocess_ms": s["server_preprocess_ms"],
                "server_inference_ms": s["server_inference_ms"],
                "server_postprocess_ms": s["server_postprocess_ms"],
                "server_rss_mb": s["server_rss_mb"],
                "seam_jump": s["seam_jump"],
                "command_step": s["command_step"],
                "inference_delay": s["inference_delay"],
                **extra,
            }
        )
    return rows
