"""`FeetechBus`: ping, read, write, sync read and sync write over a serial port (pyserial).

One transaction at a time (a lock guards the port). Each transaction that expects replies
flushes stale input, sends, then collects status packets until every expected servo has
answered or the per-attempt timeout passes; a missing or garbled reply is retried up to
`retries` more times, then raised as `MotorTimeout` / `MotorReplyCorrupt` naming the motor,
its id and the port. A servo that answers with error bits raises `MotorFault` for
ping/read/write; for sync reads the data is still good (an overloaded gripper still reports
its position), so the bits are kept in `faults` and logged when they change, as LeRobot's
sync read ignores them.

Timing facts: at 1 Mbaud a byte takes 10 µs, so a 6-servo sync read (14 bytes out, 6×8 back)
is ~0.6 ms of wire time; USB adapters add ~1 ms (CDC-ACM) or up to 16 ms (FTDI with its
default latency timer, lowered here where the driver allows it). The timeout is per attempt
and adds the wire time of the expected reply.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from asyncinf.robots.feetech import protocol
from asyncinf.robots.feetech.protocol import Packet, PacketError
from asyncinf.robots.feetech.registers import (
    BAUD_RATE_CODES,
    STS3215,
    Register,
)
from asyncinf.runtime.errors import (
    MotorBusError,
    MotorFault,
    MotorReplyCorrupt,
    MotorTimeout,
    SerialPortError,
)

log = logging.getLogger(__name__)


def port_error(port: str, exc: BaseException) -> SerialPortError:
    """A SerialPortError that says why `port` cannot be used and what to do about it."""
    code = getattr(exc, "errno", None)
    text = str(exc)
    if code in (errno.EACCES, errno.EPERM):
        hint = (
            "permission denied: add your user to the 'dialout' group "
            "(sudo usermod -aG dialout $USER, then log out and back in)"
        )
    elif code == errno.ENOENT:
        hint = (
            "no such port: is the arm's bus board plugged in? "
            "`asyncinf robot find-port` lists the ports"
        )
    elif code in (errno.EBUSY, errno.EAGAIN, errno.EWOULDBLOCK) or "exclusively lock" in text:
        hint = (
            "port busy: another process holds it (another asyncinf or lerobot run, a serial "
            f"monitor, ModemManager); `fuser {port}` shows which"
        )
    else:
        hint = text
    return SerialPortError(f"cannot use serial port {port}: {hint}")


@dataclass(frozen=True)
class PortInfo:
    device: str
    description: str
    hwid: str  # e.g. "USB VID:PID=1A86:55D3 SER=58FA0 LOCATION=1-1:1.0"


def list_ports() -> list[PortInfo]:
    """Serial ports the OS knows (USB adapters included), sorted by device path."""
    from serial.tools import list_ports as lp  # noqa: PLC0415  (optional extra: asyncinf[serial])

    found = (PortInfo(p.device, p.description or "", p.hwid or "") for p in lp.comports())
    return sorted(found, key=lambda p: p.device)


@dataclass
class BusStats:
    transactions: int = 0
    retries: int = 0
    timeouts: int = 0  # attempts that ended without every reply
    corrupt: int = 0  # attempts that saw a garbled frame
    faults: dict[str, int] = field(default_factory=dict)  # motor -> last nonzero status bits


class FeetechBus:
    """Servos on one serial bus, addressed by motor name. Not connected until `open()`."""

    def __init__(
        self,
        port: str,
        motors: Mapping[str, int],
        *,
        baudrate: int = 1_000_000,
        timeout_ms: float = 50.0,
        retries: int = 2,
        table: Mapping[str, Register] = STS3215,
    ) -> None:
        ids = list(motors.values())
        if len(set(ids)) != len(ids):
            raise ValueError(f"two motors share an id: {dict(motors)}")
        for name, motor_id in motors.items():
            if not 0 <= motor_id <= protocol.MAX_ID:
                raise ValueError(f"motor {name!r}: id {motor_id} out of range 0..{protocol.MAX_ID}")
        if baudrate not in BAUD_RATE_CODES:
            raise ValueError(f"baud rate {baudrate} is not one the servos support")
        if timeout_ms <= 0 or retries < 0:
            raise ValueError("timeout_ms must be > 0 and retries >= 0")
        self.port = port
        self.motors = dict(motors)
        self.baudrate = baudrate
        self.timeout_s = timeout_ms / 1e3
        self.retries = retries
        self.table = table
        self.stats = BusStats()
        self._names = {i: n for n, i in self.motors.items()}
        self._byte_s = 10 / baudrate  # 8N1: 10 bits per byte
        self._lock = threading.Lock()
        self._ser = None
        self._fd: int | None = None  # POSIX fast path; None elsewhere

    # -- port --------------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._ser is not None

    def open(self) -> None:
        """Open the port exclusively. Raises SerialPortError saying why it cannot."""
        import serial  # noqa: PLC0415  (optional extra: asyncinf[serial])

        if self._ser is not None:
            return
        try:
            ser = serial.Serial(
                self.port,
                self.baudrate,
                timeout=self.timeout_s,
                write_timeout=max(1.0, self.timeout_s),
                exclusive=True,
            )
        except (serial.SerialException, OSError, ValueError) as exc:
            raise port_error(self.port, exc) from exc
        # FTDI adapters buffer replies for 16 ms unless told otherwise.
        with contextlib.suppress(AttributeError, NotImplementedError, OSError, ValueError):
            ser.set_low_latency_mode(True)
        self._ser = ser
        try:
            self._fd = ser.fileno()
        except (AttributeError, OSError, ValueError):  # not POSIX
            self._fd = None
        log.debug("opened %s at %d baud", self.port, self.baudrate)

    def close(self) -> None:
        """Close the port. Safe to call twice."""
        ser, self._ser, self._fd = self._ser, None, None
        if ser is not None:
            ser.close()

    def __enter__(self) -> FeetechBus:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- public operations -------------------------------------------------------------------

    def ping(self, motor: str) -> int:
        """PING then read Model_Number; returns the model number (777 for an STS3215)."""
        motor_id = self._id(motor)
        self._transact(lambda _: protocol.ping(motor_id), [motor_id], 0, f"PING {motor}")
        return self.read("Model_Number", motor)

    def read(self, register: str, motor: str) -> int:
        reg = self._reg(register)
        motor_id = self._id(motor)
        packet = protocol.read(motor_id, reg.address, reg.size)
        reply = self._transact(lambda _: packet, [motor_id], reg.size, f"READ {reg.name}")[motor_id]
        return reg.decode(reply.params)

    def write(self, register: str, motor: str, value: int) -> None:
        """WRITE with a status reply (the servo confirms), retried like reads."""
        reg = self._writable(register)
        motor_id = self._id(motor)
        packet = protocol.write(motor_id, reg.address, self._encode(reg, motor, value))
        self._transact(lambda _: packet, [motor_id], 0, f"WRITE {reg.name}={value}")

    def sync_read(self, register: str, motors: Sequence[str] | None = None) -> dict[str, int]:
        """One SYNC READ: every listed motor answers with `register`; status bits go to `faults`.

        A retry asks again only the motors whose reply was missing or garbled.
        """
        reg = self._reg(register)
        names = list(self.motors) if motors is None else list(motors)
        ids = [self._id(n) for n in names]
        replies = self._transact(
            lambda todo: protocol.sync_read(reg.address, reg.size, todo),
            ids,
            reg.size,
            f"SYNC READ {reg.name}",
            faults_ok=True,
        )
        return {n: reg.decode(replies[i].params) for n, i in zip(names, ids, strict=True)}

    def sync_write(self, register: str, values: Mapping[str, int]) -> None:
        """One SYNC WRITE (no reply: the servos never acknowledge it)."""
        reg = self._writable(register)
        data = {self._id(n): self._encode(reg, n, v) for n, v in values.items()}
        packet = protocol.sync_write(reg.address, reg.size, data)
        with self._lock:
            self.stats.transactions += 1
            self._send(packet)

    @property
    def faults(self) -> dict[str, int]:
        """Motor -> status error bits last seen in a sync read (nonzero only)."""
        return dict(self.stats.faults)

    # -- internals ---------------------------------------------------------------------------

    def _id(self, motor: str) -> int:
        try:
            return self.motors[motor]
        except KeyError:
            raise KeyError(f"no motor {motor!r} on this bus; motors: {list(self.motors)}") from None

    def _reg(self, name: str) -> Register:
        try:
            return self.table[name]
        except KeyError:
            raise KeyError(f"no register {name!r} in the control table") from None

    def _writable(self, name: str) -> Register:
        reg = self._reg(name)
        if not reg.writable:
            raise ValueError(f"register {name} is read-only")
        return reg

    def _encode(self, reg: Register, motor: str, value: int) -> bytes:
        try:
            return reg.encode(value)
        except ValueError as exc:
            raise ValueError(f"motor {motor!r} (id {self.motors[motor]}): {exc}") from None

    def _who(self, motor_id: int) -> str:
        return f"motor {self._names.get(motor_id, '?')!r} (id {motor_id}) on {self.port}"

    def _port(self) -> Any:
        if self._ser is None:
            raise SerialPortError(f"serial port {self.port} is not open; connect first")
        return self._ser

    def _flush_input(self) -> None:
        ser = self._port()
        try:
            ser.reset_input_buffer()
        except Exception as exc:  # termios.error is not an OSError
            raise SerialPortError(f"serial port {self.port} failed: {exc}") from exc

    def _send(self, packet: bytes) -> None:
        ser = self._port()
        try:
            if self._fd is None:
                ser.write(packet)
                return
            view = memoryview(packet)
            deadline = time.monotonic() + max(1.0, self.timeout_s)
            while view:
                try:
                    view = view[os.write(self._fd, view) :]
                except BlockingIOError:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise SerialPortError(
                            f"serial port {self.port}: writing stalled (flow control, or a "
                            "hung adapter)"
                        ) from None
                    select.select([], [self._fd], [], remaining)
        except OSError as exc:
            raise SerialPortError(f"serial port {self.port} failed while writing: {exc}") from exc

    def _recv(self, want: int, deadline: float) -> bytes:
        """Up to `want` bytes, waiting until `deadline` (monotonic s) for the first of them."""
        ser = self._port()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return b""
        try:
            if self._fd is None:
                return ser.read(want)  # bounded by the port's fixed timeout
            ready, _, _ = select.select([self._fd], [], [], remaining)
            if not ready:
                return b""
            try:
                data = os.read(self._fd, want)
            except BlockingIOError:
                return b""
        except OSError as exc:  # EIO: the adapter was unplugged
            raise SerialPortError(f"serial port {self.port} failed while reading: {exc}") from exc
        if not data:
            raise SerialPortError(f"serial port {self.port} closed: was the adapter unplugged?")
        return data

    def _transact(
        self,
        build: Callable[[list[int]], bytes],
        ids: list[int],
        data_len: int,
        what: str,
        *,
        faults_ok: bool = False,
    ) -> dict[int, Packet]:
        """Send `build(ids still unanswered)` and collect one status packet (with `data_len`
        params) per id, retrying for the ids whose reply was missing or garbled."""
        last: MotorBusError | None = None
        replies: dict[int, Packet] = {}
        with self._lock:
            self.stats.transactions += 1
            for attempt in range(1 + self.retries):
                if attempt:
                    self.stats.retries += 1
                    log.debug("%s: retry %d after: %s", what, attempt, last)
                todo = [i for i in ids if i not in replies]
                try:
                    self._attempt(build(todo), todo, data_len, what, replies)
                    break
                except MotorTimeout as exc:
                    self.stats.timeouts += 1
                    last = exc
                except MotorReplyCorrupt as exc:
                    self.stats.corrupt += 1
                    last = exc
            else:
                assert last is not None
                tries = 1 + self.retries
                raise type(last)(f"{last} (after {tries} tries)", last.motor, last.motor_id)
        for motor_id in ids:
            self._check_status(replies[motor_id], what, faults_ok)
        return replies

    def _attempt(
        self, packet: bytes, ids: list[int], data_len: int, what: str, got: dict[int, Packet]
    ) -> None:
        """One exchange; adds the good replies to `got`, raises if any id is left without."""
        frame = protocol.MIN_PACKET_LEN + data_len
        self._flush_input()  # a late reply to an earlier attempt must not answer this one
        self._send(packet)
        deadline = (
            time.monotonic() + self.timeout_s + (len(packet) + len(ids) * frame) * self._byte_s
        )
        buf = bytearray()
        bad: list[str] = []
        expected = set(ids)

        def scan(pos: int) -> int:
            """Collect every complete packet from `pos`; return where a partial one starts."""
            while True:
                try:
                    pkt, pos = protocol.find_packet(buf, pos)
                except PacketError as exc:
                    bad.append(str(exc))
                    pos = exc.resume
                    continue
                if pkt is None:
                    return pos
                if pkt.id not in expected or pkt.id in got:  # not asked for, or twice
                    bad.append(f"unexpected reply from id {pkt.id}")
                elif len(pkt.params) != data_len and not pkt.error & protocol.ErrorBit.INSTRUCTION:
                    bad.append(f"id {pkt.id} sent {len(pkt.params)} data bytes, not {data_len}")
                else:
                    got[pkt.id] = pkt

        pos = 0
        while expected - got.keys():
            want = len(expected - got.keys()) * frame - (len(buf) - pos)
            chunk = self._recv(max(1, want), deadline)
            if not chunk:
                # Out of time. A garbled length byte may have hidden whole frames behind
                # its header: look past it once before giving up.
                if pos + 2 < len(buf):
                    scan(pos + 2)
                break
            buf += chunk
            pos = scan(pos)
        if not expected - got.keys():
            return
        first = next(i for i in ids if i not in got)
        if bad:
            raise MotorReplyCorrupt(
                f"{self._who(first)}: garbled reply to {what}: {bad[0]}",
                self._names.get(first),
                first,
            )
        ms = self.timeout_s * 1e3
        raise MotorTimeout(
            f"{self._who(first)}: no reply to {what} within {ms:.0f} ms "
            "(check its power, cable and id)",
            self._names.get(first),
            first,
        )

    def _check_status(self, reply: Packet, what: str, faults_ok: bool) -> None:
        name = self._names.get(reply.id, "?")
        error = reply.error
        if error and not (faults_ok and not error & protocol.ErrorBit.INSTRUCTION):
            raise MotorFault(
                f"{self._who(reply.id)} reports {protocol.describe_error(error)} "
                f"(status 0x{error:02x}) on {what}",
                name,
                reply.id,
            )
        previous = self.stats.faults.get(name, 0)
        if error != previous:
            if error:
                self.stats.faults[name] = error
                log.warning("%s reports %s", self._who(reply.id), protocol.describe_error(error))
            else:
                del self.stats.faults[name]
                log.info("%s: status clear again", self._who(reply.id))


__all__ = ["BusStats", "FeetechBus", "PortInfo", "list_ports", "port_error"]
