"""The seeds' two LeRobot command lines (issue 12), run as they are with `asyncinf serve` in
place of LeRobot's policy server and `asyncinf up` in place of its robot client; only the
hardware values are replaced, each where it is given below.

Started as LeRobot's docs say (the server first), stopped as they say ("stop the client
first"): Ctrl-C to the client, then to the server. Real processes, real gRPC on loopback,
the real signal; each side must have stopped cleanly (130: stopped by Ctrl-C, see the
README's exit codes) after the client executed the policy's actions on the robot.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from cli_processes import Command, free_port
from lerobot_calibration import lerobot_writes_calibration

from asyncinf.policies.lerobot.tiny import make_tiny_checkpoint
from asyncinf.robots.feetech.emulator import DEFAULT_SO_CALIBRATION, FeetechEmulator
from asyncinf.robots.robot import make_robot
from asyncinf.runtime.supervise.exitcodes import ExitCode
from asyncinf.runtime.testing import wait_until

ACTED = 60  # actions executed before the client is stopped: two seconds at 30 Hz


def executed(metrics: Path) -> int:
    """Ticks that sent an action, from the client's --metrics lines so far."""
    if not metrics.exists():
        return 0
    lines = [ln for ln in metrics.read_text().splitlines() if ln.endswith("}")]
    return sum(not json.loads(ln)["idle"] for ln in lines)


def serve_then_stop_the_client_first(server_args, client_args, tmp_path) -> tuple[dict, str]:
    """Start the server, then the client; once it has acted, Ctrl-C the client, then the
    server. Returns the client's summary and the server's log."""
    metrics, summary = tmp_path / "metrics.jsonl", tmp_path / "summary.json"
    server = Command(["serve", *server_args], tmp_path / "serve.log")
    client = None
    try:
        server.wait_for_log(r"serving on \S+:\d+", 120)
        client = Command(
            ["up", *client_args, f"--metrics={metrics}", f"--summary-json={summary}"],
            tmp_path / "up.log",
        )
        wait_until(lambda: client.proc.poll() is not None or executed(metrics) >= ACTED, 240,
                   f"{ACTED} actions executed", poll_s=0.2)  # fmt: skip
        assert client.proc.poll() is None, client.text()
        assert server.proc.poll() is None, server.text()
        assert client.ctrl_c() == ExitCode.INTERRUPTED, client.text()
        assert server.proc.poll() is None, server.text()  # the server outlives its client
        assert server.ctrl_c() == ExitCode.INTERRUPTED, server.text()
    finally:
        for proc in (client, server):
            if proc is not None:
                proc.kill()
    for proc in (client, server):
        assert "Traceback" not in proc.text(), proc.text()
    s = json.loads(summary.read_text())
    assert s["errors"] == 0 and s["rejected_chunks"] == 0 and s["chunks_received"] >= 2, s
    assert s["actions_executed"] >= ACTED, s
    return s, server.text()


def write_video(path: Path, width: int, height: int, frames: int = 30) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (width, height))
    for k in range(frames):
        writer.write(np.full((height, width, 3), 8 * k, np.uint8))
    writer.release()
    return path


def test_the_so100_command_line(tmp_path):
    """LeRobot's: `policy_server --host=localhost --port=8080` and `robot_client
    --server_address=localhost:8080 --robot.type=so100_follower
    --robot.port=/dev/tty.usbmodem585A0076841 --robot.id=follower_so100 --robot.cameras="{laptop:
    {type: opencv, index_or_path: 0, width: 1920, height: 1080, fps: 30}}" --policy.device=mps
    --chunk_size_threshold=0.6 --task="Fold my T-shirt"`.

    Replaced: the port (8080: a free one), the serial port (our emulated STS3215 servos on a
    pseudo-terminal, calibrated by the file LeRobot wrote under so_follower/ for
    follower_so100), the camera (a 16:9 video file through the same opencv type, 640x360
    instead of 1920x1080 to spare this machine's two cores), the device (mps: cpu). Added:
    `--policy_type` and `--pretrained_name_or_path`, which LeRobot's robot_client requires too
    (its config has no default for either), naming a tiny ACT checkpoint for this arm.
    """
    lerobot_writes_calibration("follower_so100", DEFAULT_SO_CALIBRATION)
    video = write_video(tmp_path / "laptop.avi", 640, 360)
    checkpoint = make_tiny_checkpoint("act", tmp_path / "act", cameras={"laptop": (72, 128)})
    port = free_port()
    with FeetechEmulator.so_follower() as emu:
        s, served = serve_then_stop_the_client_first(
            ["--host=localhost", f"--port={port}"],
            [f"--server_address=localhost:{port}", "--robot.type=so100_follower",
             f"--robot.port={emu.port}", "--robot.id=follower_so100",
             f"--robot.cameras={{laptop: {{type: opencv, index_or_path: {video}, width: 640,"
             " height: 360, fps: 30}}",
             "--policy.device=cpu", "--chunk_size_threshold=0.6", "--task=Fold my T-shirt",
             "--policy_type=act", f"--pretrained_name_or_path={checkpoint}"],
            tmp_path,
        )  # fmt: skip
        assert emu.stats.requests > 2 * s["actions_executed"]  # a read and a write per tick
        # Our hold rule: the arm stays where the last action put it.
        assert all(servo.torque_enabled for servo in emu.servos.values())
    assert f"loading policy type=act path='{checkpoint}' device=cpu" in served


def test_the_trossen_command_line(tmp_path):
    """LeRobot's: `policy_server --host=127.0.0.1 --port=8080 --fps=30
    --inference_latency=0.033 --obs_queue_timeout=2` and `robot_client
    --server_address=127.0.0.1:8080 --robot.type=bi_widowxai_follower_robot
    --robot.left_arm_ip_address=192.168.1.5 --robot.right_arm_ip_address=192.168.1.4
    --robot.left_arm_max_relative_target=0.5 --robot.right_arm_max_relative_target=0.5
    --robot.id=bimanual_follower --robot.cameras='{cam_high: {type: intelrealsense,
    serial_number_or_name: "0123456789", width: 640, height: 480, fps: 30}, …}' --task="Grab
    and handover the red cube to the other arm" --policy_type=pi05
    --pretrained_name_or_path=USER/pi05-block-transfer-lerobot --policy_device=cuda
    --actions_per_chunk=50 --chunk_size_threshold=0.5 --aggregate_fn_name=weighted_average`.

    Replaced: the port (a free one); the robot (the Trossen-shaped plugin of
    widowxai_plugin.py, installed as a `lerobot_robot_*` distribution, with the same flags);
    the cameras (no RealSense here: the tinyarm plugin's camera type, without the serial
    number, and cam_low for the `…`); the policy (π0.5 cannot be built tiny, nor run on
    LeRobot 0.4.4 without its transformers fork: SmolVLA, the other flow-matching VLA LeRobot
    ships, as a tiny checkpoint with 50 actions per chunk); the device (cuda: cpu).
    """
    cameras = {"cam_high": (96, 128), "cam_low": (96, 128)}  # 640x480 frames are fitted to these
    checkpoint = make_tiny_checkpoint("smolvla", tmp_path / "smolvla", joints=8, cameras=cameras)
    record = tmp_path / "record"
    record.mkdir()
    robot = [
        "--robot.type=bi_widowxai_follower_robot",
        "--robot.left_arm_ip_address=192.168.1.5", "--robot.right_arm_ip_address=192.168.1.4",
        "--robot.left_arm_max_relative_target=0.5", "--robot.right_arm_max_relative_target=0.5",
        "--robot.id=bimanual_follower",
        "--robot.cameras={cam_high: {type: tinyarm_camera, width: 640, height: 480, fps: 30},"
        " cam_low: {type: tinyarm_camera, width: 640, height: 480, fps: 30}}",
    ]  # fmt: skip
    built = make_robot(robot[0].split("=")[1], dict(a[8:].split("=", 1) for a in robot[1:]))
    assert built.lerobot.ip_addresses == {"left": "192.168.1.5", "right": "192.168.1.4"}
    assert built.joint_names[0] == "left_base.pos" and len(built.joint_names) == 8
    assert built.config.max_relative_target is None  # each arm clamps: the loop must not
    port = free_port()
    s, served = serve_then_stop_the_client_first(
        ["--host=127.0.0.1", f"--port={port}", "--fps=30", "--inference_latency=0.033",
         "--obs_queue_timeout=2"],
        [f"--server_address=127.0.0.1:{port}", *robot, f"--robot.record_dir={record}",
         "--task=Grab and handover the red cube to the other arm", "--policy_type=smolvla",
         f"--pretrained_name_or_path={checkpoint}", "--policy_device=cpu",
         "--actions_per_chunk=50", "--chunk_size_threshold=0.5",
         "--aggregate_fn_name=weighted_average"],
        tmp_path,
    )  # fmt: skip
    assert "--inference_latency=0.033 accepted and not needed" in served
    assert "--obs_queue_timeout=2 accepted and not needed" in served
    for side in ("left", "right"):
        seen = json.loads((record / f"{side}.json").read_text())
        # Every action reached each arm by name and was clamped there, once, by 0.5 a step.
        assert seen["actions"] == s["actions_executed"], (side, seen)
        assert seen["orders"] == [["gripper.pos", "elbow.pos", "shoulder.pos", "base.pos"]]
        assert seen["clamped"] > 0
        assert all(abs(v) <= 0.5 * seen["actions"] + 1e-6 for v in seen["position"].values())
