"""Several servers behind nginx: what the balancer costs and what a replica's death costs.

    python scripts/bench_balancer.py [--round-trips 400] [--kills 8] [--json out.json]

1. Round trip through nginx against a direct connection, in one run: two `asyncinf serve`
   replicas (`fake` policy, no inference time), one reached directly and one through nginx
   (the shipped nginx-grpc.conf); one observation at a time alternating between the two, so
   both see the same machine load. p50/p99 of each, and of the difference.
2. A replica killed (kill -9) under a robot: a control loop at 30 Hz (in this process, a fake
   robot, the `scripted` policy) through nginx in front of two replicas; the one serving it
   is killed, then restarted on its port for the next round. Per kill: the time from kill to
   the client seeing its stream break; the ticks from the break to the first hold (0: the
   first tick after the break held); actions executed after the break that came from the dead
   replica (must be 0); the time from the break to executing again on the other replica,
   against the target reconnect_backoff_s + 2 s.

Prints tables of medians and p99; the machine may be shared, so run it more than once.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from asyncinf.robots.fake import FakeRobot, FakeRobotConfig
from asyncinf.runtime.client import ClientConfig, RobotClient, Tick
from asyncinf.runtime.messages import Observation, PolicySpec
from asyncinf.runtime.testing import hello, wait_until
from asyncinf.transports.grpc.balancer import Nginx, Replica, free_port, render
from asyncinf.transports.grpc.client import GrpcClientTransport
from asyncinf.transports.grpc.config import GrpcClientConfig

FPS = 30.0


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def summary(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50": pct(values, 50), "p99": pct(values, 99), "max": max(values)}


def balancer(folder: Path, replicas: list[Replica]) -> Nginx:
    port = free_port()
    return Nginx(folder, render(port, [f"127.0.0.1:{r.port}" for r in replicas]), port)


def client(port: int, **options: object) -> GrpcClientTransport:
    return GrpcClientTransport(GrpcClientConfig(target=f"127.0.0.1:{port}", **options))


def round_trip_overhead(folder: Path, n: int) -> dict[str, object]:
    direct_r, behind_r = Replica(), Replica()
    direct_r.ready(), behind_r.ready()
    nginx = balancer(folder / "rt", [behind_r])
    ends = {"direct": client(direct_r.port), "nginx": client(nginx.port)}
    times: dict[str, list[float]] = {name: [] for name in ends}
    try:
        for end in ends.values():
            end.handshake(hello(), 30)
        state = np.zeros(6, np.float32)
        for i in range(n + 20):  # the first 20 warm both paths up
            for name, end in ends.items():
                t0 = time.monotonic_ns()
                end.send_observation(Observation(i, t0, state, must_go=True))
                msg = end.receive(5)
                assert msg is not None and msg.timestep == i, f"no answer on {name}"
                if i >= 20:
                    times[name].append((time.monotonic_ns() - t0) / 1e3)
    finally:
        for end in ends.values():
            end.close()
        nginx.stop()
        direct_r.kill()
        behind_r.kill()
    added = [b - a for a, b in zip(times["direct"], times["nginx"], strict=True)]
    return {
        "direct_us": summary(times["direct"]),
        "nginx_us": summary(times["nginx"]),
        "added_us": {
            "p50": pct(times["nginx"], 50) - pct(times["direct"], 50),
            "p99": pct(times["nginx"], 99) - pct(times["direct"], 99),
            "pairwise_p50": pct(added, 50),
        },
    }


class Recorder:
    """Per tick: when, whether it held, and how many chunks had been folded in by then."""

    def __init__(self) -> None:
        self.loop: RobotClient | None = None
        self.ticks: list[tuple[int, bool, int]] = []
        self.lock = threading.Lock()

    def __call__(self, tick: Tick) -> None:
        with self.lock:
            self.ticks.append((tick.t_ns, tick.idle, self.loop.stats.chunks_received))


def kill_rounds(folder: Path, kills: int) -> dict[str, object]:
    replicas = [Replica(), Replica()]
    for r in replicas:
        r.ready()
    nginx = balancer(folder / "kill", replicas)
    backoff_s = 0.2
    transport = client(nginx.port, reconnect_backoff_s=backoff_s, heartbeat_timeout_s=2.0)
    robot = FakeRobot(FakeRobotConfig(num_joints=6))
    robot.connect()
    rec = Recorder()
    loop = RobotClient(robot, ClientConfig(fps=FPS), PolicySpec(type="scripted"), on_tick=rec)
    rec.loop = loop
    stop = threading.Event()
    rounds = []
    try:
        loop.attach(transport, 60)
        runner = threading.Thread(target=loop.run, args=(stop.is_set,), daemon=True)
        runner.start()
        for _ in range(kills):
            wait_until(lambda: transport.connected and loop.stats.chunks_received > 0, 30)
            time.sleep(1.0)  # into a steady state: chunks flowing, the queue full
            victim = next(r for r in replicas if r.sessions() > 0)
            lost_before = transport.disconnects
            killed_ns = time.monotonic_ns()
            victim.kill()
            wait_until(lambda n=lost_before: transport.disconnects > n, 10, "the break")
            break_ns = transport.last_disconnect_ns
            wait_until(lambda b=break_ns: _resumed(rec, b), 30, "executing again")
            with rec.lock:
                after = [t for t in rec.ticks if t[0] > break_ns]
            rounds.append(_round(after, killed_ns, break_ns))
            # As systemd would: back on its port (nginx's config is fixed) for the next kill.
            replicas[replicas.index(victim)] = Replica(port=victim.port).ready()
    finally:
        stop.set()
        transport.close()
        nginx.stop()
        for r in replicas:
            r.kill()
        robot.disconnect()
    target_ms = (backoff_s + 2.0) * 1e3
    return {
        "rounds": rounds,
        "break_detect_ms": summary([r["break_detect_ms"] for r in rounds]),
        "ticks_to_hold": summary([r["ticks_to_hold"] for r in rounds]),
        "dead_replica_actions_after_break": sum(r["dead_actions"] for r in rounds),
        "resume_ms": summary([r["resume_ms"] for r in rounds]),
        "resume_target_ms": target_ms,
        "within_target": sum(r["resume_ms"] <= target_ms for r in rounds),
    }


def _resumed(rec: Recorder, break_ns: int) -> bool:
    with rec.lock:
        after = [t for t in rec.ticks if t[0] > break_ns]
    return bool(after) and any(not idle and n > after[0][2] for _, idle, n in after)


def _round(after: list[tuple[int, bool, int]], killed_ns: int, break_ns: int) -> dict:
    chunks_at_break = after[0][2]  # none can arrive from a dead stream (stale_dropped)
    first_hold = next(i for i, (_, idle, _) in enumerate(after) if idle)
    dead = sum(1 for _, idle, n in after if not idle and n == chunks_at_break)
    resume_ns = next(t for t, idle, n in after if not idle and n > chunks_at_break)
    return {
        "break_detect_ms": (break_ns - killed_ns) / 1e6,
        "ticks_to_hold": first_hold,
        "dead_actions": dead,
        "resume_ms": (resume_ns - break_ns) / 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--round-trips", type=int, default=400)
    parser.add_argument("--kills", type=int, default=8)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="asyncinf-bench-lb-") as tmp:
        folder = Path(tmp)
        rt = round_trip_overhead(folder, args.round_trips)
        kills = kill_rounds(folder, args.kills)
    print("round trip, state-only observation (us)     p50       p99")
    for name in ("direct_us", "nginx_us"):
        s = rt[name]
        print(f"  {name[:-3]:<40} {s['p50']:>9.0f} {s['p99']:>9.0f}")
    a = rt["added_us"]
    print(f"  {'added by nginx':<40} {a['p50']:>9.0f} {a['p99']:>9.0f}")
    print(f"replica killed ({len(kills['rounds'])} kills)               p50       p99")
    for key, unit in (("break_detect_ms", "ms"), ("ticks_to_hold", "ticks"), ("resume_ms", "ms")):
        s = kills[key]
        print(f"  {key + ' (' + unit + ')':<40} {s['p50']:>9.1f} {s['p99']:>9.1f}")
    print(f"  actions from the dead replica after the break: "
          f"{kills['dead_replica_actions_after_break']}")  # fmt: skip
    print(f"  resumed within backoff + 2 s ({kills['resume_target_ms']:.0f} ms): "
          f"{kills['within_target']}/{len(kills['rounds'])}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"round_trip": rt, "kill": kills}, indent=1))


if __name__ == "__main__":
    main()
