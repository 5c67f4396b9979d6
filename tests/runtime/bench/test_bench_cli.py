"""The benchmarks run and write their documented JSON (their numbers are not asserted)."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # each runs a whole benchmark: several seconds

CLI = [sys.executable, "-m", "asyncinf.runtime.cli", "bench"]


def test_bench_transport_writes_every_row_in_the_documented_schema(tmp_path):
    out = tmp_path / "t.json"
    r = subprocess.run(
        [*CLI, "transport", "-n", "20", "--sizes", "64,3072", "--mode", "both", "--json", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    assert doc["schema"] == 1
    got = {(x["transport"], x["mode"], x["payload_bytes"]) for x in doc["results"]}
    rows = (
        "memcpy",
        "shm",
        "shm_nocrc",
        "shm_crc_all",
        "posix_ring",
        "posix_ring_block",
        "iceoryx2",
        "mp_queue",
        "grpc",
    )
    for row in (*rows, "grpc_floor"):
        for mode in ("backtoback", "paced"):
            for size in (64, 3072):
                assert (row, mode, size) in got
    for x in doc["results"]:
        assert x["n"] == 20 and 0 < x["p50_us"] <= x["p90_us"] <= x["p99_us"] <= x["max_us"]
    assert "× floor" in r.stdout and "× no crc" in r.stdout
    cost = {(x["transport"], x["mode"], x["payload_bytes"]) for x in doc["checksum_cost"]}
    assert cost == {(t, m, n) for (t, m, n) in got if t in ("shm", "shm_crc_all")}


def test_bench_e2e_reports_idle_frames_and_overhead(tmp_path):
    out = tmp_path / "e.json"
    r = subprocess.run(
        [*CLI, "e2e", "--g", "0,0.5", "--duration", "2", "--latency_ms", "50",
         "--actions_per_chunk", "10", "--json", str(out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    rows = doc["results"]
    assert [x["g"] for x in rows] == [0.0, 0.5]
    assert rows[0]["idle_frames_after_first_chunk"] > 0  # synchronous
    for x in rows:
        assert x["actions_per_s"] > 0 and set(x["overhead_ms"]) == {"p50", "p99", "max"}
    # The bare transport at the same payload, measured in the same run, and the ratio to it.
    assert doc["payload_bytes"] == 640 * 480 * 3
    bare = doc["transport_roundtrip_ms"]
    assert set(bare) == {"backtoback", "paced"} and all(m["p50"] > 0 for m in bare.values())
    # And one round trip per tick at the runs' fps (30), as a run sends: like for like.
    at_fps = doc["transport_roundtrip_at_fps_ms"]
    assert 0 < at_fps["p50"] <= at_fps["p99"]
    for x in rows:
        ratio = x["overhead_over_transport"]["backtoback"]["p50"]
        assert ratio == pytest.approx(x["overhead_ms"]["p50"] / bare["backtoback"]["p50"])
        ratio = x["overhead_over_transport"]["at_fps"]["p50"]
        assert ratio == pytest.approx(x["overhead_ms"]["p50"] / at_fps["p50"])
    assert "overhead / bare round trip" in r.stdout and "at 30 fps p50" in r.stdout


def test_bench_e2e_rtc_runs_each_g_without_and_with_it_and_compares_the_seams(tmp_path):
    out = tmp_path / "e.json"
    r = subprocess.run(
        [*CLI, "e2e", "--g", "0.5", "--duration", "3", "--latency_ms", "50", "--rtc",
         "--rtc.execution_horizon=8", "--disagreement", "5", "--actions_per_chunk", "20",
         "--width", "64", "--height", "48", "--json", str(out)],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    rows = json.loads(out.read_text())["results"]
    assert [(x["g"], x["rtc"]) for x in rows] == [(0.5, False), (0.5, True)]
    assert rows[1]["options"]["rtc"] == {"execution_horizon": 8}
    for x in rows:
        assert set(x["seam_jump"]) == {"p50", "p99", "max"} and x["seam_jump"]["max"] > 0
        assert x["command_step"]["max"] > 0 and "too_low" in x["inference_delay"]
    assert "g = 0.5: seam with RTC / without: p50" in " ".join(r.stdout.split())


def test_bench_e2e_runs_the_robot_given_by_its_flags(tmp_path):
    out = tmp_path / "e.json"
    r = subprocess.run(
        [*CLI, "e2e", "--g", "0.5", "--duration", "2", "--latency_ms", "20",
         "--actions_per_chunk", "10", "--robot.type=fake", "--robot.num_joints=3",
         "--json", str(out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    (row,) = json.loads(out.read_text())["results"]
    assert row["options"]["robot"] == {"type": "fake", "num_joints": 3}
    assert row["actions_per_s"] > 0 and "fake + scripted policy" in r.stdout
    r = subprocess.run([*CLI, "e2e", "--robot.num_joints=3"], capture_output=True, text=True)
    assert r.returncode == 78 and "without --robot.type" in r.stderr, r.stderr
