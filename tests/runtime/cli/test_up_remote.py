"""`asyncinf up --remote` against a real `asyncinf serve` on loopback."""

import json
import re
import signal
import subprocess
import sys
import time

import pytest

from asyncinf.runtime.testing import LineReader, started, wait_until

# Each test starts `asyncinf serve` and `asyncinf up --remote` as real processes: 5-10 s each.
pytestmark = pytest.mark.slow

CLI = [sys.executable, "-m", "asyncinf.runtime.cli"]


class Serve:
    """`asyncinf serve` on a free loopback port."""

    def __init__(self, *args, port=0):
        self.proc = subprocess.Popen(
            [*CLI, "serve", "--host=127.0.0.1", f"--port={port}", *args],
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        self.log = ""
        while True:
            line = self.proc.stderr.readline()
            self.log += line
            m = re.search(r"serving on 127\.0\.0\.1:(\d+)", line)
            if m:
                self.port = int(m.group(1))
                return
            assert line and time.monotonic() < deadline, f"serve did not start:\n{self.log}"

    def stop(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)
        _, err = self.proc.communicate(timeout=20)
        self.log += err
        return self.proc.returncode

    def kill(self):
        if self.proc.poll() is None:
            self.stop(signal.SIGKILL)


@pytest.fixture
def serve():
    yield from started(Serve, Serve.kill)


def up_remote(port, tmp_path, *args, duration=3, policy="--policy.type=fake"):
    summary = tmp_path / "summary.json"
    r = subprocess.run(
        [*CLI, "up", f"--remote=127.0.0.1:{port}", "--robot.type=sim", policy,
         f"--duration={duration}", f"--summary-json={summary}", *args],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return r, (json.loads(summary.read_text()) if summary.exists() else None)


def test_remote_torch_policy_gets_resized_jpeg_frames(serve, tmp_path):
    """tiny_torch asks for 224-high frames at handshake; the client resizes and JPEG-encodes."""
    server = serve()
    r, s = up_remote(
        server.port, tmp_path, "--image_codec=jpeg", "--policy.image_size=224",
        policy="--policy.type=tiny_torch", duration=4,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert s["chunks_received"] > 3 and s["errors"] == 0
    raw = 640 * 480 * 3
    assert 0 < s["transport"]["bytes_per_observation"] < raw / 10
    assert server.stop() == 0
    assert "loading policy type=tiny_torch" in server.log


def test_remote_run_never_idles_after_the_first_chunk(serve, tmp_path):
    server = serve()
    r, s = up_remote(server.port, tmp_path, "--policy.latency_ms=100")
    assert r.returncode == 0, r.stderr
    assert s["chunks_received"] > 3 and s["errors"] == 0
    assert s["idle_frames_after_first_chunk"] == 0
    assert s["transport"]["transport"] == "grpc"
    assert server.stop() == 0


def test_server_restart_is_survived_by_a_holding_client(serve, tmp_path):
    server = serve()
    port = server.port
    summary, commands = tmp_path / "summary.json", tmp_path / "commands.jsonl"
    proc = subprocess.Popen(
        [*CLI, "up", f"--remote=127.0.0.1:{port}", "--robot.type=fake", "--policy.type=fake",
         f"--robot.command_log={commands}", "--duration=120", f"--summary-json={summary}"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    err = LineReader(proc.stderr)
    try:
        wait_until(lambda: commanded(commands) >= 100, 60, "the robot to be driven")
        server.stop(signal.SIGKILL)
        err.wait_for("server link lost")  # the client noticed
        before = commanded(commands)
        serve(port=port)
        # More than a chunk's worth (50) after the loss: new chunks are being executed.
        wait_until(lambda: commanded(commands) >= before + 120, 60, "the robot to resume")
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err.text()
    s = json.loads(summary.read_text())
    assert s["server_lost"] >= 1
    assert s["transport"]["reconnects"] >= 1
    assert s["chunks_received"] > 5 and s["actions_executed"] > 60


def commanded(log_path) -> int:
    """Commands the fake robot has logged so far."""
    if not log_path.exists():
        return 0
    return log_path.read_text().count('"event": "command"')


def test_wrong_token_is_refused_as_a_configuration_error(serve, tmp_path):
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.write_text("s3cret\n")
    bad.write_text("guess\n")
    server = serve(f"--token-file={good}")
    r, _ = up_remote(server.port, tmp_path, f"--token-file={bad}")
    assert r.returncode == 78, r.stderr
    assert "UNAUTHENTICATED" in r.stderr or "token" in r.stderr.lower()
    r, s = up_remote(server.port, tmp_path, f"--token-file={good}", duration=2)
    assert s["chunks_received"] > 0
    assert r.returncode == 0, r.stderr


def test_lerobots_own_command_lines_run(serve, tmp_path):
    """The robot_client and policy_server flags of LeRobot's docs, robot and policy aside."""
    server = serve("--fps=30", "--inference_latency=0.033", "--obs_queue_timeout=2")
    assert "--inference_latency=0.033 accepted and not needed" in server.log
    summary = tmp_path / "summary.json"
    r = subprocess.run(
        [*CLI, "up", f"--server_address=127.0.0.1:{server.port}", "--robot.type=sim",
         "--policy_type=fake", "--policy_device=cpu", "--client_device=cpu",
         "--chunk_size_threshold=0.6", "--aggregate_fn_name=weighted_average",
         "--task=Fold my T-shirt", "--debug_visualize_queue_size=true", "--duration=3",
         f"--summary-json={summary}"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads(summary.read_text())["chunks_received"] > 3
    assert "--client_device=cpu accepted and not needed" in r.stderr
    assert (tmp_path / "queue_size.png").stat().st_size > 0
    assert server.stop() == 0  # stopped after the client, as LeRobot's docs say


def test_odd_clients_neither_pin_the_server_nor_flood_its_log(serve, tmp_path):
    """A client with another robot gets a policy built for it; one beyond a handshake limit
    is refused in one line; the usual client is served after both."""
    server = serve("--robot.type=sim", "--policy.type=fake")  # preloaded for the sim arm
    r, s = up_remote(server.port, tmp_path, "--robot.type=fake", "--robot.num_joints=3")
    assert r.returncode == 0, r.stderr
    assert s["chunks_received"] > 3 and s["errors"] == 0
    r, _ = up_remote(server.port, tmp_path, "--actions_per_chunk=10000000")
    assert r.returncode == 78, r.stderr
    assert "1e+07 actions_per_chunk, the limit is 1000" in r.stderr
    assert "Traceback" not in r.stderr
    r, s = up_remote(server.port, tmp_path)  # the sim robot, as the server was started for
    assert r.returncode == 0, r.stderr
    assert s["chunks_received"] > 3
    assert server.stop() == 0
    assert "for 3 joints" in server.log  # the fake robot's policy was built for it
    refused = [line for line in server.log.splitlines() if "refused" in line]
    assert len(refused) == 1 and len(refused[0]) < 500, refused
    assert "Traceback" not in server.log
