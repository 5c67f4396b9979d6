"""The emulated STS3215 behaves as the real servo where LeRobot's driver relies on it."""

from asyncinf.robots.feetech import protocol
from asyncinf.robots.feetech.emulator import FeetechEmulator, Servo
from asyncinf.robots.feetech.protocol import ErrorBit, Instruction
from asyncinf.robots.feetech.registers import STS3215, TABLE_END


class Clock:
    def __init__(self) -> None:
        self.ns = 0

    def __call__(self) -> int:
        return self.ns


def test_present_position_wraps_a_turn_below_the_homing_offset():
    servo = Servo(1, 100.0)
    # The joint stands 100 steps above the encoder's zero; an offset of 300 puts it below.
    assert servo.write(STS3215["Homing_Offset"].address, STS3215["Homing_Offset"].encode(300))
    assert servo.get("Present_Position") == 4096 - 200
    assert servo.write(STS3215["Homing_Offset"].address, STS3215["Homing_Offset"].encode(0))
    assert servo.get("Present_Position") == 100


def test_with_torque_off_the_goal_follows_so_torque_on_holds_where_it_stands():
    clock = Clock()
    servo = Servo(1, 2048.0, clock_ns=clock)
    goal = STS3215["Goal_Position"]
    servo.write(goal.address, goal.encode(3000))  # a stale goal, then the arm is moved by hand
    servo.position = 1500.0
    clock.ns += 10**9
    servo.advance()
    assert servo.get("Goal_Position") == 1500
    servo.write(STS3215["Torque_Enable"].address, b"\x01")
    clock.ns += 10**9
    servo.advance()
    assert servo.get("Present_Position") == 1500  # held, not jumped to 3000


def _ask(emulator: FeetechEmulator, instruction: int, params: bytes) -> protocol.Packet:
    reply = emulator.handle(protocol.Packet(1, instruction, params))
    packet, _ = protocol.find_packet(bytearray(reply), 0)
    assert packet is not None
    return packet


def test_a_refused_read_still_carries_the_bytes_asked_for():
    emulator = FeetechEmulator([Servo(1)])
    packet = _ask(emulator, Instruction.READ, bytes([TABLE_END - 1, 4]))
    assert packet.error & ErrorBit.INSTRUCTION
    assert len(packet.params) == 4 and packet.params[1:] == b"\0\0\0"
    malformed = _ask(emulator, Instruction.READ, bytes([TABLE_END - 1]))
    assert malformed.error & ErrorBit.INSTRUCTION and malformed.params == b""
