"""`serve --prometheus-port`: a real `asyncinf serve` and a real `up --remote` robot; the
endpoint fetched over HTTP and parsed with prometheus_client's own parser."""

from __future__ import annotations

import json
import socket
import subprocess

import pytest
from fleet import CLI, ROBOT, Replica, scrape

pytestmark = pytest.mark.slow


def value(samples, name, **labels):
    """The one sample of `name` whose labels include `labels`."""
    found = [v for got, v in samples.get(name, []) if labels.items() <= got.items()]
    assert len(found) == 1, (name, labels, samples.get(name))
    return found[0]


def test_metrics_count_sessions_chunks_and_what_the_client_reports(tmp_path):
    replica = Replica().ready()
    try:
        summary = tmp_path / "s.json"
        r = subprocess.run(
            [*CLI, "up", f"--remote=127.0.0.1:{replica.port}", *ROBOT, "--duration=3",
             f"--summary-json={summary}"],
            capture_output=True, text=True, timeout=90,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        run = json.loads(summary.read_text())
        samples = scrape(replica.metrics_port)
    finally:
        replica.kill()
    policy = "scripted@cpu"
    assert value(samples, "asyncinf_sessions_started_total", policy=policy) == 1
    assert value(samples, "asyncinf_sessions", policy=policy) == 0  # it ended
    ((labels, chunks),) = samples["asyncinf_chunks_total"]
    session = labels["session"]
    assert labels["policy"] == policy and len(session) == 12
    # The client received every chunk the server counted, and timed each one.
    assert chunks == run["chunks_received"] > 0
    inferences = value(samples, "asyncinf_inference_seconds_count", session=session)
    assert inferences == chunks
    # One robot: every chunk came from a model call of one observation.
    assert value(samples, "asyncinf_batch_size_count", session=session) == chunks
    assert value(samples, "asyncinf_batch_size_sum", session=session) == chunks
    roundtrips = value(samples, "asyncinf_roundtrip_seconds_count", session=session)
    assert 0 < roundtrips <= chunks  # the last chunks' report may not have gone out
    inf_bucket = value(samples, "asyncinf_roundtrip_seconds_bucket", session=session, le="+Inf")
    assert inf_bucket == roundtrips
    # Idle frames as the client reported them: at least the ones before its first chunk.
    idle = value(samples, "asyncinf_client_idle_frames", session=session)
    assert 1 <= idle <= run["idle_frames"]
    assert 0 < value(samples, "asyncinf_client_ticks", session=session) <= run["ticks"]
    assert "asyncinf_errors_total" not in samples  # none sent


# Both commands that serve metrics check the port alike (up's own: test_up_prometheus.py).
COMMANDS = pytest.mark.parametrize("command", [["serve", "--port=0"], ["up", "--local"]],
                                   ids=["serve", "up"])  # fmt: skip


@COMMANDS
@pytest.mark.parametrize("port", ["-1", "70000"])
def test_a_prometheus_port_out_of_range_is_one_line_and_exit_2(command, port):
    r = subprocess.run(
        [*CLI, *command, f"--prometheus-port={port}"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert f"--prometheus-port={port}: must be 0..65535" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


@COMMANDS
def test_a_prometheus_port_in_use_is_one_line_and_exit_78_before_the_policy_loads(command):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = subprocess.run(
            [*CLI, *command, f"--prometheus-port={port}", "--robot.type=sim",
             "--policy.type=fake", "--policy.load_s=30"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert r.returncode == 78, r.stderr
    assert f"--prometheus-port={port}: another process listens on 127.0.0.1:{port}" in r.stderr
    assert "Traceback" not in r.stderr and "loading" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
