"""`--metrics` stays within `--metrics-max-mb` on disk, keeps the latest ticks, and says so."""

import json
import subprocess
import sys

import pytest

from asyncinf.runtime.cli.metrics import read_metrics
from asyncinf.runtime.client import Tick
from asyncinf.runtime.supervise.metrics_file import MetricsFile, rotated

UP = [sys.executable, "-m", "asyncinf.runtime.cli", "up", "--local"]


def tick(t, **change):
    return Tick(**{"t_ns": t, "timestep": t, "queue": 3, "idle": False, "period_error_ms": 0.1,
                   "seam_jump": None, "command_step": 0.0, **change})  # fmt: skip


def test_file_rotates_at_half_the_cap_and_keeps_the_newest(tmp_path, caplog):
    path = tmp_path / "m.jsonl"
    rotated(path).write_text("an older run's ticks\n")
    f = MetricsFile(str(path), max_mb=0.01)  # 10 kB: 5 kB per file
    assert not rotated(path).exists()  # an older run's half is not mixed into this one
    with caplog.at_level("INFO"):
        for t in range(2_000):  # ~250 kB of lines
            f.write(tick(t))
    f.close()
    assert path.stat().st_size + rotated(path).stat().st_size <= 10_000
    assert f.rotations >= 10
    rows = read_metrics(path)
    ts = [r.t_ns for r in rows]
    assert ts == list(range(ts[0], 2_000))  # in order, contiguous, ending with the last tick
    per_file = 5_000 // (path.stat().st_size // len(path.read_text().splitlines()))
    assert len(ts) > per_file  # more than one file's worth
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


def test_ticks_come_back_as_written_and_a_cut_off_last_line_is_left_out(tmp_path, caplog):
    path = tmp_path / "m.jsonl"
    f = MetricsFile(str(path))
    written = [tick(0), tick(1, idle=True, seam_jump=0.25, command_step=0.5)]
    for t in written:
        f.write(t)
    f.close()
    with path.open("a") as out:
        out.write('{"t_ns": 2, "timest')  # a client killed mid-write
    with caplog.at_level("WARNING"):
        assert read_metrics(path) == written
    assert "m.jsonl:3: a cut-off last line" in caplog.text


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ('{"t_ns": 1}', "m.jsonl:2: not a tick line: Tick.timestep: missing"),
        ("not json", "m.jsonl:2: not a tick line: Expecting value"),
    ],
)
def test_a_bad_line_is_named_by_file_and_line(tmp_path, line, says):
    path = tmp_path / "m.jsonl"
    f = MetricsFile(str(path))
    f.write(tick(0))
    f.close()
    with path.open("a") as out:
        out.write(line + "\n")
    with pytest.raises(ValueError, match=says):
        read_metrics(path)
