"""nginx in front of `asyncinf serve` replicas, run from the shipped `nginx-grpc.conf`, and
the replicas as processes: what the balancer tests and `scripts/bench_balancer.py` run.

The file users copy is the one the tests and the balancer benchmark run: `render` only puts
in the ports (the listen line, one upstream `server` line per replica) and, when asked,
switches on its commented TLS lines (`#tls`: terminated at nginx; `#grpcs`: end to end).
`Nginx` runs it in the foreground from a folder of its own (pid file, temp files), on
loopback, and stops it. `Replica` is one `asyncinf serve` process with its Prometheus
endpoint; `health` and `scrape` ask it (or nginx) as a probe and a scraper would.
"""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from asyncinf.runtime.errors import ConfigError
from asyncinf.runtime.testing import LineReader, wait_until

CLI = [sys.executable, "-m", "asyncinf.runtime.cli"]

CONF = Path(__file__).with_name("nginx-grpc.conf")
_LISTEN = re.compile(r"^(\s*)listen 127\.0\.0\.1:8080 http2;$", re.M)
_UPSTREAM = re.compile(r"^(\s*)server 127\.0\.0\.1:\d+ (max_fails.*)$", re.M)


def render(
    port: int,
    replicas: list[str],
    *,
    tls: tuple[str, str] | None = None,
    grpcs: tuple[str, str] | None = None,
) -> str:
    """The shipped config listening on 127.0.0.1:`port` before `replicas` (HOST:PORT).

    `tls` (certificate, key): TLS terminated at nginx. `grpcs` (CA, name in the replicas'
    certificate): TLS from nginx to the replicas too.
    """
    if not replicas:
        raise ConfigError("the balancer needs at least one replica (HOST:PORT)")
    text = CONF.read_text(encoding="utf-8")
    indent, options = _UPSTREAM.search(text).groups()
    servers = "\n".join(f"{indent}server {r} {options}" for r in replicas)
    text = re.sub(r"@(\n@)*", lambda _m: servers, _UPSTREAM.sub("@", text))
    if tls is None:
        text = _LISTEN.sub(rf"\g<1>listen 127.0.0.1:{port} http2;", text)
    else:
        cert, key = tls
        text = _LISTEN.sub("", text)
        text = re.sub(r"#tls listen 127\.0\.0\.1:\d+", f"listen 127.0.0.1:{port}", text)
        text = text.replace(
            "#tls ssl_certificate /etc/asyncinf/balancer.pem", f"ssl_certificate {cert}"
        )
        text = text.replace(
            "#tls ssl_certificate_key /etc/asyncinf/balancer.key", f"ssl_certificate_key {key}"
        )
    if grpcs is not None:
        ca, name = grpcs
        text = re.sub(r"^\s*grpc_pass grpc://.*\n", "", text, flags=re.M)
        text = text.replace("#grpcs ", "")
        text = text.replace("/etc/asyncinf/replicas-ca.pem", ca)
        text = text.replace("grpc_ssl_name asyncinf-replica;", f"grpc_ssl_name {name};")
    return text


def find_nginx() -> str:
    """The nginx binary, or a ConfigError saying how to install it."""
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).is_file()), None
    )
    if found is None:
        raise ConfigError(
            "nginx is not installed: the load-balancer tests and benchmark run a real one "
            "(Debian/Ubuntu: apt-get install -y nginx)"
        )
    return found


class Nginx:
    """nginx in the foreground, from `conf` written into `folder`; listening once built."""

    def __init__(self, folder: Path, conf: str, port: int, timeout_s: float = 15.0) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "nginx.conf"
        path.write_text(conf, encoding="utf-8")
        self.port = port
        self.log = folder / "nginx.log"
        binary = find_nginx()
        check = subprocess.run(
            [binary, "-t", "-q", "-e", "stderr", "-p", str(folder), "-c", str(path)],
            capture_output=True, text=True, timeout=timeout_s, check=False,
        )  # fmt: skip
        if check.returncode != 0:
            raise ConfigError(f"nginx refused {path}: {check.stderr.strip()}")
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(
                [binary, "-e", "stderr", "-p", str(folder), "-c", str(path),
                 "-g", "daemon off;"],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while not _accepts(port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise ConfigError(f"nginx did not listen on {port}: {self.log.read_text()}")
            time.sleep(0.05)  # polling a port: there is nothing to wait on

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # fast shutdown: open streams are cut
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout_s)

    def __enter__(self) -> Nginx:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def health(port: int, service: str = "") -> int:
    """A real grpc.health.v1 Check on 127.0.0.1:`port`."""
    import grpc  # noqa: PLC0415
    from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: PLC0415

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service=service)
        return stub.Check(request, timeout=5).status


def scrape(port: int) -> dict[str, list]:
    """The metrics at http://127.0.0.1:`port`/metrics, parsed by prometheus_client:
    sample name -> [(labels, value), ...]."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415

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
