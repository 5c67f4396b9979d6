"""Per-tick metrics (`--metrics`, JSON lines) and the queue-size plot users tune g with."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from asyncinf.runtime.supervise.metrics_file import rotated

if TYPE_CHECKING:
    from asyncinf.runtime.client import ClientConfig


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Every tick still on disk: the rotated older half first, if any."""
    rows = []
    for part in (rotated(path), path):
        if part.exists():
            with part.open() as f:
                rows += [json.loads(line) for line in f if line.strip()]
    return rows


def plot_queue(metrics_path: Path, png_path: Path, client: ClientConfig, chunk: int) -> None:
    """Queue size over time, with the send threshold g·T (T = `chunk`) and idle ticks marked."""
    import matplotlib  # noqa: PLC0415  (optional extra: asyncinf[plot])

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    rows = read_metrics(metrics_path)
    if not rows:
        return
    t0 = rows[0]["t_ns"]
    t = [(r["t_ns"] - t0) / 1e9 for r in rows]
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.plot(t, [r["queue"] for r in rows], lw=1, label="actions queued")
    threshold = client.chunk_size_threshold * chunk
    ax.axhline(threshold, color="tab:orange", ls="--", lw=1, label=f"g·T = {threshold:g}")
    idle = [ti for ti, r in zip(t, rows, strict=True) if r["idle"]]
    if idle:
        ax.scatter(idle, [0] * len(idle), color="tab:red", s=6, label=f"idle ({len(idle)})")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("queue size (actions)")
    ax.set_title(
        f"{client.fps:g} fps, chunk {chunk}, "
        f"g = {client.chunk_size_threshold:g}, {client.aggregate_fn_name}"
    )
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
