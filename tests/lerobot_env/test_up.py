"""`asyncinf up --local`, and `up --remote` against `asyncinf serve`, with each tiny checkpoint.

Real supervisor, real worker processes, real shared memory and a real gRPC server on loopback;
the sim arm's 640x480 camera is fitted by the client to the checkpoint's 96x128 input.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time

import pytest
from installed import VERSION

CLI = [sys.executable, "-m", "asyncinf.runtime.cli"]
KINDS = ["act", "diffusion", "smolvla"]
RUN = ["--robot.type=sim", "--duration=6", "--task=pick up the cube"]


def policy_flags(checkpoints, kind):
    return [f"--policy.type={kind}", f"--policy.path={checkpoints[kind]}"]


def check_summary(path, kind):
    s = json.loads(path.read_text())
    assert s["chunks_received"] >= 3 and s["errors"] == 0 and s["rejected_chunks"] == 0, s
    for stage in ("preprocess", "inference", "postprocess"):
        assert s[f"server_{stage}_ms"]["p50"] > 0, stage
    # The chunk is the checkpoint's: Diffusion returns n_action_steps = 8 per call.
    assert s["actions_executed"] > 0
    return s


@pytest.mark.parametrize("kind", KINDS)
def test_up_local(checkpoints, tmp_path, kind):
    summary, status = tmp_path / "summary.json", tmp_path / "status.json"
    r = subprocess.run(
        [*CLI, "up", "--local", *RUN, *policy_flags(checkpoints, kind),
         f"--summary-json={summary}", f"--status-json={status}"],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    check_summary(summary, kind)
    chunk = 8 if kind == "diffusion" else 50
    assert re.search(rf"30 / {chunk} \(the policy's\) / 0.5", r.stderr), r.stderr[-3000:]
    policy = json.loads(status.read_text())["server"]["policy"]
    (info,) = policy.values()
    assert info["lerobot"] == VERSION and info["chunk"] == chunk


@pytest.mark.parametrize("kind", KINDS)
def test_up_remote_against_serve(checkpoints, tmp_path, kind):
    serve = subprocess.Popen(
        [*CLI, "serve", "--port=0", "--robot.type=sim", *policy_flags(checkpoints, kind)],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        log, deadline = "", time.monotonic() + 180
        while (m := re.search(r"serving on 127\.0\.0\.1:(\d+)", log)) is None:
            line = serve.stderr.readline()
            assert line and time.monotonic() < deadline, f"serve did not start:\n{log}"
            log += line
        assert f"LeRobot {VERSION} imported" in log
        summary = tmp_path / "summary.json"
        r = subprocess.run(
            [*CLI, "up", f"--remote=127.0.0.1:{m.group(1)}", *RUN,
             *policy_flags(checkpoints, kind), f"--summary-json={summary}"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr[-3000:]
        check_summary(summary, kind)
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.communicate(timeout=30)
    assert serve.returncode == 0


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("{tmp}/nowhere", "no such directory, and not a hub id"),
        ("{tmp}", "no config.json here, so no LeRobot checkpoint"),
    ],
)
def test_a_bad_checkpoint_is_a_policy_load_error_in_one_line(tmp_path, path, message):
    r = subprocess.run(
        [*CLI, "up", "--local", "--robot.type=sim", "--policy.type=act",
         f"--policy.path={path.format(tmp=tmp_path)}", "--duration=5"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 3, r.stderr[-3000:]
    assert message in r.stderr and "Traceback" not in r.stderr, r.stderr[-3000:]


def test_serve_refuses_a_bad_checkpoint_at_start_with_exit_3(tmp_path):
    r = subprocess.run(
        [*CLI, "serve", "--port=0", "--robot.type=sim", "--policy.type=act",
         f"--policy.path={tmp_path}"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 3
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no config.json here" in errors[0], r.stderr
    assert "Traceback" not in r.stderr
