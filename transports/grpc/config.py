"""Configuration of the gRPC transport's two ends, validated when built.

Limits are set on purpose:
- Messages: 64 MiB each way by default. A raw observation from four 1080p cameras is
  4 × 1920 × 1080 × 3 B ≈ 24.9 MB, so it fits with room for state and framing; gRPC's own
  default (4 MiB) would refuse a single raw 1080p frame.
- Tensors: at most 2**26 elements (a 4K RGB frame is 2.5e7) and `max_message_bytes` bytes,
  checked from the claimed shape before any array is built.
- Liveness: application heartbeats every 0.5 s both ways, the peer declared gone after 5 s of
  silence (this catches a hung peer process, which TCP keepalive cannot); HTTP/2 keepalive
  pings every 10 s catch a dead connection when nothing is flowing. The server's
  minimum accepted ping interval (5 s) is below the client's ping period, so the server never
  answers our pings with GOAWAY "too_many_pings".
"""

from __future__ import annotations

import importlib.util
import ipaddress
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asyncinf.runtime.errors import ConfigError
from asyncinf.transports.base import WhenFull

MIB = 1 << 20
DEFAULT_MAX_MESSAGE_BYTES = 64 * MIB
DEFAULT_MAX_TENSOR_ELEMENTS = 1 << 26
IMAGE_CODECS = ("raw", "jpeg")
# How a camera frame is fitted to the shape the server asked for when the aspect ratios
# differ (equal aspect ratios are always a plain INTER_AREA resize). See images.py.


def is_loopback(host: str) -> bool:
    """True for localhost and loopback IP literals; False for wildcards and other names."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# The command-line spelling of the file options (`--grpc.NAME` reaches the same fields).
_FILE_FLAGS = {"token_file": "--token-file", "tls_ca": "--tls-ca", "tls_cert": "--tls-cert",
               "tls_key": "--tls-key", "tls_client_ca": "--grpc.tls_client_ca"}  # fmt: skip


def read_token(path: str, field_name: str) -> str:
    """The bearer token in `path` (surrounding whitespace removed): one word of printable
    ASCII, which is what an HTTP/2 header value may carry."""
    flag = _FILE_FLAGS.get(field_name, f"--{field_name}")
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"{flag}={path}: cannot read the token file ({why})") from None
    if not token or not token.isascii() or not token.isprintable() or " " in token:
        what = "is empty" if not token else "holds more than one word of printable ASCII"
        raise ConfigError(
            f"{flag}={path}: the token file {what}; it must hold one token, e.g. made with "
            "`python -c 'import secrets; print(secrets.token_urlsafe())' > FILE`"
        )
    return token


def check_pem(config: Any, *, ca: str) -> None:
    """The TLS files of `config` parse: the certificate chain with its private key, and the
    CA file `ca` names (a field). Read with the stdlib's OpenSSL, as gRPC's will read them:
    a garbage file is refused here in one line instead of as a failed bind or a connection
    that never comes up."""
    import ssl  # noqa: PLC0415

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    cert, key, ca_file = config.tls_cert, config.tls_key, getattr(config, ca)
    if cert is not None:
        try:  # an encrypted key gets no passphrase (gRPC cannot use one): refused too
            context.load_cert_chain(cert, key, password=lambda: b"")
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(
                f"--tls-cert={cert} --tls-key={key}: not a PEM certificate chain and its "
                f"unencrypted private key ({_ssl_reason(exc)})"
            ) from None
    if ca_file is not None:
        try:
            context.load_verify_locations(cafile=ca_file)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(
                f"{_FILE_FLAGS[ca]}={ca_file}: not a PEM CA certificate ({_ssl_reason(exc)})"
            ) from None


def _ssl_reason(exc: Exception) -> str:
    return str(getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc)


def check_bindable(config: GrpcServerConfig) -> None:
    """Refuse an address this host cannot listen on before the policy loads: a host that
    does not resolve, an address that is not this host's, a port another process listens
    on (bound here for a moment, as the server will bind it)."""
    check_address(config.host, config.port)


def check_address(
    host: str, port: int, port_flag: str = "--port", host_flag: str = "--host"
) -> None:
    """`check_bindable` for any listener of ours (`port_flag`, `host_flag` name its options)."""
    import errno  # noqa: PLC0415
    import socket  # noqa: PLC0415

    bare = host.strip("[]")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            bare, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except (socket.gaierror, UnicodeError) as exc:
        raise ConfigError(
            f"{host_flag}={host}: not an address of this host ({_ssl_reason(exc)}); "
            "use 127.0.0.1 (this host only), 0.0.0.0 (every interface) or one of its names"
        ) from None
    with socket.socket(family, kind, proto) as sock:
        # A previous run's connections in TIME_WAIT are no conflict; a listener is.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                shown = f"[{bare}]:{port}" if ":" in bare else f"{bare}:{port}"
                raise ConfigError(
                    f"{port_flag}={port}: another process listens on {shown}; "
                    f"stop it or choose another port ({port_flag}=0 picks a free one)"
                ) from None
            raise ConfigError(
                f"{host_flag}={host} {port_flag}={port}: cannot listen there "
                f"({exc.strerror}); use 127.0.0.1, 0.0.0.0 or an address of this host"
            ) from None


def _positive(obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ConfigError(f"--{name}={value!r}: must be a number > 0")


def _readable(obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if value is not None and not Path(value).is_file():
            raise ConfigError(f"{_FILE_FLAGS.get(name, '--' + name)}={value}: no such file")


@dataclass
class _Common:
    token_file: str | None = None  # bearer token, one line; sent/checked on every call
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_tensor_elements: int = DEFAULT_MAX_TENSOR_ELEMENTS
    heartbeat_interval_s: float = 0.5
    heartbeat_timeout_s: float = 5.0  # peer silent this long -> PeerGone
    keepalive_time_s: float = 10.0  # HTTP/2 ping period
    keepalive_timeout_s: float = 5.0  # no ping ack within this -> connection dead

    def _check_common(self) -> None:
        if importlib.util.find_spec("grpc") is None:
            raise ConfigError(
                "the gRPC transport needs grpcio, an optional extra: pip install 'asyncinf[grpc]'"
            )
        _positive(
            self,
            "max_message_bytes",
            "max_tensor_elements",
            "heartbeat_interval_s",
            "heartbeat_timeout_s",
            "keepalive_time_s",
            "keepalive_timeout_s",
        )
        if self.max_message_bytes > 2**31 - 1:
            raise ConfigError(
                f"--max_message_bytes={self.max_message_bytes}: gRPC limits a message to "
                f"{2**31 - 1} B; stream larger payloads"
            )
        if self.heartbeat_timeout_s <= 2 * self.heartbeat_interval_s:
            raise ConfigError(
                f"--heartbeat_timeout_s={self.heartbeat_timeout_s}: must exceed twice "
                f"--heartbeat_interval_s={self.heartbeat_interval_s}, or one late beat "
                "would end the session"
            )
        _readable(self, "token_file")
        self.load_token()  # refuses an empty or malformed token file now, not at connect

    def load_token(self) -> str | None:
        return None if self.token_file is None else read_token(self.token_file, "token_file")

    @classmethod
    def from_dict(cls, spec: dict[str, Any]) -> Any:
        """Build from a plain map (a supervisor spec, a config file or `--grpc.NAME=VALUE`
        flags as text), coercing types and naming unknown keys."""
        from asyncinf.runtime.config import build  # noqa: PLC0415  (the one flag parser)

        return build(cls, spec, prefix="grpc.")


@dataclass
class GrpcServerConfig(_Common):
    """`asyncinf serve`: where to listen, how to secure it, and the session's limits."""

    host: str = "127.0.0.1"  # loopback unless told otherwise
    port: int = 8080  # 0 picks a free port (read it back from the transport's `port`)
    tls_cert: str | None = None  # PEM certificate chain of this server
    tls_key: str | None = None  # PEM private key of tls_cert
    tls_client_ca: str | None = None  # PEM CA: when set, clients must present a certificate
    handshake_timeout_s: float = 10.0  # an opened stream must send its Handshake within this
    chunk_queue_depth: int = 8  # chunks queued for the wire before publish_chunk waits
    when_full: WhenFull = WhenFull.BLOCK
    max_sessions: int = 1  # sessions served at once (the server loop's --max_sessions)
    # gRPC handler threads, one per open stream (rejections are short); None: 8, or
    # max_sessions + 4 when that is more.
    max_workers: int | None = None
    min_client_ping_interval_s: float = 5.0  # pings closer than this count as abuse
    allow_takeover: bool = True  # a reconnecting client replaces its own stale session
    stop_grace_s: float = 1.0  # on close: time for in-flight messages and the goodbye
    extra_options: list[tuple[str, Any]] = field(default_factory=list)  # raw gRPC args

    def __post_init__(self) -> None:
        self._check_common()
        if not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise ConfigError(f"--port={self.port!r}: must be 0..65535 (0 picks a free port)")
        if not self.host:
            raise ConfigError("--host is empty: use 127.0.0.1 (local) or 0.0.0.0 (all)")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError(
                f"--tls-cert={self.tls_cert} --tls-key={self.tls_key}: give both or neither"
            )
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ConfigError("--tls-client-ca needs --tls-cert and --tls-key (TLS) as well")
        _readable(self, "tls_cert", "tls_key", "tls_client_ca")
        check_pem(self, ca="tls_client_ca")
        _positive(self, "handshake_timeout_s", "min_client_ping_interval_s", "stop_grace_s")
        if isinstance(self.when_full, str):
            try:
                self.when_full = WhenFull(self.when_full)
            except ValueError:
                raise ConfigError(
                    f"--when_full={self.when_full!r}: choose one of {[w.value for w in WhenFull]}"
                ) from None
        if self.chunk_queue_depth < 1:
            raise ConfigError(f"--chunk_queue_depth={self.chunk_queue_depth}: must be >= 1")
        if not isinstance(self.max_sessions, int) or self.max_sessions < 1:
            raise ConfigError(f"--max_sessions={self.max_sessions!r}: must be >= 1")
        if self.max_workers is None:
            self.max_workers = max(8, self.max_sessions + 4)
        if self.max_workers < self.max_sessions + 1:
            raise ConfigError(
                f"--max_workers={self.max_workers}: must be >= {self.max_sessions + 1} (one per "
                "open session, plus one to answer one more client that it is busy)"
            )

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"{host}:{self.port}"


@dataclass
class GrpcClientConfig(_Common):
    """`asyncinf up --remote HOST:PORT`: where the server is and how to talk to it."""

    target: str = ""  # HOST:PORT
    tls: bool = False  # TLS with the system's trusted CAs (implied by tls_ca)
    tls_ca: str | None = None  # PEM CA that signed the server's certificate
    tls_cert: str | None = None  # PEM client certificate, when the server asks for one
    tls_key: str | None = None
    tls_server_name: str | None = None  # name to verify in the server's certificate
    image_codec: str = "raw"  # raw | jpeg
    jpeg_quality: int = 90
    connect_timeout_s: float = 10.0  # a first connection gives up after this
    handshake_timeout_s: float = 30.0  # re-handshake after a reconnect (policy already loaded)
    reconnect: bool = True  # on a lost stream: back off, reconnect, re-handshake
    reconnect_backoff_s: float = 0.2  # first wait; doubles per failed attempt
    reconnect_backoff_max_s: float = 5.0
    reconnect_give_up_s: float | None = None  # None: keep trying (the robot holds meanwhile)
    receive_queue_depth: int = 256  # chunks/errors read but not yet taken by receive()
    # Names this client to the server, which lets a reconnect with the same id replace its
    # own stale session instead of being told "busy". Default: random per transport. Give
    # the robot's id to let a restarted client process take over too.
    client_id: str | None = None
    extra_options: list[tuple[str, Any]] = field(default_factory=list)  # raw gRPC args

    def __post_init__(self) -> None:
        self._check_common()
        host, sep, port = self.target.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
            raise ConfigError(
                f"--remote={self.target!r}: expected HOST:PORT, e.g. gpu-host:8080 or [::1]:8080"
            )
        if self.image_codec not in IMAGE_CODECS:
            raise ConfigError(f"--image_codec={self.image_codec!r}: choose one of {IMAGE_CODECS}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f"--jpeg_quality={self.jpeg_quality}: must be 1..100 (90 is good)")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError(
                f"--tls-cert={self.tls_cert} --tls-key={self.tls_key}: give both or neither"
            )
        _readable(self, "tls_ca", "tls_cert", "tls_key")
        check_pem(self, ca="tls_ca")
        _positive(
            self,
            "connect_timeout_s",
            "handshake_timeout_s",
            "reconnect_backoff_s",
            "reconnect_backoff_max_s",
            "receive_queue_depth",
        )
        if self.client_id is not None and not 0 < len(self.client_id) <= 64:
            raise ConfigError(f"--client_id={self.client_id!r}: must be 1..64 characters")
        if self.reconnect_give_up_s is not None:
            _positive(self, "reconnect_give_up_s")
        if self.tls_ca is not None or self.tls_cert is not None:
            self.tls = True

    @property
    def host(self) -> str:
        return self.target.rpartition(":")[0]
