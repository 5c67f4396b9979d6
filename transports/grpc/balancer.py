"""nginx in front of `asyncinf serve` replicas, run from the shipped `nginx-grpc.conf`.

The file users copy is the one the tests and the balancer benchmark run: `render` only puts
in the ports (the listen line, one upstream `server` line per replica) and, when asked,
switches on its commented TLS lines (`#tls`: terminated at nginx; `#grpcs`: end to end).
`Nginx` runs it in the foreground from a folder of its own (pid file, temp files), on
loopback, and stops it.
"""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from asyncinf.runtime.errors import ConfigError

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
