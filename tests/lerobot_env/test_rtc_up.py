"""Real-time chunking end to end with a tiny SmolVLA: `up --local` (shared memory) and
`up --remote` against `asyncinf serve` (gRPC), RTC off and on, LeRobot's own RTC processor.

The tiny random SmolVLA's successive chunks disagree by tens of joint units, so without RTC
every seam jumps; with RTC the new chunk starts on the queued tail. What is asserted is the
median seams' ratio, with a margin (measured here: ~0.01x): on a loaded machine one inference
that stalls past the execution horizon leaves that one seam unguided, so p99 is the benchmark's
to report, not a test's to assert.
"""

from __future__ import annotations

import json
import subprocess

import pytest
from cli_processes import CLI, Command

RUN = ["--robot.type=sim", "--duration=10", "--task=pick up the cube"]


def smolvla(checkpoints):
    return ["--policy.type=smolvla", f"--policy.path={checkpoints['smolvla']}"]


def run_up(tmp_path, *args):
    summary = tmp_path / f"s{len(list(tmp_path.iterdir()))}.json"
    r = subprocess.run(
        [*CLI, "up", *RUN, f"--summary-json={summary}", *args],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-6000:]
    return json.loads(summary.read_text())


def assert_rtc_smooths_the_seams(off, on):
    for s in (off, on):
        assert s["chunks_received"] >= 5 and s["errors"] == 0 and s["rejected_chunks"] == 0, s
        assert s["idle_frames_after_first_chunk"] == 0, s
    assert on["inference_delay"]["chunks"] >= 3
    assert on["seam_jump"]["p50"] < 0.2 * off["seam_jump"]["p50"], (on, off)


def test_rtc_over_shared_memory(checkpoints, tmp_path):
    off = run_up(tmp_path, "--local", *smolvla(checkpoints))
    on = run_up(tmp_path, "--local", *smolvla(checkpoints), "--rtc")
    assert_rtc_smooths_the_seams(off, on)


def test_rtc_over_grpc(checkpoints, tmp_path):
    # The server preloads the RTC variant; the client without --rtc gets a plain one beside it.
    # One OpenMP thread, as `up --local` gives its server: client and server share two cores
    # here, and torch on both of them beside a busy control loop takes ~8x longer per chunk.
    serve = Command(
        ["serve", "--port=0", "--robot.type=sim", *smolvla(checkpoints), "--rtc"],
        tmp_path / "serve.log", env={"OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    try:
        port = serve.wait_for_log(r"serving on 127\.0\.0\.1:(\d+)", 180).group(1)
        where = f"--remote=127.0.0.1:{port}"
        on = run_up(tmp_path, where, *smolvla(checkpoints), "--rtc")
        off = run_up(tmp_path, where, *smolvla(checkpoints))
        assert serve.ctrl_c() in (0, 130), serve.text()[-3000:]
    finally:
        serve.kill()
    assert_rtc_smooths_the_seams(off, on)


@pytest.mark.parametrize("kind", ["act", "diffusion"])
def test_rtc_refused_before_start_for_a_policy_without_it(checkpoints, kind):
    r = subprocess.run(
        [*CLI, "up", "--local", *RUN, f"--policy.type={kind}",
         f"--policy.path={checkpoints[kind]}", "--rtc"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 78, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    (line,) = [ln for ln in r.stderr.splitlines() if "rtc" in ln.lower()]
    assert all(name in line for name in ("smolvla", "pi0", "pi05")), line
