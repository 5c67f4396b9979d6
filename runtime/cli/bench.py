"""`asyncinf bench …`: benchmarks that print a table and can write JSON."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from asyncinf.runtime.bench import transport as bt
from asyncinf.runtime.config import writable_file
from asyncinf.runtime.errors import ConfigError
from asyncinf.runtime.supervise.exitcodes import ExitCode

Opt = typer.Option

bench_app = typer.Typer(
    name="bench",
    help="Benchmarks: each prints a table and writes JSON with --json.",
    no_args_is_help=True,
)


def _ints(text: str, what: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v.replace("_", "")) for v in text.split(",") if v.strip())
    except ValueError:
        raise typer.BadParameter(f"{what} must be comma-separated integers, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise typer.BadParameter(f"{what} must be positive integers, got {text!r}")
    return values


@bench_app.command("transport")
def transport(
    quick: Annotated[
        bool,
        Opt("--quick", help="Fewer round trips (200 back-to-back, 100 paced): under a minute."),
    ] = False,
    json_path: Annotated[
        Path | None, Opt("--json", metavar="PATH", help="Also write the results as JSON here.")
    ] = None,
    sizes: Annotated[
        str,
        Opt("--sizes", help="Observation payload sizes in bytes, comma-separated."),
    ] = ",".join(str(s) for s in bt.SIZES),
    mode: Annotated[
        str, Opt("--mode", help="backtoback, paced (one round trip every 10 ms), or both.")
    ] = "both",
    transports: Annotated[
        str | None,
        Opt(
            "--transports",
            help=f"Rows to run, comma-separated, from {sorted(bt.ROWS)}. Default: all of "
            "them (iceoryx2 only when its package is installed).",
        ),
    ] = None,
    iterations: Annotated[
        int | None, Opt("--iterations", "-n", min=1, help="Round trips per row, size and mode.")
    ] = None,
) -> None:
    """Round trips between two processes: an observation of S bytes out, a 50×14 float32
    chunk back.

    Rows: `memcpy` (in-process copy of the same payload: the floor), `shm` (the asyncinf
    shared-memory transport, encode and decode included, default CRC-32 checks),
    `shm_nocrc` and `shm_crc_all` (no CRC; observations' images checked too: their p50 and
    p99 over `shm_nocrc`'s are the checksums' cost), `posix_ring` (the bare ring of the
    same layout, no codec or checks, waiting as shm does by default: a bounded spin, then
    the semaphore; the shm rows' floor, their p50 and p99 over it printed as × ring),
    `posix_ring_block` (the same ring blocking at once: what a wake-up from sleep costs),
    `iceoryx2` (the same raw round trip over iceoryx2 pub/sub with
    event-driven wake-ups, an outside zero-copy library: the shm rows' p50 and p99 over it
    printed as × iox2; needs `pip install 'asyncinf[bench]'`), `mp_queue`
    (multiprocessing.Queue both ways: the naive baseline), `grpc` (the asyncinf gRPC
    transport on loopback) and
    `grpc_floor` (a bare gRPC stream echoing raw bytes of the same size: grpc's floor).
    Prints p50/p90/p99/max in µs and each row's p50 as a multiple of its floor's.
    """
    if json_path is not None:
        try:
            writable_file("--json", json_path)
        except ConfigError as exc:
            raise typer.BadParameter(str(exc)) from None
    modes = bt.MODES if mode == "both" else (mode,)
    if any(m not in bt.MODES for m in modes):
        raise typer.BadParameter(f"--mode {mode!r}: choose backtoback, paced or both")
    err = Console(stderr=True)
    if transports is None:
        rows = tuple(bt.ROWS)
    else:
        rows = tuple(r.strip() for r in transports.split(",") if r.strip())
    unknown = [r for r in rows if r not in bt.ROWS]
    if unknown or not rows:
        raise typer.BadParameter(f"--transports: unknown {unknown}; known: {sorted(bt.ROWS)}")
    for row, line in bt.missing(rows).items():
        if transports is not None:  # asked for by name: the run would not be what was asked
            err.print(line, markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(ExitCode.USAGE)
        err.print(f"skipped: {line}", markup=False, highlight=False, soft_wrap=True)
        rows = tuple(r for r in rows if r != row)
    config = (bt.BenchConfig.quick if quick else bt.BenchConfig)(
        sizes=_ints(sizes, "--sizes"), modes=modes, rows=rows
    )
    if iterations is not None:
        config.iterations = dict.fromkeys(config.iterations, iterations)
    for size in config.sizes:
        try:
            bt.payload_arrays(size)
        except ValueError as exc:
            raise typer.BadParameter(f"--sizes: {exc}") from None
    # Per-connection logs of the gRPC rows would interleave with the progress bars.
    logging.getLogger("asyncinf.transports").setLevel(logging.WARNING)
    started = time.monotonic()
    with Progress(
        TextColumn("{task.description:<32}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as progress:

        def track(description: str, total: int) -> Callable[[], None]:
            task = progress.add_task(description, total=total)
            return lambda: progress.advance(task)

        try:
            results = bt.run(config, progress=track)
        except (OSError, TimeoutError, RuntimeError) as exc:
            err.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(ExitCode.RUNTIME_FAILURE) from None
    out = Console()
    out.width = max(out.width, 152)  # the table's twelve columns, also when piped
    out.print(_table(results))
    err.print(f"done in {time.monotonic() - started:.0f} s")
    if json_path is not None:
        doc = bt.report(results, mode)
        json_path.write_text(json.dumps(doc, indent=2) + "\n")
        err.print(f"wrote {json_path}")


def _table(results: list[dict[str, Any]]) -> Table:
    ratios = bt.ratios_to_floor(results)
    cost = bt.checksum_cost(results)
    ring = bt.ring_ratio(results)
    iox2 = bt.iox2_ratio(results)
    table = Table(
        title="observation → chunk round trip (µs)",
        caption="× floor: p50 over memcpy's, or over grpc_floor's for grpc (same run); "
        f"× no crc: p50 and p99 over {bt.UNCHECKED}'s (the CRC-32 checks' cost); "
        f"× ring: p50 and p99 over {bt.RING}'s (the bare ring of the same layout); "
        f"× iox2: p50 and p99 over {bt.IOX2}'s (its event-driven pub/sub round trip)",
    )
    cols = (
        "transport",
        "mode",
        "payload B",
        "n",
        "p50",
        "p90",
        "p99",
        "max",
        "× floor",
        "× no crc",
        "× ring",
        "× iox2",
    )
    for col in cols:
        table.add_column(col, justify="left" if col in ("transport", "mode") else "right")
    order = sorted(results, key=lambda r: (r["mode"], r["payload_bytes"]))
    last = None
    for r in order:
        key = (r["mode"], r["payload_bytes"])
        if last is not None and key != last:
            table.add_section()
        last = key
        ratio = ratios.get((r["transport"], r["mode"], r["payload_bytes"]))
        crc = cost.get((r["transport"], r["mode"], r["payload_bytes"]))
        over_ring = ring.get((r["transport"], r["mode"], r["payload_bytes"]))
        over_iox2 = iox2.get((r["transport"], r["mode"], r["payload_bytes"]))
        table.add_row(
            r["transport"],
            r["mode"],
            f"{r['payload_bytes']:,}",
            str(r["n"]),
            *(f"{r[k]:,.1f}" for k in ("p50_us", "p90_us", "p99_us", "max_us")),
            "" if ratio is None else f"{ratio:,.1f}",
            *("" if x is None else f"{x[0]:.2f} / {x[1]:.2f}" for x in (crc, over_ring, over_iox2)),
        )
    return table
