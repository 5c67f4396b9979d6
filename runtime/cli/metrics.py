"""Per-tick metrics (`--metrics`, JSON lines) and the queue-size plot users tune g with."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from asyncinf.runtime import records
from asyncinf.runtime.client import Tick
from asyncinf.runtime.supervise.metrics_file import rotated

if TYPE_CHECKING:
    from asyncinf.runtime.client import ClientConfig

log = logging.getLogger(__name__)


def read_metrics(path: Path) -> list[Tick]:
    """Every tick still on disk, the rotated older half first; raises ValueError naming the
    first bad line. A cut-off last line (the client was killed mid-write) is left out."""
    ticks = []
    for part in (rotated(path), path):
        if part.exists():
            with part.open() as f:
                ticks += _read_ticks(part, f)
    return ticks


def _read_ticks(part: Path, lines: Iterable[str]) -> Iterator[Tick]:
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if not line.endswith("\n"):  # only a last line can lack it
            log.warning("%s:%d: a cut-off last line (the run ended mid-write): left out", part, n)
            continue
        try:
            yield records.from_json(Tick, json.loads(line))
        except ValueError as exc:  # json's errors are ValueErrors too
            raise ValueError(f"{part}:{n}: not a tick line: {exc}") from None


def plot_queue(metrics_path: Path, png_path: Path, client: ClientConfig, chunk: int) -> None:
    """Queue size over time, with the send threshold g·T (T = `chunk`) and idle ticks marked."""
    import matplotlib  # noqa: PLC0415  (optional extra: asyncinf[plot])

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    ticks = read_metrics(metrics_path)
    if not ticks:
        return
    t = [(tick.t_ns - ticks[0].t_ns) / 1e9 for tick in ticks]
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.plot(t, [tick.queue for tick in ticks], lw=1, label="actions queued")
    threshold = client.chunk_size_threshold * chunk
    ax.axhline(threshold, color="tab:orange", ls="--", lw=1, label=f"g·T = {threshold:g}")
    idle = [ti for ti, tick in zip(t, ticks, strict=True) if tick.idle]
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
