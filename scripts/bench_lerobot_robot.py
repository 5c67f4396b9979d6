"""What the LeRobot robot adapter costs per tick, against the LeRobot robot's own calls.

    python scripts/bench_lerobot_robot.py [--ticks 2000] [--json OUT] [--robot.type=T --robot.K=V …]

Run it in an environment with LeRobot (scripts/lerobot_env.sh). One robot, one run: each tick
is either LeRobot's own `get_observation()` + `send_action(dict)` on the LeRobot robot, or the
adapter's `read_state()` + `read_images()` + `send_action(vector)` (what the control loop
calls) on the same robot, alternating, so drift and bus noise fall on both alike. Prints
p50/p90/p99/max in microseconds of both and the difference of their p50s.

Without --robot.type: LeRobot's own SO-101 follower on `asyncinf robot emulate` (emulated
STS3215 servos on a pseudo-terminal, in their own process), calibrated by a file written here.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _percentiles(ns: list[int]) -> dict[str, float]:
    us = np.asarray(ns, dtype=np.float64) / 1e3
    return {
        "p50": float(np.percentile(us, 50)),
        "p90": float(np.percentile(us, 90)),
        "p99": float(np.percentile(us, 99)),
        "max": float(us.max()),
    }


def _robot_options(extra: list[str]) -> tuple[str | None, dict[str, str]]:
    from asyncinf.runtime.config import parse_dotted_args  # noqa: PLC0415

    groups = parse_dotted_args(extra)
    unknown = sorted(set(groups) - {"robot"})
    if unknown:
        sys.exit(f"only --robot.* flags are taken besides --ticks/--json, not --{unknown[0]}.*")
    options = dict(groups.get("robot", {}))
    return options.pop("type", None), options


def measure(robot_type: str, options: dict[str, str], ticks: int) -> dict[str, object]:
    from asyncinf.robots.robot import make_robot  # noqa: PLC0415

    robot = make_robot(robot_type, options)
    lerobot = robot.lerobot
    action_keys = list(lerobot.action_features)
    robot.connect()
    own, adapter = [], []
    try:
        for _ in range(50):  # warm-up: caches, the camera threads, the bus
            robot.send_action(robot.read_state())
        for tick in range(2 * ticks):
            t0 = time.perf_counter_ns()
            if tick % 2:
                state = robot.read_state()
                robot.read_images()
                robot.send_action(state)
                adapter.append(time.perf_counter_ns() - t0)
            else:
                obs = lerobot.get_observation()
                lerobot.send_action({k: obs[k] for k in action_keys})
                own.append(time.perf_counter_ns() - t0)
    finally:
        robot.disconnect()
    result: dict[str, object] = {
        "robot": robot_type,
        "ticks_each": ticks,
        "lerobot_us": _percentiles(own),
        "adapter_us": _percentiles(adapter),
    }
    result["adapter_minus_lerobot_p50_us"] = (
        result["adapter_us"]["p50"] - result["lerobot_us"]["p50"]  # type: ignore[index]
    )
    return result


def _emulated_so101(calibration_root: Path) -> tuple[subprocess.Popen, dict[str, str]]:
    from asyncinf.robots.feetech.calibration import save_calibration  # noqa: PLC0415
    from asyncinf.robots.feetech.emulator import DEFAULT_SO_CALIBRATION  # noqa: PLC0415

    save_calibration(calibration_root / "robots" / "so_follower" / "bench.json",
                     DEFAULT_SO_CALIBRATION)  # fmt: skip
    emulate = subprocess.Popen(
        [sys.executable, "-m", "asyncinf.runtime.cli", "robot", "emulate",
         "--robot.type=so101_follower", "--speed=100000"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    port = emulate.stdout.readline().strip()
    return emulate, {"port": port, "id": "bench"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ticks", type=int, default=2000, help="ticks of each kind")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args, extra = parser.parse_known_args()
    robot_type, options = _robot_options(extra)
    with tempfile.TemporaryDirectory() as tmp:
        emulate = None
        if robot_type is None:
            # LeRobot reads its calibration root once, at import: set it before importing it.
            os.environ["HF_LEROBOT_CALIBRATION"] = tmp
            robot_type = "lerobot:so101_follower"
            emulate, options = _emulated_so101(Path(tmp))
        try:
            result = measure(robot_type, options, args.ticks)
        finally:
            if emulate is not None:
                emulate.terminate()
                emulate.wait(timeout=30)
    print(f"{'per tick (µs)':32s} {'p50':>9s} {'p90':>9s} {'p99':>9s} {'max':>9s}")
    for name, key in (("LeRobot get_observation+send", "lerobot_us"), ("adapter", "adapter_us")):
        row = result[key]
        print(f"{name:32s} " + " ".join(f"{row[k]:9.1f}" for k in ("p50", "p90", "p99", "max")))
    print(f"adapter − LeRobot, p50: {result['adapter_minus_lerobot_p50_us']:+.1f} µs")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
