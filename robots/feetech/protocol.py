"""Feetech SCS/STS serial-bus protocol (the "protocol 0" of the STS/SMS series): framing only.

Every packet, in both directions::

    0xFF 0xFF  ID  LEN  INSTR|ERROR  PARAM_1 … PARAM_N  CHECKSUM

- ``LEN`` = N + 2 (it counts the instruction/error byte and the checksum).
- ``CHECKSUM`` = ~(ID + LEN + INSTR + PARAM_1 + … + PARAM_N) & 0xFF.
- ID 0xFE is broadcast: every servo executes, none replies (except to PING).
- Multi-byte values on the STS series are little-endian (low byte first); the SCS series is
  big-endian. This module moves bytes; `registers` turns them into values.
- A servo answers READ/WRITE/PING addressed to it with one status packet whose fourth byte
  is an error bit field (`ErrorBit`). SYNC READ gets one status packet per listed id, in
  order; SYNC WRITE and broadcasts get none.

Nothing here does I/O, so the bus driver and the emulator share it.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

HEADER = b"\xff\xff"
BROADCAST_ID = 0xFE
MAX_ID = 0xFD  # ids 0..253; 0xFE is broadcast, 0xFF would read as a header byte
MIN_PACKET_LEN = 6  # header (2) + id + len + instr/error + checksum
MAX_PARAMS = 250 - MIN_PACKET_LEN  # the SDK's TXPACKET_MAX_LEN is 250


class Instruction(enum.IntEnum):
    PING = 0x01
    READ = 0x02
    WRITE = 0x03
    REG_WRITE = 0x04
    ACTION = 0x05
    RESET = 0x06
    SYNC_READ = 0x82
    SYNC_WRITE = 0x83


class ErrorBit(enum.IntFlag):
    """Status-packet error bits. Bits 0-5 per the STS/SMS memory table and scservo_sdk;
    bits 4 and 6 as in the SCS (Dynamixel-1-derived) protocol."""

    VOLTAGE = 0x01
    ANGLE_SENSOR = 0x02
    OVERHEAT = 0x04
    OVERCURRENT = 0x08
    CHECKSUM = 0x10
    OVERLOAD = 0x20
    INSTRUCTION = 0x40


_ERROR_TEXT = {
    ErrorBit.VOLTAGE: "input voltage out of range",
    ErrorBit.ANGLE_SENSOR: "angle sensor error",
    ErrorBit.OVERHEAT: "overheated",
    ErrorBit.OVERCURRENT: "over current",
    ErrorBit.CHECKSUM: "checksum error in the instruction it received",
    ErrorBit.OVERLOAD: "overloaded",
    ErrorBit.INSTRUCTION: "instruction refused (unknown, bad address or length, read-only)",
}


def describe_error(error: int) -> str:
    """Readable text of a status error byte, e.g. ``"overheated, overloaded"``."""
    parts = [text for bit, text in _ERROR_TEXT.items() if error & bit]
    unknown = error & ~sum(_ERROR_TEXT) & 0xFF
    if unknown:
        parts.append(f"unknown error bits 0x{unknown:02x}")
    return ", ".join(parts) or "no error"


class PacketError(ValueError):
    """Bytes that are not a valid packet. Framing-level; the bus maps it to a motor error.

    `resume` is where to scan for the next header: just past the bad frame's header, since a
    garbled length byte may hide a good packet inside the declared frame.
    """

    def __init__(self, message: str, resume: int = 0) -> None:
        super().__init__(message)
        self.resume = resume


def checksum(body: bytes | bytearray | memoryview) -> int:
    """Checksum over ID, LEN, INSTR/ERROR and params (everything between header and checksum)."""
    return ~sum(body) & 0xFF


def _check_id(motor_id: int, *, broadcast_ok: bool = True) -> None:
    top = BROADCAST_ID if broadcast_ok else MAX_ID
    if not 0 <= motor_id <= top:
        raise ValueError(f"servo id {motor_id} out of range 0..{top}")


def encode(motor_id: int, code: int, params: bytes | bytearray = b"") -> bytes:
    """One packet: instruction packets (code = `Instruction`) and status packets (code = error)."""
    _check_id(motor_id)
    if len(params) > MAX_PARAMS:
        raise ValueError(f"{len(params)} parameter bytes; at most {MAX_PARAMS} fit one packet")
    body = bytes((motor_id, len(params) + 2, code)) + bytes(params)
    return HEADER + body + bytes((checksum(body),))


def ping(motor_id: int) -> bytes:
    return encode(motor_id, Instruction.PING)


def read(motor_id: int, address: int, length: int) -> bytes:
    return encode(motor_id, Instruction.READ, bytes((address, length)))


def write(motor_id: int, address: int, data: bytes) -> bytes:
    return encode(motor_id, Instruction.WRITE, bytes((address,)) + data)


def sync_read(address: int, length: int, ids: Iterable[int]) -> bytes:
    ids = bytes(ids)
    for i in ids:
        _check_id(i, broadcast_ok=False)
    return encode(BROADCAST_ID, Instruction.SYNC_READ, bytes((address, length)) + ids)


def sync_write(address: int, length: int, data: Mapping[int, bytes]) -> bytes:
    """SYNC WRITE of `length` bytes at `address`: params are address, length, then id + data."""
    params = bytearray((address, length))
    for motor_id, chunk in data.items():
        _check_id(motor_id, broadcast_ok=False)
        if len(chunk) != length:
            raise ValueError(f"id {motor_id}: {len(chunk)} data bytes, expected {length}")
        params.append(motor_id)
        params += chunk
    return encode(BROADCAST_ID, Instruction.SYNC_WRITE, params)


def status(motor_id: int, error: int = 0, params: bytes = b"") -> bytes:
    """A servo's reply (what the emulator sends)."""
    return encode(motor_id, error, params)


@dataclass(frozen=True)
class Packet:
    """A decoded packet. `code` is the instruction (requests) or the error byte (replies)."""

    id: int
    code: int
    params: bytes

    @property
    def error(self) -> int:
        return self.code


def find_packet(buf: bytes | bytearray, start: int = 0) -> tuple[Packet | None, int]:
    """Find the next packet in `buf` from `start`; returns (packet or None, next offset).

    Garbage before a header is skipped. A complete frame with a bad checksum or an impossible
    length raises `PacketError` (the caller decides what a corrupt frame means); an
    incomplete frame returns (None, offset of its header) so the caller can read more.
    """
    n = len(buf)
    i = buf.find(HEADER, start)
    if i == -1:
        # Keep a trailing 0xFF: it may be the first byte of a header still arriving.
        return None, n - 1 if n > start and buf[-1] == 0xFF else max(n, start)
    # A run of 0xFF (noise, or a header preceded by 0xFF) shifts the frame by one.
    while i + 2 < n and buf[i + 2] == 0xFF:
        i += 1
    if i + 4 > n:
        return None, i
    length = buf[i + 3]
    if length < 2:
        raise PacketError(f"length byte {length} < 2 at offset {i}", resume=i + 2)
    end = i + 4 + length
    if end > n:
        return None, i
    body = bytes(buf[i + 2 : end - 1])
    if checksum(body) != buf[end - 1]:
        raise PacketError(
            f"checksum 0x{buf[end - 1]:02x} != 0x{checksum(body):02x} "
            f"in {bytes(buf[i:end]).hex(' ')}",
            resume=i + 2,
        )
    return Packet(body[0], body[2], body[3:]), end


def decode(frame: bytes | bytearray) -> Packet:
    """Exactly one packet, nothing before or after it."""
    if frame[:2] != HEADER:
        raise PacketError(f"no header in {bytes(frame).hex(' ')}")
    packet, end = find_packet(frame)
    if packet is None or end != len(frame):
        raise PacketError(f"not exactly one packet: {bytes(frame).hex(' ')}")
    return packet
