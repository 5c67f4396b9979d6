"""`--metrics` stays within `--metrics-max-mb` on disk, keeps the latest ticks, and says so."""

import json
import subprocess
import sys

from asyncinf.runtime.cli.metrics import read_metrics
from asyncinf.runtime.supervise.metrics_file import MetricsFile, rotated

UP = [sys.executable, "-m", "asyncinf.runtime.cli", "up", "--local"]


def test_file_rotates_at_half_the_cap_and_keeps_the_newest(tmp_path, caplog):
    path = tmp_path / "m.jsonl"
    rotated(path).write_text("an older run's ticks\n")
    f = MetricsFile(str(path), max_mb=0.01)  # 10 kB: 5 kB per file
    assert not rotated(path).exists()  # an older run's half is not mixed into this one
    with caplog.at_level("INFO"):
        for t in range(2_000):  # ~60 kB of lines
            f.write({"t_ns": t, "queue": 3})
    f.close()
    assert path.stat().st_size + rotated(path).stat().st_size <= 10_000
    assert f.rotations >= 10
    rows = read_metrics(path)
    ts = [r["t_ns"] for r in rows]
    assert ts == list(range(ts[0], 2_000))  # in order, contiguous, ending with the last tick
    assert len(ts) > 150  # more than one file's worth
    assert sum("--metrics-max-mb=0.01" in m for m in caplog.messages) == f.rotations


def test_up_local_caps_the_metrics_file(tmp_path):
    path = tmp_path / "ticks.jsonl"
    r = subprocess.run(
        [*UP, "--robot.type=fake", "--policy.type=fake", "--fps=200", "--duration=4",
         f"--metrics={path}", "--metrics-max-mb=0.02"],
        capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert path.stat().st_size + rotated(path).stat().st_size <= 20_000
    assert "--metrics-max-mb=0.02 caps" in r.stderr
    last = json.loads(path.read_text().splitlines()[-1])
    assert set(last) >= {"t_ns", "timestep", "queue", "idle", "period_error_ms"}


def test_help_states_the_cap_and_a_bad_cap_is_a_usage_error():
    r = subprocess.run([*UP, "--help"], capture_output=True, text=True, timeout=60)
    assert "--metrics-max-mb" in r.stdout
    r = subprocess.run([*UP, "--metrics-max-mb=0"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "--metrics-max-mb=0.0: must be > 0" in r.stderr
    assert "Traceback" not in r.stderr
