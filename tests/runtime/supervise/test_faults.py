"""Fault injection with real processes and real signals (`pytest -m faults` runs them alone).

Every run asserts: the robot was never commanded after it was disconnected (the stop), the
exit code is the documented one, and (through the autouse leak fixture) no shared-memory
object or semaphore of ours is left behind.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from asyncinf.runtime.supervise.exitcodes import ExitCode
from asyncinf.runtime.supervise.status_file import StatusFileError, read_status_file
from asyncinf.runtime.testing import LineReader

pytestmark = [pytest.mark.faults, pytest.mark.slow]

UP = [sys.executable, "-m", "asyncinf.runtime.cli", "up", "--local", "--robot.type=fake"]
QUICK_RESTART = ["--restart-backoff=0.2", "--hang-timeout=1.5", "--stop-timeout=10"]


class Run:
    """One `asyncinf up --local` under test, with its status file and the robot's log."""

    def __init__(self, tmp_path, *args):
        self.status_path = tmp_path / "status.json"
        self.commands = tmp_path / "commands.jsonl"
        self.proc = subprocess.Popen(
            [*UP, f"--robot.command_log={self.commands}", f"--status-json={self.status_path}",
             *QUICK_RESTART, *args],
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.err = LineReader(self.proc.stderr)

    @property
    def stderr(self):
        return self.err.text()

    def status(self):
        try:
            return read_status_file(self.status_path)
        except StatusFileError:
            return None

    def wait_for(self, predicate, what, timeout_s=30.0):
        deadline = time.monotonic() + timeout_s
        while True:
            s = self.status()
            if s is not None and predicate(s):
                return s
            if self.proc.poll() is not None:
                self.finish()
                raise AssertionError(
                    f"exited ({self.proc.returncode}) waiting for {what}:\n{self.stderr}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.02)

    def log(self):
        if not self.commands.exists():
            return []
        with open(self.commands) as f:
            return [json.loads(line) for line in f]

    def commands_after(self, t_ns):
        return [r for r in self.log() if r["event"] == "command" and r["t_ns"] > t_ns]

    def wait_commands_after(self, t_ns, n=5, timeout_s=30.0):
        deadline = time.monotonic() + timeout_s
        while len(self.commands_after(t_ns)) < n:
            assert self.proc.poll() is None, self.finish()
            assert time.monotonic() < deadline, f"actions did not resume:\n{self.stderr}"
            time.sleep(0.02)
        return self.commands_after(t_ns)[0]["t_ns"]

    def finish(self, timeout_s=30.0):
        self.proc.wait(timeout=timeout_s)
        self.err.join()
        return self.proc.returncode

    def assert_stopped_safely(self):
        events = [r["event"] for r in self.log()]
        assert "command_after_disconnect" not in events
        err = self.stderr
        if "connect" in events:
            assert events[-1] == "disconnect", f"{events[-3:]}\n{err}"
        if "stopping client" in err and "stopping server" in err:
            assert err.index("stopping client") < err.index("stopping server")


def running(s):
    return s.state == "running" and s.client.state == "running"


@pytest.mark.parametrize("run_index", range(20))
def test_server_kill9_at_a_random_point_is_survived(tmp_path, run_index):
    rng = random.Random(run_index)
    # Alternate the server's work so the kill lands idle, mid-inference or mid-write.
    latency_ms = [0, 5, 80][run_index % 3]
    run = Run(tmp_path, "--policy.type=fake", f"--policy.latency_ms={latency_ms}")
    first = run.wait_for(running, "running")
    run.wait_commands_after(0, n=3)
    time.sleep(rng.uniform(0, 0.3))
    killed_ns = time.monotonic_ns()
    os.kill(first.server.pid, signal.SIGKILL)
    after = run.wait_for(
        lambda s: running(s) and s.server.pid != first.server.pid and s.server.restarts == 1,
        "the restarted server",
    )
    assert after.client.pid == first.client.pid  # the client was not restarted
    run.wait_commands_after(killed_ns + 1, n=5)
    run.proc.send_signal(signal.SIGINT)
    assert run.finish() == ExitCode.INTERRUPTED, run.stderr
    run.assert_stopped_safely()


def test_server_kill9_during_load_is_a_failed_start(tmp_path):
    run = Run(tmp_path, "--policy.type=fake", "--policy.load_s=3")
    s = run.wait_for(lambda s: s.server.pid is not None, "the server to start")
    run.err.wait_for("loading policy")  # and it is 3 s into nothing but its load
    os.kill(s.server.pid, signal.SIGKILL)
    assert run.finish() == ExitCode.RUNTIME_FAILURE, run.stderr
    assert "killed by SIGKILL (by another process or the kernel's out-of-memory" in run.stderr
    assert run.stderr.count("server started") == 1  # no restart loop before ready
    run.assert_stopped_safely()


def test_server_hang_is_detected_and_the_server_replaced(tmp_path):
    run = Run(tmp_path, "--policy.type=fake", "--policy.latency_ms=5")
    first = run.wait_for(running, "running")
    os.kill(first.server.pid, signal.SIGSTOP)
    stopped_ns = time.monotonic_ns()
    run.wait_for(lambda s: running(s) and s.server.pid != first.server.pid, "a new server")
    run.wait_commands_after(stopped_ns, n=5)
    run.proc.send_signal(signal.SIGTERM)
    assert run.finish() == ExitCode.OK, run.stderr
    assert "server sent no heartbeat" in run.stderr
    run.assert_stopped_safely()


def test_restarts_past_the_limit_stop_client_first_with_code_1(tmp_path):
    run = Run(tmp_path, "--policy.type=fake", "--max-restarts=1")
    for expected_restarts in (0, 1):
        s = run.wait_for(
            lambda s, n=expected_restarts: running(s) and s.server.restarts == n, "running"
        )
        os.kill(s.server.pid, signal.SIGKILL)
    assert run.finish() == ExitCode.RUNTIME_FAILURE, run.stderr
    assert "giving up" in run.stderr
    run.assert_stopped_safely()


def test_client_kill9_stops_the_server_and_exits_client_lost(tmp_path):
    run = Run(tmp_path, "--policy.type=fake")
    s = run.wait_for(running, "running")
    run.wait_commands_after(0, n=3)
    os.kill(s.client.pid, signal.SIGKILL)
    assert run.finish() == ExitCode.CLIENT_LOST, run.stderr
    assert "client lost: killed by SIGKILL" in run.stderr
    # Killed, it could not say what it last commanded: said so, never "commanded to None".
    assert "it died without reporting its last command" in run.stderr
    assert "None" not in run.stderr.split("client lost:")[1].splitlines()[0]
    assert "server stopped" in run.stderr


def test_sigterm_during_startup_stops_cleanly(tmp_path):
    run = Run(tmp_path, "--policy.type=fake", "--policy.load_s=5")
    run.wait_for(lambda s: s.server.pid is not None, "the server to start")
    t0 = time.monotonic()
    run.proc.send_signal(signal.SIGTERM)
    assert run.finish() == ExitCode.OK, run.stderr
    assert time.monotonic() - t0 < 12
    assert "client started" not in run.stderr
    run.assert_stopped_safely()


def test_second_ctrl_c_forces_a_slow_stop(tmp_path):
    # A 3 s inference keeps the server from seeing its stop command for up to 3 s.
    run = Run(tmp_path, "--policy.type=fake", "--policy.latency_ms=3000", "--stop-timeout=20")
    run.wait_for(running, "running")
    # Nothing marks the start of an inference; the client's first observation goes out on
    # its first tick (33 ms), so 0.3 s puts the server well inside its 3 s.
    time.sleep(0.3)
    run.proc.send_signal(signal.SIGINT)
    run.err.wait_for("stopping server")  # the client is down; the server is stuck inferring
    t0 = time.monotonic()
    run.proc.send_signal(signal.SIGINT)
    assert run.finish() == ExitCode.INTERRUPTED, run.stderr
    assert time.monotonic() - t0 < 2.5
    assert "forcing" in run.stderr
    run.assert_stopped_safely()


def test_supervisor_kill9_leaves_children_stopping_and_clean_removes_the_rest(tmp_path):
    run = Run(tmp_path, "--policy.type=fake")
    s = run.wait_for(running, "running")
    run.proc.kill()
    run.finish()
    deadline = time.monotonic() + 10
    for pid in (s.server.pid, s.client.pid):
        while os.path.exists(f"/proc/{pid}") and _state(pid) != "Z":
            assert time.monotonic() < deadline, f"child {pid} outlived its supervisor"
            time.sleep(0.05)
    r = subprocess.run([sys.executable, "-m", "asyncinf.runtime.cli", "clean"],
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr
    run.assert_stopped_safely()


def _state(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"
