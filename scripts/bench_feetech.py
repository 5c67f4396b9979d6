"""Feetech bus benchmark: one control tick's bus I/O over the emulator's pseudo-terminal, and
the emulator's fault-injection cases.

A tick is what the SO-10x driver does every control period: one SYNC READ of the 6 present
positions and one SYNC WRITE of the 6 goals. The emulator runs either in a thread of this
process or as `asyncinf robot emulate` in its own process (the realistic case: nothing
shares this interpreter's lock with it). Target: p99 <= 5 ms.

Then every fault case (dropped, garbled, noisy replies, a missing servo) runs ticks through
`SO101Follower`, counting ticks that succeeded, typed RobotErrors, and anything else
(unhandled; the target is zero).

    python scripts/bench_feetech.py [--ticks 3000] [--hz 0] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter

import numpy as np

from asyncinf.robots.feetech.bus import FeetechBus
from asyncinf.robots.feetech.emulator import Faults, FeetechEmulator
from asyncinf.robots.robot import make_robot
from asyncinf.robots.so_follower import MOTORS
from asyncinf.runtime.errors import RobotError
from asyncinf.runtime.rate import Rate


def tick_latencies(port: str, ticks: int, hz: float) -> np.ndarray:
    """Microseconds per tick (sync read + sync write), after a short warm-up."""
    out = np.empty(ticks, np.float64)
    rate = Rate(hz) if hz > 0 else None
    with FeetechBus(port, MOTORS) as bus:
        for _ in range(50):
            bus.sync_write("Goal_Position", bus.sync_read("Present_Position"))
        for k in range(ticks):
            if rate is not None:
                rate.sleep()
            t0 = time.perf_counter_ns()
            positions = bus.sync_read("Present_Position")
            bus.sync_write("Goal_Position", positions)
            out[k] = (time.perf_counter_ns() - t0) / 1e3
        if bus.stats.retries:
            print(f"  note: {bus.stats.retries} retries during the run", file=sys.stderr)
    return out


def summary(us: np.ndarray) -> dict[str, float]:
    p50, p90, p99 = np.percentile(us, [50, 90, 99])
    return {"p50_us": p50, "p90_us": p90, "p99_us": p99, "max_us": float(us.max()), "n": len(us)}


def in_thread(ticks: int, hz: float) -> dict[str, float]:
    with FeetechEmulator.so_follower() as emu:
        return summary(tick_latencies(emu.port, ticks, hz))


def in_process(ticks: int, hz: float) -> dict[str, float]:
    cmd = [sys.executable, "-m", "asyncinf.runtime.cli", "robot", "emulate",
           "--robot.type=so101_follower"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        if not ready:
            raise RuntimeError("the emulator printed no port within 30 s")
        port = proc.stdout.readline().decode().strip()
        return summary(tick_latencies(port, ticks, hz))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


FAULT_CASES = {
    "none": Faults(),
    "drop 2%": Faults(drop_rate=0.02),
    "garble 2%": Faults(garble_rate=0.02),
    "noise 5%": Faults(noise_rate=0.05),
    "all 5%": Faults(drop_rate=0.05, garble_rate=0.05, noise_rate=0.05),
    "garble 100%": Faults(garble_rate=1.0),
    "gripper missing": Faults(missing_ids={6}),
}


def fault_case(faults: Faults, ticks: int) -> dict[str, int]:
    outcomes: Counter[str] = Counter()
    with tempfile.TemporaryDirectory() as cal_dir, FeetechEmulator.so_follower() as emu:
        robot = make_robot("so101_follower", {"port": emu.port, "calibration_dir": cal_dir,
                                              "bus_timeout_ms": 10})  # fmt: skip
        robot.connect()
        emu.faults = faults
        try:
            for _ in range(ticks):
                try:
                    robot.send_action(robot.read_state())
                    outcomes["ok"] += 1
                except RobotError as exc:
                    outcomes[type(exc).__name__] += 1
                except Exception as exc:  # noqa: BLE001  (counting them is the point)
                    outcomes[f"UNHANDLED {type(exc).__name__}"] += 1
        finally:
            emu.faults = Faults()
            robot.disconnect()
        outcomes["retries"] = robot.bus.stats.retries
    return dict(outcomes)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=3000)
    parser.add_argument("--hz", type=float, default=0, help="pace ticks (0: back to back)")
    parser.add_argument("--fault-ticks", type=int, default=200)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    results: dict[str, object] = {"ticks": {}, "faults": {}}
    print(f"bus tick = SYNC READ 6 positions + SYNC WRITE 6 goals, {args.ticks} ticks")
    print(f"{'emulator':10s} {'p50 µs':>9s} {'p90 µs':>9s} {'p99 µs':>9s} {'max µs':>9s}")
    for name, run in (("thread", in_thread), ("process", in_process)):
        s = run(args.ticks, args.hz)
        results["ticks"][name] = s
        print(f"{name:10s} {s['p50_us']:9.0f} {s['p90_us']:9.0f} {s['p99_us']:9.0f} "
              f"{s['max_us']:9.0f}")  # fmt: skip
    print(f"\nfault cases, {args.fault_ticks} ticks each through SO101Follower")
    unhandled = 0
    for name, faults in FAULT_CASES.items():
        outcome = fault_case(faults, args.fault_ticks)
        results["faults"][name] = outcome
        unhandled += sum(v for k, v in outcome.items() if k.startswith("UNHANDLED"))
        print(f"  {name:16s} {outcome}")
    print(f"\nunhandled exceptions: {unhandled}")
    results["unhandled"] = unhandled
    if args.json:
        with open(args.json, "w") as f:  # noqa: PTH123
            json.dump(results, f, indent=2)
    return 1 if unhandled else 0


if __name__ == "__main__":
    sys.exit(main())
