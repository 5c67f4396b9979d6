"""`asyncinf up --local` on an SO-101 follower: the emulated servo bus on a pty and a
video-file camera stand in for the arm, exactly as a user without hardware would run it."""

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from asyncinf.robots.feetech.bus import FeetechBus
from asyncinf.robots.so_follower import MOTORS

CLI = [sys.executable, "-m", "asyncinf.runtime.cli"]


@pytest.fixture
def emulator():
    proc = subprocess.Popen(
        [*CLI, "robot", "emulate", "--robot.type=so101_follower", "--robot.id=ci"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    pty = proc.stdout.readline().strip()
    assert pty.startswith("/dev/"), proc.stderr.read()
    yield pty
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def video(tmp_path):
    path = tmp_path / "front.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (640, 480))
    for i in range(30):
        frame = np.full((480, 640, 3), (i * 8) % 256, np.uint8)
        writer.write(frame)
    writer.release()
    return path


def torque(pty):
    with FeetechBus(pty, MOTORS) as bus:
        return bus.sync_read("Torque_Enable")


@pytest.mark.parametrize("release", [False, True])
def test_so101_runs_on_the_emulator_and_stops_holding_or_released(
    emulator, video, tmp_path, release
):
    summary = tmp_path / "summary.json"
    cameras = (
        f"{{front: {{type: opencv, index_or_path: {video}, width: 640, height: 480, fps: 30}}}}"
    )
    r = subprocess.run(
        [*CLI, "up", "--local", "--robot.type=so101_follower", f"--robot.port={emulator}",
         "--robot.id=ci", f"--robot.cameras={cameras}", f"--robot.disable_torque_on_exit={release}",
         "--policy.type=scripted", "--duration=3", f"--summary-json={summary}"],
        capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    s = json.loads(summary.read_text())
    assert s["chunks_received"] > 2 and s["actions_executed"] > 30 and s["errors"] == 0
    assert set(torque(emulator).values()) == ({0} if release else {1})
