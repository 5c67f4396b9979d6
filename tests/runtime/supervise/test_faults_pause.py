"""Pauses (SIGSTOP, then SIGCONT) of either process, over shared memory and over gRPC.

A paused peer must be re-attached when it runs again, a client that holds while both
processes live must be recovered or end the run non-zero, and a busy server must be waited
for. Real processes, real signals; `pytest -m faults` runs them with the other drills.
"""

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from asyncinf.runtime.supervise.exitcodes import ExitCode
from asyncinf.runtime.supervise.status_file import StatusFileError, read_status_file
from asyncinf.runtime.testing import LineReader, started, wait_until

pytestmark = [pytest.mark.faults, pytest.mark.slow]

CLI = [sys.executable, "-m", "asyncinf.runtime.cli"]
PAUSE_S = 5.0
RECOVERED_WITHIN_S = 3.0  # the target: actions again within 3 s of SIGCONT
SUSTAINED_S = 1.0  # "actions again": commands at the control rate for this long, no hold
GAP_S = 0.2  # a longer gap between two commands at 30 fps is a hold


class Serve:
    """`asyncinf serve` on a free loopback port, its log read as it comes."""

    def __init__(self):
        self.proc = subprocess.Popen(
            [*CLI, "serve", "--host=127.0.0.1", "--port=0", "--robot.type=fake",
             "--policy.type=fake"],
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.err = LineReader(self.proc.stderr)
        self.err.wait_for("serving on")
        self.port = int(re.search(r"serving on 127\.0\.0\.1:(\d+)", self.err.text()).group(1))

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.terminate()
        self.proc.wait(timeout=20)
        self.err.join()


@pytest.fixture
def serve():
    yield from started(Serve, Serve.stop)


class Up:
    """One `asyncinf up` under test: its status file, summary and the robot's command log."""

    def __init__(self, tmp_path, where, *args, name="up"):
        d = tmp_path / name
        d.mkdir()
        self.status_path, self.summary_path = d / "status.json", d / "summary.json"
        self.commands = d / "commands.jsonl"
        self.proc = subprocess.Popen(
            [*CLI, "up", *where, "--robot.type=fake", "--policy.type=fake",
             f"--robot.command_log={self.commands}", f"--status-json={self.status_path}",
             f"--summary-json={self.summary_path}", *args],
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.err = LineReader(self.proc.stderr)

    def status(self):
        """The status file as it is now; None before the first write."""
        with contextlib.suppress(StatusFileError):
            return read_status_file(self.status_path)
        return None

    def wait_for(self, predicate, what, timeout_s=30.0):
        """The first status that satisfies `predicate`, while the run is alive."""
        seen = []

        def found():
            assert self.proc.poll() is None, f"exited waiting for {what}:\n{self.err.join()}"
            seen.append(self.status())
            return seen[-1] is not None and predicate(seen[-1])

        wait_until(found, timeout_s, what, poll_s=0.02)
        return seen[-1]

    def command_times_ns(self):
        if not self.commands.exists():
            return []
        with open(self.commands) as f:
            records = [json.loads(line) for line in f]
        return [r["t_ns"] for r in records if r["event"] == "command"]

    def resumed_at_ns(self, after_ns, timeout_s=15.0):
        """The first command after `after_ns` that starts SUSTAINED_S of commands, no hold."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            times = [t for t in self.command_times_ns() if t > after_ns]
            start = None
            for prev, t in zip([None, *times], times, strict=False):
                if start is None or t - prev > GAP_S * 1e9:
                    start = t
                if t - start >= SUSTAINED_S * 1e9:
                    return start
            assert self.proc.poll() is None, (
                f"exited ({self.finish()}) before actions resumed:\n{self.err.text()}"
            )
            time.sleep(0.05)
        raise AssertionError(f"actions did not resume:\n{self.err.text()}")

    def summary(self):
        return json.loads(self.summary_path.read_text())

    def finish(self, timeout_s=60.0):
        self.proc.wait(timeout=timeout_s)
        self.err.join()
        return self.proc.returncode


def running(s):
    return s.state == "running" and s.client.state == "running"


def start(tmp_path, serve, transport, *args, name="up"):
    """An `up --local`, or an `up --remote` against a new `serve`; and that serve (or None)."""
    if transport == "shm":
        return Up(tmp_path, ["--local"], *args, name=name), None
    server = serve()
    return Up(tmp_path, [f"--remote=127.0.0.1:{server.port}"], *args, name=name), server


@pytest.mark.parametrize("paused", ["server", "client"])
@pytest.mark.parametrize("transport", ["shm", "grpc"])
def test_a_paused_process_is_reattached_when_it_continues(tmp_path, serve, transport, paused):
    run, server = start(tmp_path, serve, transport, "--duration=20")
    first = run.wait_for(running, "running")
    run.resumed_at_ns(0)
    if paused == "client":
        pid = first.client.pid
    else:
        pid = first.server.pid if server is None else server.proc.pid
    stopped = time.monotonic()
    os.kill(pid, signal.SIGSTOP)
    if paused == "server":  # the hold is live in `asyncinf status` while the server is stopped
        s = run.wait_for(lambda s: s.client.hold_s > 1.0, "the hold in the status")
        assert s.client.hold_reason in ("server lost", "waiting for a chunk", "link down"), s
    time.sleep(max(0.0, PAUSE_S - (time.monotonic() - stopped)))
    continued_ns = time.monotonic_ns()
    os.kill(pid, signal.SIGCONT)
    resumed_ns = run.resumed_at_ns(continued_ns)
    assert (resumed_ns - continued_ns) / 1e9 < RECOVERED_WITHIN_S, run.err.text()
    assert run.finish() == ExitCode.OK, run.err.text()
    held = run.summary()["held"]
    # The queue covers part of the pause; the hold never outlasts it by the recovery bound.
    assert 1.0 < held["total_s"] < PAUSE_S + RECOVERED_WITHIN_S, held
    assert 0 < held["fraction"] < 0.5, held
    if paused == "client":  # a frozen control loop: the robot held, whatever came after
        assert held["reasons_s"]["control loop stalled"] > PAUSE_S - 1, held


@pytest.mark.parametrize("transport", ["shm", "grpc"])
def test_a_hold_that_nothing_recovers_ends_the_run_stalled(tmp_path, serve, transport):
    # No restart allowed (shm), none possible (gRPC): re-handshakes to a stopped server fail.
    run, server = start(
        tmp_path, serve, transport, "--duration=60", "--progress-timeout=1.5", "--max-restarts=0"
    )
    first = run.wait_for(running, "running")
    run.resumed_at_ns(0)
    pid = first.server.pid if server is None else server.proc.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        assert run.finish(timeout_s=40) == ExitCode.STALLED, run.err.text()
    finally:
        with contextlib.suppress(ProcessLookupError):  # the shm server was killed at the stop
            os.kill(pid, signal.SIGCONT)
    err = run.err.text()
    assert "did not recover it: stopping" in err, err
    assert "re-handshake" in err
    assert run.summary()["held"]["total_s"] > 1.5


def test_a_run_that_held_through_most_of_it_does_not_exit_0(tmp_path):
    # Every inference fails: the robot never moves, nothing crashes, and the run still must
    # not look fine. (The re-handshake at 3 s cannot fix a failing policy; the run ends by
    # --duration before a server restart would be tried.)
    run = Up(
        tmp_path, ["--local"], "--duration=6", "--progress-timeout=3",
        "--policy.fail_every=1", "--max_consecutive_errors=1000",
    )  # fmt: skip
    assert run.finish() == ExitCode.STALLED, run.err.text()
    held = run.summary()["held"]
    assert held["fraction"] > 0.5, held
    assert "of the run (waiting for a chunk" in run.err.text()


def test_a_busy_server_is_waited_for_until_the_first_client_leaves(tmp_path, serve):
    server = serve()
    target = f"--remote=127.0.0.1:{server.port}"
    first = Up(tmp_path, [target], name="first")
    first.wait_for(running, "the first client")
    second = Up(tmp_path, [target], "--duration=3", "--start-timeout=60", name="second")
    second.err.wait_for("server busy")
    assert second.status() is None or second.status().client.state == "starting"
    first.proc.send_signal(signal.SIGINT)
    assert first.finish() == ExitCode.INTERRUPTED, first.err.text()
    second.wait_for(running, "the second client, once the first left")
    assert second.finish() == ExitCode.OK, second.err.text()
    assert second.summary()["actions_executed"] > 0


def test_a_server_busy_past_start_timeout_exits_75(tmp_path, serve):
    server = serve()
    target = f"--remote=127.0.0.1:{server.port}"
    first = Up(tmp_path, [target], name="first")
    first.wait_for(running, "the first client")
    second = Up(tmp_path, [target], "--start-timeout=2", name="second")
    assert second.finish() == ExitCode.SERVER_BUSY, second.err.text()
    assert "still busy after 2 s of retries" in second.err.text()
    first.proc.send_signal(signal.SIGINT)
    assert first.finish() == ExitCode.INTERRUPTED
