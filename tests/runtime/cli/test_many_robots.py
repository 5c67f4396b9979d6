"""Several robots on one server, as real processes: `up --local --robots` over shared memory,
and `serve --max_sessions` with one `up --remote` per robot over gRPC."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys

import pytest

from asyncinf.runtime.testing import LineReader, started, wait_until

pytestmark = pytest.mark.slow

CLI = [sys.executable, "-m", "asyncinf.runtime.cli"]
TINY = ["--policy.type=tiny_torch", "--policy.hidden=16", "--policy.image_size=48"]


def robots_file(tmp_path, names):
    path = tmp_path / "robots.yaml"
    entries = "".join(f"  - {{name: {n}, type: sim, options: {{seed: {i}}}}}\n"
                      for i, n in enumerate(names))  # fmt: skip
    path.write_text("robots:\n" + entries)
    return path


def test_four_sim_robots_share_one_server_over_shared_memory(tmp_path):
    summary, status = tmp_path / "summary.json", tmp_path / "status.json"
    names = ["left", "right", "front", "back"]
    r = subprocess.run(
        [*CLI, "up", "--local", f"--robots={robots_file(tmp_path, names)}", *TINY,
         "--duration=8", f"--summary-json={summary}", f"--status-json={status}",
         "--start-timeout=120"],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    robots = json.loads(summary.read_text())["robots"]
    assert sorted(robots) == sorted(names)
    for name, s in robots.items():
        assert s["chunks_received"] > 3 and s["errors"] == 0, (name, s)
        assert s["idle_frames_after_first_chunk"] == 0, (name, s)
    # One policy loaded for the four (same features), served on a lane per robot.
    assert r.stderr.count("loading policy type=tiny_torch") == 1, r.stderr
    # The status file counts the batches the server formed, by size (as of its last beat).
    clients = json.loads(status.read_text())["robots"]
    assert sorted(clients) == sorted(names), clients  # each robot's client, by name
    assert all(c["state"] == "stopped" and c["pid"] for c in clients.values()), clients
    batches = json.loads(status.read_text())["server"]["batch_sizes"]
    inferred = sum(int(size) * n for size, n in batches.items())
    assert 0 < inferred <= sum(s["chunks_received"] for s in robots.values()), batches
    for name in names:
        assert f"run summary: {name}" in r.stderr
        assert re.search(rf"session {name}: .*\"chunks\": [1-9]", r.stderr), r.stderr


def test_each_robot_writes_its_own_metrics_and_plot(tmp_path):
    ticks, plot = tmp_path / "ticks.jsonl", tmp_path / "queue.png"
    r = subprocess.run(
        [*CLI, "up", "--local", f"--robots={robots_file(tmp_path, ['left', 'right'])}",
         "--duration=4", f"--metrics={ticks}", f"--plot={plot}", "--start-timeout=60"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert not ticks.exists() and not plot.exists()  # one file per robot, named for it
    for name in ("left", "right"):
        rows = [json.loads(line) for line in (tmp_path / f"ticks.{name}.jsonl").open()]
        assert len(rows) > 60, (name, len(rows))  # ~4 s at 30 Hz
        steps = [row["timestep"] for row in rows]
        assert steps == sorted(steps) and len(set(steps)) == len(steps), name
        assert (tmp_path / f"queue.{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


class Serve:
    def __init__(self, *args):
        self.proc = subprocess.Popen(
            [*CLI, "serve", "--host=127.0.0.1", "--port=0", "--robot.type=sim", *TINY, *args],
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.err = LineReader(self.proc.stderr)
        self.err.wait_for("serving on 127.0.0.1:", 120)
        self.port = int(re.search(r"serving on 127\.0\.0\.1:(\d+)", self.err.text()).group(1))

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(30)
        return self.err.join()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def serve():
    yield from started(Serve, Serve.kill)


def up_remote(port, summary, *args, duration=8):
    return subprocess.Popen(
        [*CLI, "up", f"--remote=127.0.0.1:{port}", "--robot.type=sim", *TINY,
         f"--duration={duration}", f"--summary-json={summary}", *args],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def finish(procs, timeout_s=90):
    out = []
    for p in procs:
        _, err = p.communicate(timeout=timeout_s)
        out.append((p.returncode, err))
    return out


def test_four_remote_robots_share_one_serve_and_a_fifth_is_told_busy(serve, tmp_path):
    server = serve("--max_sessions=4")
    summaries = [tmp_path / f"s{i}.json" for i in range(4)]
    procs = [up_remote(server.port, path, duration=10) for path in summaries]
    try:
        wait_until(lambda: server.err.text().count("session started") >= 4, 60, "4 sessions")
        fifth = subprocess.run(
            [*CLI, "up", f"--remote=127.0.0.1:{server.port}", "--robot.type=sim", *TINY,
             "--duration=5", "--start-timeout=1"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        results = finish(procs)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert fifth.returncode == 75, fifth.stderr  # SERVER_BUSY, after its retries
    assert "at most 4 sessions at a time" in fifth.stderr
    for (code, err), path in zip(results, summaries, strict=True):
        assert code == 0, err
        s = json.loads(path.read_text())
        assert s["chunks_received"] > 3 and s["errors"] == 0, s
        assert s["idle_frames_after_first_chunk"] == 0, s
    log = server.stop()
    assert log.count("loading policy type=tiny_torch") == 1, log


def test_remote_robots_waiting_at_once_are_batched(serve, tmp_path):
    """An observation every tick from each of 4 robots, 30 ms allowed for company: the
    server forms batches of more than one (and says so per session)."""
    server = serve("--max_sessions=4", "--batch.max_wait_ms=30")
    summaries = [tmp_path / f"s{i}.json" for i in range(4)]
    procs = [up_remote(server.port, p, "--chunk_size_threshold=1", duration=6) for p in summaries]
    try:
        results = finish(procs)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for code, err in results:
        assert code == 0, err
    log = server.stop()
    sizes = [json.loads(m) for m in re.findall(r"session session \d+ \(sim\): (\{.*\})", log)]
    assert len(sizes) == 4, log
    formed = {int(k) for s in sizes for k in s["batch_sizes"]}
    assert max(formed) > 1, sizes
    for s in sizes:
        assert s["chunks"] > 10 and s["errors"] == 0, s
