"""Real-time chunking in real runs: `up --local` (shared memory) and `up --remote` against a
loopback `asyncinf serve` (gRPC), the scripted policy's chunks disagreeing, RTC off and on.

What is asserted is the seams' ratio, with a wide margin: with RTC on (execution horizon 25)
a seam is ~1/20 of the blended jump without it when the delay estimate is right, and stays
below half of it even when the estimate is several ticks off (a loaded machine).
"""

import json
import re
import signal
import subprocess
import sys
import time

import pytest

from asyncinf.runtime.errors import HandshakeError
from asyncinf.runtime.messages import PolicySpec, RtcSettings
from asyncinf.runtime.testing import hello
from asyncinf.transports.factory import TransportSpec, open_client

pytestmark = pytest.mark.slow

CLI = [sys.executable, "-m", "asyncinf.runtime.cli"]
DISAGREE = [
    "--robot.type=sim",
    "--policy.type=scripted",
    "--policy.latency_ms=100",
    "--policy.disagreement=5",
    "--duration=6",
]
RTC = ["--rtc", "--rtc.execution_horizon=25"]


def run_up(where, tmp_path, *args):
    summary = tmp_path / f"s{len(list(tmp_path.iterdir()))}.json"
    r = subprocess.run(
        [*CLI, "up", *where, *DISAGREE, f"--summary-json={summary}", *args],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    return json.loads(summary.read_text())


def assert_rtc_smooths_the_seams(off, on):
    for s in (off, on):
        assert s["chunks_received"] >= 4 and s["errors"] == 0
        assert s["seam_jump"]["max"] > 0 and s["command_step"]["max"] > 0
    assert off["inference_delay"]["chunks"] >= 1 and on["inference_delay"]["chunks"] >= 1
    for p in ("p50", "p99"):
        assert on["seam_jump"][p] < 0.5 * off["seam_jump"][p], (
            p,
            on["seam_jump"],
            off["seam_jump"],
        )
    assert on["command_step"]["max"] < off["command_step"]["max"]


def test_rtc_over_shared_memory(tmp_path):
    off = run_up(["--local"], tmp_path)
    on = run_up(["--local"], tmp_path, *RTC)
    assert_rtc_smooths_the_seams(off, on)


def test_rtc_over_grpc(tmp_path):
    proc = subprocess.Popen(
        [*CLI, "serve", "--host=127.0.0.1", "--port=0"], stderr=subprocess.PIPE, text=True
    )
    try:
        deadline, log = time.monotonic() + 60, ""
        while not (m := re.search(r"serving on 127\.0\.0\.1:(\d+)", log)):
            line = proc.stderr.readline()
            assert line and time.monotonic() < deadline, f"serve did not start:\n{log}"
            log += line
        where = [f"--remote=127.0.0.1:{m.group(1)}"]
        off = run_up(where, tmp_path)
        on = run_up(where, tmp_path, *RTC)
        assert_rtc_smooths_the_seams(off, on)
        # A client that skipped the checks before start is refused by the server, in one line.
        client = open_client(TransportSpec("grpc", {"target": f"127.0.0.1:{m.group(1)}"}))
        try:
            spec = PolicySpec(type="fake", actions_per_chunk=4, rtc=RtcSettings())
            with pytest.raises(HandshakeError) as err:
                client.handshake(hello(policy=spec), timeout_s=30)
        finally:
            client.close()
        assert "--policy.type=fake cannot do real-time chunking" in str(err.value)
        assert "\n" not in str(err.value)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
