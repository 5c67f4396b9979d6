"""Fault drills with several robots on one server: one session misbehaves (its client is
killed with SIGKILL, it sends observations unlike its handshake, its segment is scribbled
over) while the others go on with 0 idle frames after their first chunk. The autouse leak
fixture checks that every shared-memory object goes, also after the kill -9."""

from __future__ import annotations

import json
import mmap
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from asyncinf.runtime.messages import Observation
from asyncinf.runtime.supervise.exitcodes import ExitCode
from asyncinf.runtime.testing import LineReader, hello, wait_until
from asyncinf.transports.grpc import open_client
from asyncinf.transports.shm import names
from asyncinf.transports.shm.layout import W_OBS_SEQ

INDEXES = W_OBS_SEQ * 8  # the byte offset of the segment's ring indexes

pytestmark = [pytest.mark.faults, pytest.mark.slow]

CLI = [sys.executable, "-m", "asyncinf.runtime.cli"]
TINY = ["--policy.type=tiny_torch", "--policy.hidden=16", "--policy.image_size=48"]
NAMES = ["a", "b", "c", "d"]


def robots_file(tmp_path):
    path = tmp_path / "robots.yaml"
    path.write_text("robots:\n" + "".join(f"  - {{name: {n}, type: sim}}\n" for n in NAMES))
    return path


def up_fleet(tmp_path, duration, *args):
    summary = tmp_path / "summary.json"
    proc = subprocess.Popen(
        [*CLI, "up", "--local", f"--robots={robots_file(tmp_path)}", *TINY,
         f"--duration={duration}", f"--summary-json={summary}", "--start-timeout=120", *args],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    return proc, LineReader(proc.stderr), summary


def ended(proc, timeout_s=60):
    """Wait for the run's end; kill it (and reap it) if it does not end in time."""
    try:
        proc.wait(timeout_s)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def good_robots(summary, bad):
    robots = json.loads(summary.read_text())["robots"]
    for name in NAMES:
        if name == bad:
            continue
        s = robots[name]
        assert s["chunks_received"] > 3 and s["errors"] == 0, (name, s)
        assert s["idle_frames_after_first_chunk"] == 0, (name, s)
    return robots


def test_a_killed_client_leaves_the_other_robots_running(tmp_path):
    proc, err, summary = up_fleet(tmp_path, duration=10)
    try:
        err.wait_for("state: running", 120)
        pid = int(re.search(r"client b started \(pid (\d+)\)", err.text()).group(1))
        os.kill(pid, signal.SIGKILL)
        err.wait_for("client b lost: killed by SIGKILL")
    finally:
        ended(proc)
    text = err.join()
    assert proc.returncode == ExitCode.CLIENT_LOST, text  # the run says a robot was lost
    assert "the other robots go on: a, c, d" in text
    robots = good_robots(summary, bad="b")
    assert "b" not in robots  # killed: it wrote no summary
    assert "Traceback" not in text


def scribble_over_b(proc):
    """Robot b's session is the second one made (g1): for a second, scribble over its whole
    segment from its ring indexes on (the sizes, pids and heartbeats before them stay), as a
    stray writer would. The indexes are read on every call: the damage is found."""
    seg = next(
        o for o in names.list_objects()
        if o.pid == proc.pid and o.role == names.SEGMENT and not o.semaphore
        and o.generation == 1
    )  # fmt: skip
    with open(seg.path, "r+b") as f, mmap.mmap(f.fileno(), 0) as mm:
        garbage = np.random.default_rng(0).integers(0, 256, len(mm) - INDEXES, np.uint8)
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            mm[INDEXES:] = garbage.tobytes()


def test_a_corrupt_segment_ends_only_its_own_session(tmp_path):
    proc, err, summary = up_fleet(tmp_path, 10)
    try:
        err.wait_for("state: running", 120)
        scribble_over_b(proc)
    finally:
        ended(proc)
    text = err.join()
    assert re.search(r"shared memory of \S+ (is )?corrupt", text), text
    good_robots(summary, bad="b")
    assert "Traceback" not in text


def test_a_robot_that_cannot_be_recovered_is_stopped_alone_and_the_run_ends_stalled(tmp_path):
    # Its segment stays corrupt, so the re-handshake on it fails; a server restart would move
    # the other robots, so robot b's client alone is stopped, its robot holding still.
    proc, err, summary = up_fleet(tmp_path, 12, "--progress-timeout=1")
    try:
        err.wait_for("state: running", 120)
        scribble_over_b(proc)
        err.wait_for("stopping its client; the other robots go on", 30)
        err.wait_for("client b stopped: exit code 0", 15)  # seen out while the others go on
        assert proc.poll() is None and "--duration reached" not in err.text(), err.text()
    finally:
        ended(proc)
    text = err.join()
    assert proc.returncode == ExitCode.STALLED, text
    assert text.count("client b stopped") == 1, text  # not again at the run's end
    assert re.search(r"the robot b has held for [\d.]+ s \(.*\) while both processes are "
                     r"alive: re-handshake", text), text  # fmt: skip
    assert "a re-handshake on its own session" in text
    assert ": server restart" not in text and "restarting the server" not in text
    robots = good_robots(summary, bad="b")
    assert robots["b"]["sessions_corrupted"] >= 1, robots["b"]  # it stopped cleanly: a summary
    assert "Traceback" not in text


def test_a_paused_client_is_re_handshaked_alone_and_moves_again(tmp_path):
    # Paused past the server's peer timeout, robot b's session ends on the server's side;
    # once it runs again it learns so, and the supervisor re-handshakes it on its own session.
    proc, err, summary = up_fleet(tmp_path, 14)
    try:
        err.wait_for("state: running", 120)
        pid = int(re.search(r"client b started \(pid (\d+)\)", err.text()).group(1))
        os.kill(pid, signal.SIGSTOP)
        time.sleep(2.5)  # the pause itself (server's peer timeout: 1 s), not a synchronisation
        os.kill(pid, signal.SIGCONT)
        err.wait_for("the robot b moves again: recovered", 30)
    finally:
        ended(proc)
    text = err.join()
    assert proc.returncode == ExitCode.OK, text
    assert re.search(r"the robot b has held .*: re-handshake", text), text
    assert "restarting the server" not in text
    robots = good_robots(summary, bad="b")
    assert robots["b"]["chunks_received"] > 3, robots["b"]
    assert "Traceback" not in text


def test_remote_sessions_go_on_beside_a_killed_and_a_garbage_client(tmp_path):
    serve = subprocess.Popen(
        [*CLI, "serve", "--host=127.0.0.1", "--port=0", "--robot.type=sim", *TINY,
         "--max_sessions=5"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    serve_err = LineReader(serve.stderr)
    procs = []
    try:
        serve_err.wait_for("serving on 127.0.0.1:", 120)
        port = int(re.search(r"serving on 127\.0\.0\.1:(\d+)", serve_err.text()).group(1))
        summaries = [tmp_path / f"s{i}.json" for i in range(4)]
        up = [*CLI, "up", f"--remote=127.0.0.1:{port}", "--robot.type=sim", *TINY, "--duration=10"]
        procs = [
            subprocess.Popen([*up, f"--summary-json={p}"], stderr=subprocess.PIPE, text=True)
            for p in summaries
        ]
        wait_until(lambda: serve_err.text().count("session started") >= 4, 60, "4 sessions")
        # A fifth session that sends observations unlike its handshake (3 joints, not 2).
        garbage = open_client({"target": f"127.0.0.1:{port}"})
        garbage.handshake(hello(), 30)
        errors = 0
        procs[-1].send_signal(signal.SIGKILL)  # and one robot's client dies
        end = time.monotonic() + 4
        while time.monotonic() < end:
            garbage.send_observation(Observation(0, 0, np.zeros(3, np.float32), {}))
            got = garbage.receive(0.05)
            errors += got is not None and getattr(got, "code", "") == "bad_observation"
        garbage.close()
        results = [(p.wait(60), p.stderr.read()) for p in procs[:-1]]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        serve.send_signal(signal.SIGINT)
        serve.wait(30)
    log = serve_err.join()
    assert errors > 3, log  # the garbage client was told, observation after observation
    for (code, text), path in zip(results, summaries, strict=False):
        assert code == 0, text
        s = json.loads(path.read_text())
        assert s["chunks_received"] > 3 and s["errors"] == 0, s
        assert s["idle_frames_after_first_chunk"] == 0, s
    assert "Traceback" not in log
