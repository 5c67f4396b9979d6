"""The bare ring floor of `bench transport`: it answers, shows up beside the shm rows (and
iceoryx2's) with its ratios, and leaves no POSIX object behind, also when the round trips fail."""

import json
import multiprocessing as mp
import subprocess
import sys

import numpy as np
import pytest

from asyncinf.runtime.bench.posix_ring import posix_ring
from asyncinf.runtime.testing import wait_until
from asyncinf.transports.shm.names import SHM_DIR


def _on_disk(objects: tuple[str, ...]) -> list[str]:
    """Which of the ring's objects /dev/shm still shows (semaphores as sem.<name>)."""
    seg, *sems = (name.lstrip("/") for name in objects)
    paths = [SHM_DIR / seg, *(SHM_DIR / f"sem.{s}" for s in sems)]
    return [str(p) for p in paths if p.exists()]


@pytest.mark.parametrize("spin_us", [0, 500], ids=["blocking", "spinning"])
def test_ring_round_trips_return_the_chunk_and_unlink_every_object(spin_us):
    state = np.arange(16, dtype=np.float32)
    with posix_ring(1 << 20, (50, 14), spin_us=spin_us) as sender:
        assert len(_on_disk(sender.objects)) == 3
        for _ in range(50):
            chunk = sender([state], 10.0)
            assert chunk.shape == (50, 14) and chunk.dtype == np.float32
        objects = sender.objects
    assert _on_disk(objects) == []


def test_a_spinning_end_still_blocks_and_times_out_once_its_spin_is_over():
    # The peer answers nothing once told to stop: the sender's wait must end at its timeout.
    with posix_ring(4096, (50, 14), spin_us=2000) as sender:
        sender([np.zeros(16, np.float32)], 10.0)
        sender.stop()
        wait_until(lambda: not mp.active_children(), 10, "the peer to leave")
        with pytest.raises(TimeoutError, match=r"no chunk within 0\.2 s"):
            sender([np.zeros(16, np.float32)], 0.2)


def test_ring_objects_are_unlinked_when_the_caller_fails():
    with pytest.raises(RuntimeError, match="boom"), posix_ring(4096, (50, 14)) as sender:
        objects = sender.objects
        sender([np.zeros(16, np.float32)], 10.0)
        raise RuntimeError("boom")
    assert _on_disk(objects) == []


@pytest.mark.slow
def test_bench_prints_the_ring_and_iceoryx2_rows_and_the_shm_rows_ratios_to_them(tmp_path):
    out = tmp_path / "t.json"
    before = {p.name for p in SHM_DIR.glob("*asyncinf.*.ring*")}
    r = subprocess.run(
        [sys.executable, "-m", "asyncinf.runtime.cli", "bench", "transport", "-n", "20",
         "--sizes", "64,3072", "--mode", "both",
         "--transports", "shm,shm_nocrc,posix_ring,iceoryx2", "--json", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "posix_ring" in r.stdout and "× ring" in r.stdout
    assert "iceoryx2" in r.stdout and "× iox2" in r.stdout
    doc = json.loads(out.read_text())
    keys = {(m, n) for m in ("backtoback", "paced") for n in (64, 3072)}
    got = {(x["transport"], x["mode"], x["payload_bytes"]) for x in doc["results"]}
    assert {(t, m, n) for t in ("posix_ring", "iceoryx2") for m, n in keys} <= got
    for base in ("ring_ratio", "iox2_ratio"):
        ratios = {(x["transport"], x["mode"], x["payload_bytes"]): x for x in doc[base]}
        assert set(ratios) == {(t, m, n) for t in ("shm", "shm_nocrc") for m, n in keys}
        assert all(x["p50_ratio"] > 0 and x["p99_ratio"] > 0 for x in ratios.values())
    assert {p.name for p in SHM_DIR.glob("*asyncinf.*.ring*")} <= before
