"""Server kill -9 under `asyncinf up --local`: how soon the robot holds, how soon it resumes.

Kills the server N times (one run each) and reads the fake robot's command log: "holding
after" is how many commands were still executed after the kill (at 30 Hz, one per tick),
"resumed after" the time from the kill to the first command of the restarted server.

    python scripts/measure_server_loss.py [--runs 10] [--backoff 0.2]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from asyncinf.runtime.supervise.status_file import StatusFileError, read_status_file


def wait_status(path: Path, predicate, timeout_s: float = 30.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            s = read_status_file(path)
            if predicate(s):
                return s
        except StatusFileError:
            pass
        time.sleep(0.01)
    raise TimeoutError("status never matched")


def one_run(tmp: Path, backoff_s: float) -> tuple[int, float]:
    log, status = tmp / "commands.jsonl", tmp / "status.json"
    for p in (log, status):
        p.unlink(missing_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "asyncinf.runtime.cli", "up", "--local", "--robot.type=fake",
         f"--robot.command_log={log}", "--policy.type=fake", f"--status-json={status}",
         f"--restart-backoff={backoff_s}"],
        stderr=(tmp / "up.err").open("w"),
    )  # fmt: skip
    try:
        first = wait_status(status, lambda s: s.state == "running" and s.client.state == "running")
        time.sleep(1.0)
        killed_ns = time.monotonic_ns()
        os.kill(first.server.pid, signal.SIGKILL)
        wait_status(status, lambda s: s.server.pid not in (None, first.server.pid)
                    and s.state == "running")  # fmt: skip
        deadline = time.monotonic() + 10
        while True:
            rows = [json.loads(line) for line in log.read_text().splitlines()]
            cmds = [r["t_ns"] for r in rows if r["event"] == "command"]
            # From the last command before the kill: the hold may begin right there.
            after = [max((t for t in cmds if t <= killed_ns), default=killed_ns)]
            after += [t for t in cmds if t > killed_ns]
            gap = next((i for i in range(1, len(after)) if after[i] - after[i - 1] > 200e6), None)
            if gap is not None or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        held_after = gap - 1 if gap is not None else len(after) - 1
        resumed_s = (after[gap] - killed_ns) / 1e9 if gap is not None else float("nan")
        return held_after, resumed_s
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--backoff", type=float, default=0.2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = [one_run(Path(tmp), args.backoff) for _ in range(args.runs)]
    held = sorted(h for h, _ in results)
    resumed = sorted(r for _, r in results)
    print(f"commands executed after the kill (ticks): {held}")
    print(f"actions resumed after (s): {[round(r, 2) for r in resumed]}")


if __name__ == "__main__":
    main()
