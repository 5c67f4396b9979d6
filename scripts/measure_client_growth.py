"""Resident-memory growth per control tick of a long `up --local` run: client, server, supervisor.

    python scripts/measure_client_growth.py --minutes 10 [--fps 200] [--json out.json]

Runs `asyncinf up --local` (sim robot by default, scripted policy, shared memory, `--metrics` into a
temporary folder, so the metrics writer is measured too) for the warm-up plus the measured
minutes, samples each process's VmRSS from /proc every `--interval` seconds once warm, and
reports the least-squares slope of RSS over time divided by the tick rate the client achieved
(its summary's ticks over the run's length): bytes per tick. Target: < 1 byte per tick.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# VmRSS = RssAnon (the heap: where a leak shows) + RssFile (mapped code) + RssShmem (pages
# of the shared-memory segment touched so far, bounded by its size).
FIELDS = ("VmRSS", "RssAnon", "RssShmem")


def rss_bytes(pid: int) -> dict[str, int] | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return None
    return {k: int(re.search(rf"^{k}:\s+(\d+) kB", status, re.M).group(1)) * 1024 for k in FIELDS}


def pids(status_json: Path) -> dict[str, int] | None:
    """The three pids once the run is running, from its status file."""
    try:
        s = json.loads(status_json.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if s.get("state") != "running":
        return None
    return {"supervisor": s["pid"], "server": s["server"]["pid"], "client": s["client"]["pid"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="measured time")
    parser.add_argument("--fps", type=float, default=200.0)
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds before measuring")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--robot", default="sim", help="--robot.type (sim: two 480x640 cameras)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    measured_s = args.minutes * 60
    with tempfile.TemporaryDirectory() as tmp, Path(tmp, "log").open("w") as log:
        status, summary = Path(tmp, "status.json"), Path(tmp, "summary.json")
        started = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "asyncinf.runtime.cli", "up", "--local",
             f"--robot.type={args.robot}", "--policy.type=scripted", f"--fps={args.fps:g}",
             f"--duration={args.warmup + measured_s + 5:g}", f"--status-json={status}",
             f"--summary-json={summary}", f"--metrics={Path(tmp, 'ticks.jsonl')}"],
            stdout=subprocess.DEVNULL, stderr=log,
        )  # fmt: skip
        who = None
        while who is None:
            if proc.poll() is not None or time.monotonic() - started > 300:
                raise SystemExit(f"the run did not start:\n{Path(tmp, 'log').read_text()[-3000:]}")
            time.sleep(0.5)
            who = pids(status)
        running_at = time.monotonic()
        time.sleep(args.warmup)
        times: list[float] = []
        samples: dict[str, list[dict[str, int]]] = {role: [] for role in who}
        t0 = time.monotonic()
        while time.monotonic() - t0 <= measured_s:
            rss = {role: rss_bytes(pid) for role, pid in who.items()}
            if None in rss.values():
                raise SystemExit(f"a process exited: {rss}")
            times.append(time.monotonic() - t0)
            for role, value in rss.items():
                samples[role].append(value)
            time.sleep(args.interval)
        code = proc.wait(timeout=args.warmup + measured_s + 120)
        run_s = time.monotonic() - running_at
        if code != 0:
            raise SystemExit(f"the run exited {code}:\n{Path(tmp, 'log').read_text()[-3000:]}")
        ticks = json.loads(summary.read_text())["ticks"]
    tick_rate = ticks / run_s  # achieved, not asked
    rows = {}
    for role, values in samples.items():
        rows[role] = {}
        for key in FIELDS:
            series = [v[key] for v in values]
            slope = float(np.polyfit(times, series, 1)[0])  # bytes per second
            rows[role][key] = {
                "start_mib": series[0] / 2**20,
                "end_mib": series[-1] / 2**20,
                "bytes_per_tick": slope / tick_rate,
                "end_minus_start_bytes_per_tick": (series[-1] - series[0])
                / (times[-1] * tick_rate),
            }
    print(
        f"{args.minutes:g} min measured after {args.warmup:g} s warm-up, {ticks} ticks "
        f"({tick_rate:.1f} per second of {args.fps:g} asked), {len(times)} samples"
    )
    for role, by_key in rows.items():
        for key, r in by_key.items():
            print(
                f"{role:10s} {key:8s} {r['start_mib']:7.1f} -> {r['end_mib']:7.1f} MiB   "
                f"slope {r['bytes_per_tick']:+7.3f} B/tick   "
                f"end-start {r['end_minus_start_bytes_per_tick']:+7.3f} B/tick"
            )
    if args.json:
        series = {role: [v["RssAnon"] for v in values] for role, values in samples.items()}
        out = {"minutes": args.minutes, "fps": args.fps, "ticks": ticks, "processes": rows,
               "samples": {"t_s": times, "rss_anon_bytes": series}}  # fmt: skip
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
