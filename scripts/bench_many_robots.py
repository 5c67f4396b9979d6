"""Several sim robots on one server: idle frames, and the server's time per robot, batched or not.

    python scripts/bench_many_robots.py [--robots 4] [--sweep 1,2,4,6,8] [--repeat 3]
        [--duration 15] [--json out.json] [-- extra flags for asyncinf up]

Each run is a real `asyncinf up --local --robots FILE` (one client process per sim robot at
30 Hz, one tiny_torch server, a shared-memory session each), with batching (the defaults:
--batch.max_size = robots, --batch.max_wait_ms = 2) and without (--batch.max_size=1). Per
run it reads each robot's summary (idle frames after its first chunk, the server's queue wait
and round trip as the client saw them) and the server's per-session line (its share of the
model's time: the batch's inference time over the batch size, and the batch sizes formed).

Reported: for `--robots` N, the median and p99 over robots and repeats of each figure, and the
ratio of the server's inference time per robot without batching to with it; for `--sweep`, the
largest number of robots for which every robot had 0 idle frames after its first chunk, with
and without batching (one run per count and mode, in order, stopping at the first count that
idles). The machine may be shared: repeat, and read the spread.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

CLI = [sys.executable, "-m", "asyncinf.runtime.cli"]
MODES = {"batched": [], "unbatched": ["--batch.max_size=1"]}
SESSION_LINE = re.compile(r"asyncinf\.runtime\.server: session (\S+): (\{.*\})$", re.MULTILINE)


def run(count: int, mode: str, duration: float, extra: list[str]) -> dict:
    """One `up --local --robots` of `count` sim robots; per robot, what it and the server saw."""
    with tempfile.TemporaryDirectory() as tmp:
        robots = Path(tmp) / "robots.yaml"
        robots.write_text(
            "robots:\n" + "".join(f"  - {{name: r{i}, type: sim}}\n" for i in range(count))
        )
        summary = Path(tmp) / "summary.json"
        done = subprocess.run(
            [*CLI, "up", "--local", f"--robots={robots}", "--policy.type=tiny_torch",
             "--fps=30", f"--duration={duration}", f"--summary-json={summary}",
             "--start-timeout=300", *MODES[mode], *extra],
            capture_output=True, text=True, timeout=duration + 600, check=False,
        )  # fmt: skip
        if done.returncode != 0 or not summary.exists():
            tail = "\n".join(done.stderr.splitlines()[-15:])
            raise SystemExit(f"{count} robots, {mode}: exit {done.returncode}\n{tail}")
        clients = json.loads(summary.read_text())["robots"]
    server = {name: json.loads(line) for name, line in SESSION_LINE.findall(done.stderr)}
    out = {}
    for name, s in clients.items():
        session = server.get(name, {})
        out[name] = {
            "idle_after_first_chunk": s["idle_frames_after_first_chunk"],
            "chunks": s["chunks_received"],
            "queue_wait_ms": s["server_queue_wait_ms"],
            "roundtrip_ms": s["roundtrip_ms"],
            # With one robot the server prints no session line: its inference is its share.
            "inference_share_ms": session.get("inference_share_ms", s["server_inference_ms"]),
            "batch_sizes": session.get("batch_sizes", {}),
        }
    return out


def stats(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=float)
    return {"p50": float(np.median(arr)), "p99": float(np.percentile(arr, 99)), "n": len(arr)}


def compare(count: int, repeat: int, duration: float, extra: list[str]) -> dict:
    """Batched against unbatched, taking turns, `repeat` times each."""
    per_mode: dict[str, list[dict]] = {m: [] for m in MODES}
    for i in range(repeat):
        for mode in MODES:
            result = run(count, mode, duration, extra)
            per_mode[mode].append(result)
            idle = [r["idle_after_first_chunk"] for r in result.values()]
            print(f"  {count} robots, {mode}, run {i + 1}: idle after first chunk {idle}",
                  file=sys.stderr)  # fmt: skip
    report: dict = {}
    for mode, runs in per_mode.items():
        robots = [r for result in runs for r in result.values()]
        sizes: dict[str, int] = {}
        for r in robots:
            for k, v in r["batch_sizes"].items():
                sizes[k] = sizes.get(k, 0) + v
        report[mode] = {
            "idle_after_first_chunk_per_robot": [r["idle_after_first_chunk"] for r in robots],
            # Medians of each robot's own p50 and p99, over robots and repeats.
            "inference_share_ms": {
                q: stats([r["inference_share_ms"][q] for r in robots]) for q in ("p50", "p99")
            },
            "queue_wait_ms": {
                q: stats([r["queue_wait_ms"][q] for r in robots]) for q in ("p50", "p99")
            },
            "roundtrip_ms": {
                q: stats([r["roundtrip_ms"][q] for r in robots]) for q in ("p50", "p99")
            },
            "batch_sizes": dict(sorted(sizes.items(), key=lambda kv: int(kv[0]))),
        }
    b, u = report["batched"], report["unbatched"]
    report["inference_per_robot_ratio_unbatched_over_batched"] = {
        q: u["inference_share_ms"][q]["p50"] / b["inference_share_ms"][q]["p50"]
        for q in ("p50", "p99")
    }
    return report


def sweep(counts: list[int], duration: float, extra: list[str]) -> dict:
    """Per mode: the largest count at which every robot had 0 idle frames after its first
    chunk (counts in order; the first count that idles ends that mode's sweep)."""
    out: dict = {}
    for mode in MODES:
        best, seen = 0, {}
        for count in counts:
            result = run(count, mode, duration, extra)
            idle = [r["idle_after_first_chunk"] for r in result.values()]
            seen[count] = idle
            print(f"  sweep {mode}: {count} robots, idle after first chunk {idle}",
                  file=sys.stderr)  # fmt: skip
            if any(idle):
                break
            best = count
        out[mode] = {"largest_at_0_idle": best, "idle_per_count": seen}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--robots", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--sweep", default="", help="robot counts, e.g. 1,2,4,6,8 (none: skip)")
    parser.add_argument("--json", type=Path)
    args, extra = parser.parse_known_args()
    extra = [a for a in extra if a != "--"]
    report = {"robots": args.robots, "compare": compare(args.robots, args.repeat,
                                                        args.duration, extra)}  # fmt: skip
    if args.sweep:
        counts = [int(c) for c in args.sweep.split(",")]
        report["sweep"] = sweep(counts, args.duration, extra)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
