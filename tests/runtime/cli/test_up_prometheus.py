"""`up --prometheus-port`: a real supervised run, its endpoint fetched over HTTP while the robot
moves and parsed with prometheus_client's own parser; and the families built from one sample."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
from fleet import CLI, ROBOT, scrape
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from test_many_robots import robots_file

from asyncinf.runtime import holds
from asyncinf.runtime.supervise import protocol
from asyncinf.runtime.supervise.prometheus_run import RobotSample, RunMetrics, RunSample
from asyncinf.runtime.supervise.status_file import State
from asyncinf.runtime.testing import LineReader, wait_until

PORT_LINE = re.compile(r"Prometheus metrics on http://127\.0\.0\.1:(\d+)/metrics")


def value(samples, name, **labels):
    """The one sample of `name` whose labels include `labels`."""
    found = [v for got, v in samples.get(name, []) if labels.items() <= got.items()]
    assert len(found) == 1, (name, labels, samples.get(name))
    return found[0]


def scrape_running(tmp_path, *args, robots=1):
    """Start `up --local ... --prometheus-port=0`, scrape it once every robot has chunks, let
    it finish; (samples, run summary)."""
    summary = tmp_path / "summary.json"
    proc = subprocess.Popen(
        [*CLI, "up", "--local", *args, "--duration=6", "--prometheus-port=0",
         f"--summary-json={summary}", "--start-timeout=60"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    err = LineReader(proc.stderr)
    try:
        err.wait_for("Prometheus metrics on", 60)
        port = int(PORT_LINE.search(err.text()).group(1))

        def moving():
            chunks = scrape(port).get("asyncinf_robot_chunks_total", [])
            return len(chunks) == robots and all(v >= 2 for _, v in chunks)

        wait_until(moving, 30, "every robot's chunks in the metrics")
        samples = scrape(port)
        assert proc.wait(timeout=60) == 0, err.join()
    finally:
        proc.kill()
    return samples, json.loads(summary.read_text())


@pytest.mark.slow
def test_the_run_state_and_the_robot_counters_are_scraped_while_it_runs(tmp_path):
    samples, run = scrape_running(tmp_path, *ROBOT)
    assert value(samples, "asyncinf_run_state", asyncinf_run_state="running") == 1
    assert value(samples, "asyncinf_run_state", asyncinf_run_state="stopped") == 0
    assert value(samples, "asyncinf_server_up") == 1
    assert value(samples, "asyncinf_server_restarts_total") == 0
    assert value(samples, "asyncinf_robot_up", robot="sim") == 1
    assert value(samples, "asyncinf_robot_attached", robot="sim") == 1
    # A moment of the run the summary ends: counts up to its totals, never past them.
    ticks = value(samples, "asyncinf_robot_ticks_total", robot="sim")
    chunks = value(samples, "asyncinf_robot_chunks_total", robot="sim")
    assert 0 < ticks <= run["ticks"] and 2 <= chunks <= run["chunks_received"]
    assert value(samples, "asyncinf_robot_actions_total", robot="sim") <= ticks
    assert 0 < value(samples, "asyncinf_server_chunks_total") <= run["chunks_received"]
    assert 0 < value(samples, "asyncinf_robot_roundtrip_seconds", robot="sim") < 5
    assert value(samples, "asyncinf_robot_errors_total", robot="sim") == 0


@pytest.mark.slow
def test_each_robot_of_robots_has_its_own_series(tmp_path):
    names = ["left", "right"]
    samples, run = scrape_running(
        tmp_path, f"--robots={robots_file(tmp_path, names)}", "--policy.type=scripted",
        robots=2,
    )  # fmt: skip
    for name in names:
        ticks = value(samples, "asyncinf_robot_ticks_total", robot=name)
        assert 0 < ticks <= run["robots"][name]["ticks"]
        assert value(samples, "asyncinf_robot_up", robot=name) == 1
    assert {labels["robot"] for labels, _ in samples["asyncinf_robot_queue_actions"]} == set(names)


def beat(**fields):
    counts = {"ticks": 90, "actions": 80, "idle": 10, "queue": 7, "chunks": 3, "errors": 1,
              "attached": True, "roundtrip_ms": 25.0}  # fmt: skip
    return protocol.ClientBeat(**{**counts, **fields})


def exposed(sample: RunSample) -> dict[str, list]:
    metrics = RunMetrics()
    metrics._sample = sample
    out: dict[str, list] = {}
    for family in text_string_to_metric_families(generate_latest(metrics.registry).decode()):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def test_a_holding_robot_says_why_and_a_robot_without_a_beat_is_only_up_or_down():
    holding = RobotSample("left", State.RUNNING, beat(hold_s=1.5, hold_reason=holds.SERVER_LOST,
                                                       held_s=4.0, roundtrip_ms=None))  # fmt: skip
    waiting = RobotSample("right", State.STARTING, None)
    samples = exposed(RunSample(State.RESTARTING, 2, State.RESTARTING, None, (holding, waiting)))
    assert value(samples, "asyncinf_run_state", asyncinf_run_state="restarting") == 1
    assert value(samples, "asyncinf_server_restarts_total") == 2
    assert value(samples, "asyncinf_server_up") == 0
    assert "asyncinf_server_chunks_total" not in samples  # the restarting server sent no beat
    assert value(samples, "asyncinf_robot_holding", robot="left", reason=holds.SERVER_LOST) == 1
    assert value(samples, "asyncinf_robot_hold_seconds", robot="left") == 1.5
    assert value(samples, "asyncinf_robot_held_seconds_total", robot="left") == 4.0
    assert value(samples, "asyncinf_robot_idle_frames_total", robot="left") == 10
    assert value(samples, "asyncinf_robot_up", robot="right") == 0
    # No beat yet: no counters for it, and no round trip for a robot without one.
    assert [labels["robot"] for labels, _ in samples["asyncinf_robot_ticks_total"]] == ["left"]
    assert "asyncinf_robot_roundtrip_seconds" not in samples


def test_a_remote_run_has_no_server_series():
    robot = RobotSample("sim", State.RUNNING, beat())
    samples = exposed(RunSample(State.RUNNING, 0, None, None, (robot,)))
    assert "asyncinf_server_up" not in samples and "asyncinf_server_restarts_total" not in samples
    assert value(samples, "asyncinf_robot_roundtrip_seconds", robot="sim") == 0.025
    assert value(samples, "asyncinf_robot_queue_actions", robot="sim") == 7
    assert "asyncinf_robot_holding" not in samples  # moving
