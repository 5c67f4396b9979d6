"""Packet bytes against the examples of Feetech's "Communication Protocol User Manual".

The golden frames below are copied from the manual's worked examples (STS series,
little-endian), not produced by our encoder; status frames not in the manual are derived by
hand from its checksum rule, with the arithmetic written next to them.
"""

import pytest

from asyncinf.robots.feetech import protocol
from asyncinf.robots.feetech.protocol import ErrorBit, Instruction, Packet, PacketError
from asyncinf.robots.feetech.registers import (
    STS3215,
    decode_sign_magnitude,
    encode_sign_magnitude,
)


def b(text: str) -> bytes:
    return bytes.fromhex(text)


# Manual 1.3.1 PING: query id 1.
PING_1 = b("FF FF 01 02 01 FB")
PING_1_REPLY = b("FF FF 01 02 00 FC")
# Manual 1.3.2 READ: 2 bytes at 0x38 (Present_Position) of id 1; reply 0x0518 = 1304.
READ_POS_1 = b("FF FF 01 04 02 38 02 BE")
READ_POS_1_REPLY = b("FF FF 01 04 00 18 05 DD")
# Manual 1.3.3 WRITE example 2: id 1, at 0x2A: position 2048, time 0, speed 1000.
WRITE_1 = b("FF FF 01 09 03 2A 00 08 00 00 E8 03 D5")
# Manual 1.3.6 SYNC WRITE: ids 1-4, 6 bytes at 0x2A, each position 2048, time 0, speed 1000.
SYNC_WRITE_1_4 = b(
    "FF FF FE 20 83 2A 06 01 00 08 00 00 E8 03 02 00 08 00 00 E8 03"
    "03 00 08 00 00 E8 03 04 00 08 00 00 E8 03 58"
)
# Manual 1.3.7 SYNC READ: 8 bytes at 0x38 of ids 1 and 2, and the two replies.
SYNC_READ_1_2 = b("FF FF FE 06 82 38 08 01 02 36")
SYNC_READ_REPLY_1 = b("FF FF 01 0A 00 00 08 00 00 00 00 79 1E 55")
SYNC_READ_REPLY_2 = b("FF FF 02 0A 00 FF 07 00 00 00 00 77 23 53")
# Manual 1.3.5 ACTION (broadcast) and 1.3.8 RESET of id 1.
ACTION_ALL = b("FF FF FE 02 05 FA")
RESET_1 = b("FF FF 01 02 06 F6")
# Derived: id 3 answers a ping with OVERHEAT|OVERLOAD (0x24): ~(03+02+24) = ~0x29 = 0xD6.
FAULT_3 = b("FF FF 03 02 24 D6")


def test_ping_golden():
    assert protocol.ping(1) == PING_1
    assert protocol.decode(PING_1_REPLY) == Packet(id=1, code=0, params=b"")


def test_read_golden():
    assert protocol.read(1, 0x38, 2) == READ_POS_1
    reply = protocol.decode(READ_POS_1_REPLY)
    assert (reply.id, reply.error, reply.params) == (1, 0, b"\x18\x05")
    assert STS3215["Present_Position"].decode(reply.params) == 1304


def test_write_golden():
    data = (
        STS3215["Goal_Position"].encode(2048)
        + STS3215["Goal_Time"].encode(0)
        + STS3215["Goal_Velocity"].encode(1000)
    )
    assert protocol.write(1, STS3215["Goal_Position"].address, data) == WRITE_1


def test_sync_write_golden():
    chunk = b("00 08 00 00 E8 03")
    assert protocol.sync_write(0x2A, 6, {i: chunk for i in (1, 2, 3, 4)}) == SYNC_WRITE_1_4


def test_sync_read_golden():
    assert protocol.sync_read(0x38, 8, [1, 2]) == SYNC_READ_1_2
    r1, end = protocol.find_packet(SYNC_READ_REPLY_1 + SYNC_READ_REPLY_2)
    r2, end2 = protocol.find_packet(SYNC_READ_REPLY_1 + SYNC_READ_REPLY_2, end)
    assert (r1.id, r2.id) == (1, 2) and end2 == len(SYNC_READ_REPLY_1) * 2
    # Manual: id 1 at position 0x0800, id 2 at 0x07FF.
    assert STS3215["Present_Position"].decode(r1.params[:2]) == 2048
    assert STS3215["Present_Position"].decode(r2.params[:2]) == 2047


def test_other_instructions_golden():
    assert protocol.encode(protocol.BROADCAST_ID, Instruction.ACTION) == ACTION_ALL
    assert protocol.encode(1, Instruction.RESET) == RESET_1


def test_status_packet_golden_and_error_text():
    assert protocol.status(3, ErrorBit.OVERHEAT | ErrorBit.OVERLOAD) == FAULT_3
    reply = protocol.decode(FAULT_3)
    assert reply.error == 0x24
    assert protocol.describe_error(reply.error) == "overheated, overloaded"
    assert "instruction refused" in protocol.describe_error(0x40)
    assert "unknown error bits 0x80" in protocol.describe_error(0x80)
    assert protocol.describe_error(0) == "no error"


@pytest.mark.parametrize("frame", [PING_1, READ_POS_1, WRITE_1, SYNC_WRITE_1_4, SYNC_READ_1_2])
def test_checksum_rule(frame):
    # ~(ID + LEN + INSTR + params) & 0xFF, over everything between header and checksum.
    assert protocol.checksum(frame[2:-1]) == frame[-1]
    assert (sum(frame[2:-1]) + frame[-1]) & 0xFF == 0xFF


def test_bad_checksum_and_length_are_rejected():
    bad = bytearray(READ_POS_1_REPLY)
    bad[5] ^= 0x01
    with pytest.raises(PacketError, match="checksum"):
        protocol.decode(bad)
    with pytest.raises(PacketError, match="length"):
        protocol.find_packet(b("FF FF 01 01 00 FD"))
    with pytest.raises(PacketError):
        protocol.decode(PING_1_REPLY + b"\x00")


def test_find_packet_resyncs_past_noise_and_waits_for_partial_frames():
    stream = b("00 13 FF") + PING_1_REPLY + b("FF FF FF") + READ_POS_1_REPLY
    first, pos = protocol.find_packet(stream)
    second, end = protocol.find_packet(stream, pos)
    assert (first.id, second.params, end) == (1, b"\x18\x05", len(stream))
    partial = READ_POS_1_REPLY[:5]
    assert protocol.find_packet(partial) == (None, 0)
    assert protocol.find_packet(b"\x01\x02\xff") == (None, 2)  # keep a possible header byte


def test_corrupt_frame_reports_where_to_resume():
    bad = bytearray(PING_1_REPLY)
    bad[-1] ^= 0xFF
    stream = bytes(bad) + READ_POS_1_REPLY
    with pytest.raises(PacketError) as info:
        protocol.find_packet(stream)
    packet, _ = protocol.find_packet(stream, info.value.resume)
    assert packet.params == b"\x18\x05"


def test_encoder_refuses_bad_ids_and_lengths():
    with pytest.raises(ValueError, match="id"):
        protocol.ping(0xFF)
    with pytest.raises(ValueError, match="id"):
        protocol.sync_read(0x38, 2, [protocol.BROADCAST_ID])
    with pytest.raises(ValueError, match="expected 2"):
        protocol.sync_write(0x2A, 2, {1: b"\x00"})
    with pytest.raises(ValueError, match="fit"):
        protocol.encode(1, Instruction.WRITE, bytes(300))


@pytest.mark.parametrize(
    ("value", "bit", "raw"),
    [(0, 11, 0), (100, 11, 100), (-100, 11, 0x0864), (-2047, 11, 0x0FFF), (-5, 15, 0x8005)],
)
def test_sign_magnitude(value, bit, raw):
    # -100 with the sign in bit 11: 0x0800 | 100 = 0x0864 (LeRobot's encode_sign_magnitude).
    assert encode_sign_magnitude(value, bit) == raw
    assert decode_sign_magnitude(raw, bit) == value


def test_registers_encode_little_endian_and_check_range():
    assert STS3215["Homing_Offset"].encode(-100) == b"\x64\x08"
    assert STS3215["Goal_Position"].encode(-5) == b"\x05\x80"
    assert STS3215["Torque_Enable"].encode(1) == b"\x01"
    with pytest.raises(ValueError, match="out of range"):
        STS3215["Torque_Enable"].encode(256)
    with pytest.raises(ValueError, match="exceeds"):
        STS3215["Homing_Offset"].encode(4096)
    # STS3215 addresses LeRobot's tables use for the registers the driver writes.
    addresses = {n: (r.address, r.size) for n, r in STS3215.items()}
    assert addresses["Torque_Enable"] == (40, 1)
    assert addresses["Acceleration"] == (41, 1)
    assert addresses["Goal_Position"] == (42, 2)
    assert addresses["Lock"] == (55, 1)
    assert addresses["Present_Position"] == (56, 2)
    assert addresses["P_Coefficient"] == (21, 1)
    assert addresses["D_Coefficient"] == (22, 1)
    assert addresses["I_Coefficient"] == (23, 1)
    assert addresses["Min_Position_Limit"] == (9, 2)
    assert addresses["Max_Position_Limit"] == (11, 2)
    assert addresses["Homing_Offset"] == (31, 2)
    assert addresses["ID"] == (5, 1)
