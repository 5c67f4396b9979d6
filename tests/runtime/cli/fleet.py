"""Real processes for the balancer tests: `asyncinf serve` replicas with their Prometheus
endpoints, a real nginx in front of them (the shipped config), `up --remote` robots."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from asyncinf.runtime.testing import LineReader, wait_until
from asyncinf.transports.grpc.balancer import Nginx, render

CLI = [sys.executable, "-m", "asyncinf.runtime.cli"]
# No camera: the robots' observations stay small, so several fit this 2-core machine.
ROBOT = ["--robot.type=sim", "--robot.cameras={}", "--policy.type=scripted"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def health(port: int, service: str = "") -> int:
    """A real grpc.health.v1 Check on 127.0.0.1:`port`."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status


def scrape(port: int) -> dict[str, list]:
    """The metrics at http://127.0.0.1:`port`/metrics, parsed by prometheus_client:
    sample name -> [(labels, value), ...]."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


class Replica:
    """`asyncinf serve` on `port` (0: a free one), with its metrics on a free port; started at
    once, `ready()` waits for it (so that several load their policies side by side)."""

    def __init__(self, *args: str, port: int = 0) -> None:
        self.proc = subprocess.Popen(
            [*CLI, "serve", "--host=127.0.0.1", f"--port={port}", "--prometheus-port=0", *args],
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.err = LineReader(self.proc.stderr)
        self.port = self.metrics_port = 0

    def ready(self) -> Replica:
        """Wait for its ready line (the policy loaded); the ports are known from then on."""
        wait_until(lambda: "serving on 127.0.0.1:" in self.err.text(), 60, "a replica's ready line")
        text = self.err.text()
        self.port = int(re.search(r"serving on 127\.0\.0\.1:(\d+)", text).group(1))
        self.metrics_port = int(re.search(r"metrics on http://127\.0\.0\.1:(\d+)", text).group(1))
        return self

    def sessions(self) -> int:
        """Sessions open now, from its Prometheus endpoint."""
        return int(sum(v for _, v in scrape(self.metrics_port).get("asyncinf_sessions", [])))

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.alive:
            self.proc.kill()
            self.proc.wait(10)


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
