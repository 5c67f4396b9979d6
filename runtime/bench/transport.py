"""`asyncinf bench transport`: observation → chunk round trips between two processes.

One round trip = an observation of S payload bytes to an echo server in a child process,
and a 50×14 float32 action chunk back, measured on the sender from handing the observation
over to holding the chunk. Rows:

- `memcpy`: an in-process copy of the same payload bytes, the floor no transport beats;
- `shm`: the full asyncinf path (encode into a slot, server lease + zero-copy decode, chunk
  encoded into the ring, client receive and decode), with its default CRC-32 checks
  (`--shm.checksum=frames`: chunk and control frames, observations' header and state);
- `shm_nocrc` and `shm_crc_all`: the same with no CRC at all, and with the observations'
  images checked too; each shm row's p50 and p99 over `shm_nocrc`'s is the checksums' cost;
- `posix_ring`: the shm rows' floor, the thinnest ring of the same layout (a segment, two
  semaphores as bells, raw bytes in, a zero-copy view, the chunk copied back: posix_ring.py),
  its ends waiting as shm's do by default (a bounded spin, then the semaphore); each shm
  row's p50 and p99 over its own are what the transport adds to the wake-ups;
- `posix_ring_block`: the same ring, its ends blocking at once: beside `posix_ring`, what a
  wake-up from sleep costs on this machine (tens of µs on a VM whose idle vCPU halts);
- `iceoryx2`: the same raw round trip over iceoryx2 (pub/sub + event services, a loaned
  sample each way, listeners spinning as shm's ends do, then waiting with timeouts:
  iceoryx2_ring.py), an outside zero-copy IPC
  library as the yardstick; each shm row's p50 and p99 over its own print as × iox2. It
  needs the optional `asyncinf[bench]` extra. These six take turns (all open at once; back
  to back in blocks of round trips, see `measure`), so a noisy neighbour hits them alike
  and the ratios compare like with like;
- `mp_queue`: `multiprocessing.Queue` both ways (pickle + pipe), the naive baseline.

Payloads: 64 B is joint state alone (16 float32); larger sizes are RGB images (640×480
frames, or one square-ish image) beside a 14-float state, and `payload_bytes` counts the
images. Modes: `backtoback` (the next round trip starts when the last ends) and `paced`
(one every 10 ms on absolute monotonic deadlines, as a control loop sends: caches and
wake-up paths are cold again each time).

A row is a context manager that starts its echo peer and yields a `RoundTrip` callable;
another transport adds itself with `ROWS["name"] = factory`.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import math
import multiprocessing as mp
import os
import queue
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from asyncinf.runtime.bench.peer import stop_child
from asyncinf.runtime.messages import (
    ActionChunk,
    Handshake,
    HandshakeReply,
    Observation,
    PolicySpec,
)
from asyncinf.runtime.rate import Rate
from asyncinf.runtime.stats import percentiles
from asyncinf.transports.base import ClientTransport

SIZES = (64, 3_072, 921_600, 3_686_400)
MODES = ("backtoback", "paced")
CHUNK_SHAPE = (50, 14)
PACED_HZ = 100.0  # one round trip every 10 ms
FRAME = (480, 640, 3)
STATE_DIM = CHUNK_SHAPE[1]
JSON_SCHEMA = 1
TIMEOUT_S = 10.0  # a round trip that takes this long means the peer is stuck


class RoundTrip(Protocol):
    def __call__(self, obs: Observation) -> None:
        """Send `obs` and return once the chunk answering it has arrived."""


Row = Callable[[], contextlib.AbstractContextManager[RoundTrip]]


@dataclass
class BenchConfig:
    sizes: tuple[int, ...] = SIZES
    modes: tuple[str, ...] = MODES
    rows: tuple[str, ...] = (
        "memcpy", "shm", "shm_nocrc", "shm_crc_all", "posix_ring", "iceoryx2", "mp_queue",
        "grpc", "grpc_floor",
    )  # fmt: skip
    iterations: dict[str, int] = field(default_factory=lambda: {"backtoback": 2000, "paced": 500})
    warmup: int = 20

    @classmethod
    def quick(cls, **kw: Any) -> BenchConfig:
        return cls(iterations={"backtoback": 200, "paced": 100}, warmup=10, **kw)


# --- payloads ----------------------------------------------------------------------------------


def payload_arrays(payload_bytes: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """State and images whose array bytes (images, or the state alone) total `payload_bytes`."""
    frame_bytes = math.prod(FRAME)
    rng = np.random.default_rng(payload_bytes)
    if payload_bytes % 3:
        if payload_bytes % 4:
            raise ValueError(f"payload {payload_bytes} B is neither RGB pixels nor float32s")
        return rng.random(payload_bytes // 4, np.float32), {}
    if payload_bytes % frame_bytes == 0:
        shapes = [FRAME] * (payload_bytes // frame_bytes)
    else:
        pixels = payload_bytes // 3
        h = max(d for d in range(1, math.isqrt(pixels) + 1) if pixels % d == 0)
        shapes = [(h, pixels // h, 3)]
    images = {f"cam{i}": rng.integers(0, 256, shape, np.uint8) for i, shape in enumerate(shapes)}
    return rng.random(STATE_DIM, np.float32), images


def hello(images: dict[str, np.ndarray] | None = None) -> Handshake:
    return Handshake(
        joint_names=[f"j{i}" for i in range(STATE_DIM)],
        cameras={k: v.shape for k, v in (images or {}).items()},
        policy=PolicySpec(type="echo", actions_per_chunk=CHUNK_SHAPE[0]),
        fps=PACED_HZ,
    )


# --- rows --------------------------------------------------------------------------------------


@contextlib.contextmanager
def memcpy_row() -> Iterator[RoundTrip]:
    """The floor: copy the observation's arrays into a preallocated buffer, in process."""
    dst = np.empty(max(SIZES) + 4096, np.uint8)

    def roundtrip(obs: Observation) -> None:
        offset = 0
        arrays = list(obs.images.values()) or [obs.state]
        for arr in arrays:
            n = arr.nbytes
            np.copyto(dst[offset : offset + n], arr.reshape(-1).view(np.uint8))
            offset += n

    yield roundtrip


def _echo_session(server: Any) -> None:
    """Child side of a transport row: one session, each observation answered by a chunk."""
    from asyncinf.runtime.errors import PeerClosed, PeerGone  # noqa: PLC0415

    actions = np.zeros(CHUNK_SHAPE, np.float32)
    if server.accept(60.0) is None:
        return
    server.reply(HandshakeReply(True, actions_per_chunk=CHUNK_SHAPE[0]))
    try:
        while True:
            lease = server.next_observation(1.0)
            if lease is None:
                continue
            with lease:
                obs = lease.observation
                chunk = ActionChunk(obs.timestep, actions, obs_sent_ns=obs.sent_ns)
            server.publish_chunk(chunk, TIMEOUT_S)
    except (PeerClosed, PeerGone):
        return


def _shm_echo(name: str) -> None:
    from asyncinf.transports.shm import ShmServerTransport  # noqa: PLC0415

    with ShmServerTransport.attach(name) as server:
        _echo_session(server)


def _await_chunk(receive: Callable[[float], Any], timestep: int) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        msg = receive(max(0.0, deadline - time.monotonic()))
        if msg is None:
            raise TimeoutError(f"no chunk for observation {timestep} within {TIMEOUT_S} s")
        if isinstance(msg, ActionChunk):
            if msg.timestep == timestep:
                return
            continue
        raise RuntimeError(f"echo server answered with {msg}")


def _echo_roundtrip(client: ClientTransport) -> RoundTrip:
    """Handshake with an echo server; each call then sends one observation and waits for the
    chunk that answers it."""
    client.handshake(hello(), 60.0)

    def roundtrip(obs: Observation) -> None:
        client.send_observation(obs)
        _await_chunk(client.receive, obs.timestep)

    return roundtrip


@contextlib.contextmanager
def shm_row(checksum: str = "frames") -> Iterator[RoundTrip]:
    """The asyncinf shared-memory transport (`--shm.checksum=checksum`); the echo server
    runs in a spawned child."""
    from asyncinf.transports.shm import (  # noqa: PLC0415
        ShmClientTransport,
        ShmConfig,
        ShmSession,
        make_run_id,
    )

    with ShmSession.create(make_run_id(), 0, ShmConfig(checksum=checksum)) as session:
        child = mp.get_context("spawn").Process(
            target=_shm_echo, args=(session.name,), name="shm-echo", daemon=True
        )
        child.start()
        try:
            with ShmClientTransport.attach(session.name) as client:
                yield _echo_roundtrip(client)
        finally:
            stop_child(child)


@contextlib.contextmanager
def _raw_ring_row(ring: Callable[..., Any]) -> Iterator[RoundTrip]:
    """A ring of raw bytes (`ring(obs_bytes, chunk_shape)` yields a sender), its observation
    area as large as the shm transport's default observation slot: the arrays' bytes go
    out as they are, no codec."""
    from asyncinf.transports.shm import ShmConfig  # noqa: PLC0415

    with ring(ShmConfig().obs_slot_bytes, CHUNK_SHAPE) as sender:

        def roundtrip(obs: Observation) -> None:
            sender(list(obs.images.values()) or [obs.state], TIMEOUT_S)

        yield roundtrip


def posix_ring_row(spin: bool = True) -> contextlib.AbstractContextManager[RoundTrip]:
    """The floor of the shm rows: posix_ring.py's bare ring, its ends spinning as long as
    the shm transport's do by default before they block (`spin`), or blocking at once."""
    from asyncinf.runtime.bench.posix_ring import posix_ring  # noqa: PLC0415
    from asyncinf.transports.shm import ShmConfig  # noqa: PLC0415

    spin_us = ShmConfig().spin_us if spin else 0
    return _raw_ring_row(functools.partial(posix_ring, spin_us=spin_us))


def iceoryx2_row() -> contextlib.AbstractContextManager[RoundTrip]:
    """The same round trip over iceoryx2 pub/sub + events (iceoryx2_ring.py), its listeners
    spinning as long as the shm transport's ends do by default before they block."""
    from asyncinf.runtime.bench.iceoryx2_ring import iceoryx2_ring  # noqa: PLC0415
    from asyncinf.transports.shm import ShmConfig  # noqa: PLC0415

    return _raw_ring_row(functools.partial(iceoryx2_ring, spin_us=ShmConfig().spin_us))


def _mp_echo(up: mp.Queue, down: mp.Queue, parent: int) -> None:
    """Child: mp.Queue echo; leaves when told (None) or when its parent is gone."""
    actions = np.zeros(CHUNK_SHAPE, np.float32)
    while os.getppid() == parent:
        try:
            obs = up.get(timeout=1.0)
        except queue.Empty:
            continue
        if obs is None:
            return
        down.put(ActionChunk(obs.timestep, actions, obs_sent_ns=obs.sent_ns))


@contextlib.contextmanager
def mp_queue_row() -> Iterator[RoundTrip]:
    """multiprocessing.Queue both ways: what a first attempt at two processes looks like."""
    ctx = mp.get_context("spawn")
    up, down = ctx.Queue(), ctx.Queue()
    child = ctx.Process(target=_mp_echo, args=(up, down, os.getpid()), name="mp-echo", daemon=True)
    child.start()
    try:

        def roundtrip(obs: Observation) -> None:
            obs.sent_ns = time.monotonic_ns()
            up.put(obs)
            _await_chunk(lambda t: _get(down, t), obs.timestep)

        yield roundtrip
        up.put(None)
    finally:
        stop_child(child)
        for q in (up, down):
            q.close()
            q.join_thread()


def _get(q: mp.Queue, timeout_s: float) -> Any:
    try:
        return q.get(timeout=timeout_s)
    except queue.Empty:
        return None


def _grpc_echo(ports: mp.Queue) -> None:
    from asyncinf.transports.grpc import open_server  # noqa: PLC0415

    with open_server({"port": 0}) as server:
        ports.put(server.port)
        _echo_session(server)


@contextlib.contextmanager
def grpc_row() -> Iterator[RoundTrip]:
    """The asyncinf gRPC transport on loopback; the echo server runs in a spawned child."""
    from asyncinf.transports.grpc import open_client  # noqa: PLC0415

    ctx = mp.get_context("spawn")
    ports = ctx.Queue()
    child = ctx.Process(target=_grpc_echo, args=(ports,), name="grpc-echo", daemon=True)
    child.start()
    try:
        port = ports.get(timeout=60.0)
        with open_client({"target": f"127.0.0.1:{port}", "reconnect": False}) as client:
            yield _echo_roundtrip(client)
    finally:
        stop_child(child)


def _grpc_floor_echo(ports: mp.Queue, stop: Any) -> None:
    from asyncinf.runtime.bench.grpc_floor import floor_server  # noqa: PLC0415

    server, port = floor_server()
    ports.put(port)
    stop.wait(3600.0)
    server.stop(None)


@contextlib.contextmanager
def grpc_floor_row() -> Iterator[RoundTrip]:
    """The floor for gRPC: a bare bidi stream echoing raw bytes of the observation's size."""
    from asyncinf.runtime.bench.grpc_floor import FloorStream  # noqa: PLC0415

    ctx = mp.get_context("spawn")
    ports, stop = ctx.Queue(), ctx.Event()
    child = ctx.Process(target=_grpc_floor_echo, args=(ports, stop), name="grpc-floor", daemon=True)
    child.start()
    stream = None
    try:
        stream = FloorStream(ports.get(timeout=60.0), TIMEOUT_S)
        payloads: dict[int, bytes] = {}

        def roundtrip(obs: Observation) -> None:
            n = sum(a.nbytes for a in obs.images.values()) or obs.state.nbytes
            stream.roundtrip(payloads.setdefault(n, bytes(n)))

        yield roundtrip
    finally:
        if stream is not None:
            stream.close()
        stop.set()
        stop_child(child)


ROWS: dict[str, Row] = {
    "memcpy": memcpy_row,
    "shm": shm_row,
    "shm_nocrc": functools.partial(shm_row, "none"),
    "shm_crc_all": functools.partial(shm_row, "all"),
    "posix_ring": posix_ring_row,
    "posix_ring_block": functools.partial(posix_ring_row, spin=False),
    "iceoryx2": iceoryx2_row,
    "mp_queue": mp_queue_row,
    "grpc": grpc_row,
    "grpc_floor": grpc_floor_row,
}


# --- measuring ---------------------------------------------------------------------------------


# Back to back, the rows take turns in blocks, not sample by sample. Taking turns sample by
# sample, a row whose peer blocks (posix_ring) slept through every other row's round trip
# and woke each time from a deeper idle, while a spinning shm peer hardly paid: on a 2-core
# VM the ring's p50 was ~2.4x its own back to back, for the shm rows ~1.3x, which made the
# x ring ratios look better than they are (an idle shm peer's spin_us did not matter: the
# ring paid as much beside shm rows with spin_us=0). A turn first runs unrecorded round
# trips for SETTLE_S (the last row's peer stops spinning, this row's wakes and warms), then
# records BLOCK back to back; turns last milliseconds, so a noisy neighbour still hits the
# rows alike. Paced round trips each start after a sleep anyway: they take turns singly.
BLOCK = 50
SETTLE_S = 1e-3


def measure(
    roundtrips: dict[str, RoundTrip],
    payload_bytes: int,
    mode: str,
    *,
    n: int,
    warmup: int,
    advance: dict[str, Callable[[], None]] | None = None,
) -> dict[str, list[int]]:
    """`warmup` + `n` round trips per row, the rows taking turns in a rotating order (so a
    noisy neighbour hits them alike), back to back in blocks (see BLOCK); returns each
    row's last `n` durations in ns."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: choose one of {MODES}")
    state, images = payload_arrays(payload_bytes)
    rate = Rate(PACED_HZ) if mode == "paced" else None
    single = rate is not None or len(roundtrips) == 1
    block, settle_ns = (1, 0) if single else (BLOCK, int(SETTLE_S * 1e9))
    samples: dict[str, list[int]] = {row: [] for row in roundtrips}
    done = dict.fromkeys(roundtrips, -warmup)  # round trips recorded; below 0: warm-up left
    timestep = 0

    def once(roundtrip: RoundTrip) -> int:
        nonlocal timestep
        if rate is not None:
            rate.sleep()
        obs = Observation(timestep, time.monotonic_ns(), state, images)
        timestep += 1
        t0 = time.perf_counter_ns()
        roundtrip(obs)
        return time.perf_counter_ns() - t0

    turns = list(roundtrips.items())
    turn = 0
    while min(done.values()) < n:
        first = turn % len(turns)  # who goes first rotates: no row always follows the same one
        turn += 1
        for row, roundtrip in turns[first:] + turns[:first]:
            if settle_ns:
                settled = time.perf_counter_ns() + settle_ns
                once(roundtrip)
                while time.perf_counter_ns() < settled:
                    once(roundtrip)
            for _ in range(min(block, n - done[row])):
                elapsed = once(roundtrip)
                done[row] += 1
                if done[row] > 0:
                    samples[row].append(elapsed)
                    if advance is not None:
                        advance[row]()
    return samples


def summarize(samples_ns: list[int]) -> dict[str, float]:
    """p50/p90/p99/max in microseconds."""
    stats = percentiles(samples_ns, 1e-3, keys=("p50", "p90", "p99", "max"))
    return {f"{k}_us": round(v, 2) for k, v in stats.items()}


# Rows measured taking turns, so their ratios compare like with like: the shm checksum modes,
# their ring floors and iceoryx2's round trip.
INTERLEAVED = ("shm", "shm_nocrc", "shm_crc_all", "posix_ring", "posix_ring_block", "iceoryx2")


def _batches(rows: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Each row alone, except the INTERLEAVED ones asked for: one batch, at the first's place."""
    together = tuple(r for r in rows if r in INTERLEAVED)
    batches: list[tuple[str, ...]] = []
    for row in rows:
        if row not in together:
            batches.append((row,))
        elif row == together[0]:
            batches.append(together)
    return batches


def run(config: BenchConfig, progress: Callable[[str, int], Callable[[], None]] | None = None):
    """Every row × size × mode; returns result dicts in the JSON schema's shape.

    `progress(description, total)` is called before each measurement and returns a
    callable invoked after each sample.
    """
    unknown = [r for r in config.rows if r not in ROWS]
    if unknown:
        raise ValueError(f"unknown rows {unknown}; known: {sorted(ROWS)}")
    results = []
    for batch in _batches(config.rows):
        with contextlib.ExitStack() as stack:
            roundtrips = {row: stack.enter_context(ROWS[row]()) for row in batch}
            for size in config.sizes:
                for mode in config.modes:
                    n = config.iterations[mode]
                    advance = (
                        {row: progress(f"{row} {size:,} B {mode}", n) for row in batch}
                        if progress
                        else None
                    )
                    samples = measure(
                        roundtrips, size, mode, n=n, warmup=config.warmup, advance=advance
                    )
                    results.extend(
                        {
                            "transport": row,
                            "mode": mode,
                            "payload_bytes": size,
                            "n": len(samples[row]),
                            **summarize(samples[row]),
                        }
                        for row in batch
                    )
    return results


# Each row is judged against the floor measured beside it in the same run.
FLOOR_OF = {"grpc": "grpc_floor"}  # every other row: memcpy


def ratios_to_floor(results: list[dict[str, Any]]) -> dict[tuple[str, str, int], float]:
    """p50 of each row over its floor's p50 at the same mode and size (when the floor ran)."""
    p50 = {(r["transport"], r["mode"], r["payload_bytes"]): r["p50_us"] for r in results}
    out = {}
    for r in results:
        floor = FLOOR_OF.get(r["transport"], "memcpy")
        base = p50.get((floor, r["mode"], r["payload_bytes"]))
        if base:
            out[(r["transport"], r["mode"], r["payload_bytes"])] = r["p50_us"] / base
    return out


def _over(
    results: list[dict[str, Any]], base_row: str, rows: tuple[str, ...]
) -> dict[tuple[str, str, int], tuple[float, float]]:
    """(p50, p99) of each of `rows` over `base_row`'s at the same mode and size."""
    base = {(r["mode"], r["payload_bytes"]): r for r in results if r["transport"] == base_row}
    out = {}
    for r in results:
        b = base.get((r["mode"], r["payload_bytes"]))
        if r["transport"] in rows and b:
            out[(r["transport"], r["mode"], r["payload_bytes"])] = (
                r["p50_us"] / b["p50_us"],
                r["p99_us"] / b["p99_us"],
            )
    return out


# The shm rows' checksum cost: each over the row without any CRC, measured beside it.
UNCHECKED = "shm_nocrc"
CHECKED = ("shm", "shm_crc_all")


def checksum_cost(results: list[dict[str, Any]]) -> dict[tuple[str, str, int], tuple[float, float]]:
    """(p50, p99) of each checked shm row over `shm_nocrc`'s at the same mode and size."""
    return _over(results, UNCHECKED, CHECKED)


# How far each shm row is from the bare ring of the same layout, measured beside it.
RING = "posix_ring"
SHM_ROWS = ("shm", "shm_nocrc", "shm_crc_all")


def ring_ratio(results: list[dict[str, Any]]) -> dict[tuple[str, str, int], tuple[float, float]]:
    """(p50, p99) of each shm row over `posix_ring`'s at the same mode and size."""
    return _over(results, RING, SHM_ROWS)


# The shm rows against iceoryx2's event-driven round trip, measured beside them.
IOX2 = "iceoryx2"


def iox2_ratio(results: list[dict[str, Any]]) -> dict[tuple[str, str, int], tuple[float, float]]:
    """(p50, p99) of each shm row over `iceoryx2`'s at the same mode and size."""
    return _over(results, IOX2, SHM_ROWS)


# Rows that need an optional package: the module whose `load()` imports it, or raises
# ModuleNotFoundError with the line that says how to install it.
OPTIONAL = {"iceoryx2": "asyncinf.runtime.bench.iceoryx2_ring"}


def missing(rows: tuple[str, ...]) -> dict[str, str]:
    """Each of `rows` whose optional package is not installed → that line."""
    out = {}
    for row in rows:
        if row in OPTIONAL:
            try:
                importlib.import_module(OPTIONAL[row]).load()
            except ModuleNotFoundError as exc:
                out[row] = str(exc)
    return out


def _ratio_rows(ratios: dict[tuple[str, str, int], tuple[float, float]]) -> list[dict[str, Any]]:
    return [
        {"transport": t, "mode": m, "payload_bytes": n, "p50_ratio": round(p50, 3),
         "p99_ratio": round(p99, 3)}
        for (t, m, n), (p50, p99) in ratios.items()
    ]  # fmt: skip


def report(results: list[dict[str, Any]], mode: str) -> dict[str, Any]:
    """The `--json` document."""
    return {
        "schema": JSON_SCHEMA,
        "mode": mode,
        "results": results,
        "checksum_cost": _ratio_rows(checksum_cost(results)),
        "ring_ratio": _ratio_rows(ring_ratio(results)),
        "iox2_ratio": _ratio_rows(iox2_ratio(results)),
    }
