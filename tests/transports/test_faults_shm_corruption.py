"""Fault drills: another process scribbles over the segment of a running `up --local`.

Each drill writes into one region while the robot is moving, then stops the run, and
asserts: the corruption was found and counted (`sessions_corrupted` in the summary), the
client let go of the session naming it, the supervisor recovered it on a new generation
(actions again, within RECOVER_S), no commanded target ever left the policy's range (the
scripted policy keeps every joint within ±AMPLITUDE, the garbage is far outside), no Python
traceback, and a bounded log.
"""

from __future__ import annotations

import json
import random
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from stray_writer import StrayWriter

from asyncinf.runtime.supervise.exitcodes import ExitCode
from asyncinf.runtime.testing import LineReader
from asyncinf.transports.shm import layout as L

pytestmark = [pytest.mark.faults, pytest.mark.slow]

AMPLITUDE = 20.0  # the scripted policy's swing; grippers swing about 50 (0..100)
GARBAGE = 5000.0  # a finite action no joint of the policy ever reaches
LOG_BYTES_MAX = 200_000
RECOVER_S = 10.0  # from the client letting go to actions again: a generous bound, not a speed
RESUMED = 30  # commands after the client let go: the robot moves again, not one stray action


def garbage_actions(s: StrayWriter) -> None:
    """Finite garbage into the last action of every chunk slot that holds a frame."""
    chunks = s.layout.chunks
    for i in range(chunks.slots):
        n = s.word(chunks.entry(i))
        if 64 <= n <= chunks.slot_bytes:
            s.write(chunks.slot_offset(i) + n - 8, struct.pack("<2f", GARBAGE, -GARBAGE))


def random_bytes_in_observation_headers(s: StrayWriter) -> None:
    for i in range(s.layout.obs.slots):
        s.write(s.layout.obs.slot_offset(i) + 8, random.randbytes(32))


DRILLS: dict[str, Callable[[StrayWriter], None]] = {
    "chunk action floats": garbage_actions,
    "chunk ring head": lambda s: s.poke(L.W_CHUNK_HEAD, s.word(L.W_CHUNK_HEAD) + 3),
    "chunk ring tail": lambda s: s.poke(L.W_CHUNK_TAIL, -(2**40)),
    "control ring head": lambda s: s.poke(L.W_UPCTL_HEAD, s.word(L.W_UPCTL_HEAD) + 5),
    "control ring tail (a replayed handshake)": lambda s: s.poke(L.W_UPCTL_TAIL, 0),
    "observation slot header": random_bytes_in_observation_headers,
    "observation table": lambda s: s.poke(s.layout.obs.entry(s.word(L.W_OBS_LATEST)), 2**50),
    "header index": lambda s: s.poke(L.W_OBS_LATEST, 12_345),
    "pid word": lambda s: s.poke(L.W_SERVER_PID, 0x7FFF_FFFF_FFFF_0000),
}


def _commands(path: Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f]


@pytest.mark.parametrize("drill", list(DRILLS))
def test_a_stray_write_ends_the_session_and_no_corrupt_action_runs(tmp_path, drill) -> None:
    commands, summary = tmp_path / "commands.jsonl", tmp_path / "summary.json"
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "asyncinf.runtime.cli", "up", "--local",
            "--robot.type=fake", f"--robot.command_log={commands}",
            "--policy.type=scripted", f"--policy.amplitude={AMPLITUDE}",
            "--actions_per_chunk=10", f"--summary-json={summary}", "--stop-timeout=10",
        ],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    err = LineReader(proc.stderr)
    try:
        err.wait_for("client started", timeout_s=60)
        deadline = time.monotonic() + 30
        while not commands.exists() or len(_commands(commands)) < 20:
            assert proc.poll() is None and time.monotonic() < deadline, err.text()
            time.sleep(0.05)
        # Again and again until found: a slot the other end rewrites first heals, harmlessly.
        scribbler = StrayWriter.of_run(proc.pid)
        try:
            deadline = time.monotonic() + 10
            while "corrupt" not in err.text():
                assert time.monotonic() < deadline, f"not found:\n{err.text()}"
                DRILLS[drill](scribbler)
                time.sleep(0.0005)
        finally:
            scribbler.close()
        err.wait_for("server lost (shared memory", timeout_s=10)
        lost_at, before = time.monotonic(), len(_commands(commands))
        while len(_commands(commands)) < before + RESUMED:
            assert time.monotonic() - lost_at < RECOVER_S, f"not recovered:\n{err.text()}"
            time.sleep(0.05)
        took_s = time.monotonic() - lost_at
        print(f"{drill}: {RESUMED} actions run {took_s:.2f} s after the client let go")
        err.wait_for("recovered", timeout_s=10)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        err.join()
    text = err.text()
    assert proc.returncode == ExitCode.INTERRUPTED, text
    assert "Traceback" not in text and "OverflowError" not in text, text
    assert "session ended (1 so far by corruption)" in text, text  # the server's side
    assert len(text) < LOG_BYTES_MAX and text.count("corrupt") < 10, text[-3000:]
    targets = [r["target"] for r in _commands(commands) if r["event"] == "command"]
    assert targets, text
    worst = max(abs(v) for target in targets for v in target)
    assert worst <= 100.0, f"a target of {worst} was commanded (garbage is {GARBAGE})"
    s = json.loads(summary.read_text())
    assert s["sessions_corrupted"] >= 1 and s["server_lost"] >= 1, s
