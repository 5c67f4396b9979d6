"""What `asyncinf up` shows a person: the start screen, the live line, the summary table."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from asyncinf.runtime.summary import Percentiles, RunSummary
    from asyncinf.runtime.supervise.protocol import ClientBeat, ClientReady
    from asyncinf.runtime.supervise.specs import ClientSpec

_console = Console(stderr=True)


def start_screen(
    spec: ClientSpec, transport: str, pids: dict[str, int], ready: ClientReady
) -> None:
    """`ready.actions_per_chunk`: agreed at handshake (the policy's own when not asked)."""
    c = spec.client
    table = Table(title="asyncinf up", show_header=False, box=None)
    table.add_row("transport", transport)
    robot = spec.robot
    table.add_row("robot", f"{robot.type} {robot.options or ''}".strip())
    p = spec.policy
    table.add_row("policy", f"{p.type} {p.path} on {p.device} {p.options or ''}")
    source = "" if c.actions_per_chunk else " (the policy's)"
    table.add_row("fps / chunk / g", f"{c.fps:g} / {ready.actions_per_chunk}{source} / "
                  f"{c.chunk_size_threshold:g} ({c.aggregate_fn_name})")  # fmt: skip
    table.add_row("pids", ", ".join(f"{k} {v}" for k, v in pids.items()))
    _console.print(table)


def live_line(beat: ClientBeat) -> None:
    """One compact, overwritten status line, only when attached to a terminal."""
    if not sys.stderr.isatty():
        return
    rt = beat.roundtrip_ms
    line = (
        f"ticks {beat.ticks}  actions {beat.actions}  queue {beat.queue:>3}  idle {beat.idle}  "
        f"chunks {beat.chunks}  errors {beat.errors}  "
        f"rtt {'-' if rt is None else f'{rt:.1f} ms'}"
        f"{f'  [holding {beat.hold_s:.1f} s: {beat.hold_reason}]' if beat.hold_s > 1 else ''}"
    )
    sys.stderr.write("\r\x1b[2K" + line)
    sys.stderr.flush()


def summary_table(summary: RunSummary, robot: str = "") -> None:
    """`robot`: its name, under `up --robots` (one table per robot)."""
    if sys.stderr.isatty():
        sys.stderr.write("\n")
    counts = Table(title=f"run summary{f': {robot}' if robot else ''}", show_header=False)
    for key in (
        "fps", "ticks", "actions_executed", "idle_frames", "idle_frames_after_first_chunk",
        "chunks_received", "errors", "rejected_chunks", "observations_sent", "server_lost",
        "sessions_corrupted", "overruns",
    ):  # fmt: skip
        value = getattr(summary, key)
        counts.add_row(key, f"{value:g}" if isinstance(value, float) else str(value))
    held = summary.held
    counts.add_row("held", f"{held.total_s:.1f} s ({100 * held.fraction:.0f}% of the run)")
    for reason, seconds in held.reasons_s.items():
        counts.add_row(f"  {reason}", f"{seconds:.1f} s")
    _console.print(counts)
    lat = Table(title="latency (ms)")
    for col in ("", "p50", "p99", "max"):
        lat.add_column(col, justify="right")
    for key in (
        "period_error_ms", "roundtrip_ms", "server_queue_wait_ms", "server_compute_ms",
        "server_preprocess_ms", "server_inference_ms", "server_postprocess_ms", "overhead_ms",
    ):  # fmt: skip
        lat.add_row(key.removesuffix("_ms"), *_percentiles(getattr(summary, key)))
    _console.print(lat)
    seams = Table(title="smoothness (robot units)")
    for col in ("", "p50", "p99", "max"):
        seams.add_column(col, justify="right")
    for key in ("seam_jump", "command_step"):
        seams.add_row(key, *_percentiles(getattr(summary, key)))
    _console.print(seams)
    delay = summary.inference_delay
    if delay.chunks:
        ticks = delay.measured_ticks
        _console.print(
            f"inference delay: {ticks.p50:g} ticks (p50), {ticks.max:g} (max) over "
            f"{delay.chunks} chunks; estimate exact {delay.exact}, one above "
            f"{delay.one_above}, too low {delay.too_low}, too high {delay.too_high}"
        )


def _percentiles(row: Percentiles) -> tuple[str, str, str]:
    return f"{row.p50:.3f}", f"{row.p99:.3f}", f"{row.max:.3f}"
