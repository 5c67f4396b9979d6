"""Real processes for the balancer tests: `asyncinf serve` replicas with their Prometheus
endpoints, a real nginx in front of them (the shipped config), `up --remote` robots."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

from asyncinf.runtime.testing import LineReader
from asyncinf.transports.grpc.balancer import (
    CLI,
    Nginx,
    Replica,
    free_port,
    health,
    render,
    scrape,
)

__all__ = ["CLI", "ROBOT", "Replica", "Robot", "health", "scrape", "start_balancer"]
# No camera: the robots' observations stay small, so several fit this 2-core machine.
ROBOT = ["--robot.type=sim", "--robot.cameras=null", "--policy.type=scripted"]


class Robot:
    """`asyncinf up --remote` through the balancer, writing one JSON line per tick."""

    def __init__(self, port: int, folder: Path, name: str, *args: str) -> None:
        self.ticks = folder / f"{name}.jsonl"
        self.summary = folder / f"{name}.json"
        self.proc = subprocess.Popen(
            [*CLI, "up", f"--remote=127.0.0.1:{port}", *ROBOT, f"--metrics={self.ticks}",
             f"--summary-json={self.summary}", "--start-timeout=60", *args],
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.err = LineReader(self.proc.stderr)

    def records(self) -> list[dict]:
        if not self.ticks.exists():
            return []
        lines = self.ticks.read_text().splitlines()
        return [json.loads(line) for line in lines[:-1]]  # the last may be half-written

    def executing_since(self, t_ns: int) -> bool:
        """Has it executed an action on a tick after monotonic `t_ns`?"""
        return any(r["t_ns"] > t_ns and not r["idle"] for r in self.records())

    def held_since(self, t_ns: int) -> bool:
        return any(r["t_ns"] > t_ns and r["idle"] for r in self.records())

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(30)
        self.err.join()
        return code


def start_balancer(folder: Path, replicas: list[Replica]) -> Nginx:
    port = free_port()
    return Nginx(folder, render(port, [f"127.0.0.1:{r.port}" for r in replicas]), port)
