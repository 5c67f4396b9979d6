"""`asyncinf bench e2e`: the real supervised processes, sim robot, `scripted` at a latency.

One run per chunk-size threshold g (0 = synchronous). Each row reports idle frames,
actions per second, control-period error, round trip and the overhead the runtime adds
(round trip minus the server's queue wait and compute), from the client's own summary.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from asyncinf.runtime.plan import build_plan
from asyncinf.runtime.supervisor import Supervisor, SupervisorConfig


def e2e_options(
    *, g: float, latency_ms: float, fps: float, chunk: int, width: int, height: int
) -> dict[str, Any]:
    return {
        "fps": fps,
        "actions_per_chunk": chunk,
        "chunk_size_threshold": g,
        "robot": {
            "type": "sim",
            "cameras": {"front": {"type": "sim", "width": width, "height": height}},
        },
        "policy": {"type": "scripted", "latency_ms": latency_ms},
    }


def run_one(options: dict[str, Any], duration_s: float, remote: dict | None = None) -> dict:
    """One supervised run; returns the client's summary (raises if the run failed)."""
    os.environ.setdefault("ASYNCINF_LOG_LEVEL", "WARNING")
    plan = build_plan(options, remote=remote)
    sup = Supervisor(plan, SupervisorConfig(duration_s=duration_s, start_timeout_s=120))
    code = sup.run()
    if code != 0 or sup.summary is None:
        raise RuntimeError(f"e2e run failed with exit code {code}: {options}")
    return sup.summary


def run_e2e(
    gs: list[float],
    *,
    latency_ms: float,
    duration_s: float,
    fps: float = 30.0,
    chunk: int = 50,
    width: int = 640,
    height: int = 480,
    remote: dict | None = None,
    progress: Callable[[str], None] = lambda _msg: None,
) -> list[dict[str, Any]]:
    rows = []
    for g in gs:
        progress(f"g = {g:g}: running {duration_s:g} s")
        options = e2e_options(
            g=g, latency_ms=latency_ms, fps=fps, chunk=chunk, width=width, height=height
        )
        s = run_one(options, duration_s, remote)
        ticks = max(1, s["ticks"])
        extra = {k: s[k] for k in ("bytes_per_observation",) if k in s}
        rows.append(
            {
                "transport": "grpc" if remote else "shm",
                "g": g,
                "latency_ms": latency_ms,
                "fps": fps,
                "chunk": chunk,
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
                **extra,
            }
        )
    return rows
