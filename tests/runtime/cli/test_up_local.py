"""`asyncinf up --local` as a user runs it: real supervisor, real worker processes, real shm."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

UP = [sys.executable, "-m", "asyncinf.runtime.cli", "up", "--local"]
FAST = ["--robot.type=fake", "--policy.type=fake", "--policy.latency_ms=20"]


def up(*args, timeout=60, env=None):
    return subprocess.run(
        [*UP, *args], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def read_log(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def assert_never_commanded_after_disconnect(log):
    events = [r["event"] for r in log]
    assert "command_after_disconnect" not in events
    assert events[-1] == "disconnect", events[-3:]


def test_runs_for_duration_and_stops_client_first(tmp_path):
    summary, commands = tmp_path / "s.json", tmp_path / "cmd.jsonl"
    r = up(*FAST, f"--robot.command_log={commands}", "--duration=3", f"--summary-json={summary}")
    assert r.returncode == 0, r.stderr
    s = json.loads(summary.read_text())
    assert s["schema"] == 1 and s["fps"] == 30
    assert s["chunks_received"] > 3 and s["actions_executed"] > 30
    assert s["errors"] == 0
    for key in ("period_error_ms", "roundtrip_ms", "server_queue_wait_ms", "overhead_ms"):
        assert set(s[key]) == {"p50", "p99", "max"}
    assert s["roundtrip_ms"]["p50"] >= s["server_compute_ms"]["p50"] >= 20
    log = r.stderr
    assert log.index("stopping client") < log.index("client stopped") < log.index("stopping server")
    assert log.index("stopping server") < log.index("removed this run's IPC objects")
    assert_never_commanded_after_disconnect(read_log(commands))


def test_sigint_stops_cleanly_with_the_interrupted_code(tmp_path):
    commands = tmp_path / "cmd.jsonl"
    proc = subprocess.Popen(
        [*UP, *FAST, f"--robot.command_log={commands}"], stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 30
    while not (commands.exists() and "command" in commands.read_text()):
        assert time.monotonic() < deadline and proc.poll() is None, "never started commanding"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert err.index("client stopped") < err.index("stopping server")
    assert_never_commanded_after_disconnect(read_log(commands))


def test_policy_that_fails_to_load_is_a_boot_error_without_restart():
    r = up(*FAST, "--policy.fail_on_load=true", "--duration=5")
    assert r.returncode == 3, r.stderr
    assert "failing at load" in r.stderr
    assert r.stderr.count("server started") == 1
    assert "client started" not in r.stderr


def test_bad_option_names_the_flag_and_exits_78():
    r = up("--fps=-3")
    assert r.returncode == 78
    assert "--fps=-3" in r.stderr
    r = up("--robot.type=nope")
    assert r.returncode == 78 and "nope" in r.stderr and "sim" in r.stderr


def test_repeated_inference_errors_stop_the_run_with_code_1(tmp_path):
    commands = tmp_path / "cmd.jsonl"
    r = up(
        *FAST,
        "--policy.fail_every=1",
        "--max_consecutive_errors=3",
        f"--robot.command_log={commands}",
    )
    assert r.returncode == 1, r.stderr
    assert "3 in a row" in r.stderr
    assert_never_commanded_after_disconnect(read_log(commands))


@pytest.mark.parametrize("g", ["0", "0.5"])
def test_sync_and_async_both_execute_actions(tmp_path, g):
    summary = tmp_path / "s.json"
    r = up(*FAST, f"--chunk_size_threshold={g}", "--duration=2", f"--summary-json={summary}")
    assert r.returncode == 0, r.stderr
    s = json.loads(summary.read_text())
    assert s["actions_executed"] > 0
    if g == "0":
        assert s["idle_frames_after_first_chunk"] > 0  # synchronous: idles every round trip


def test_verbose_reaches_the_children():
    r = subprocess.run(
        [sys.executable, "-m", "asyncinf.runtime.cli", "-v", "up", "--local", *FAST[:2],
         "--duration=1"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    for role in ("client", "server"):
        assert re.search(rf"DEBUG +{role}\[\d+\]", r.stderr), r.stderr[-2000:]
