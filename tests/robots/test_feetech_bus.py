"""FeetechBus against the emulator over a real pseudo-terminal, with real pyserial."""

import errno
import os
import random
import select
import time
from unittest import mock

import pytest

from asyncinf.robots.feetech import protocol
from asyncinf.robots.feetech.bus import FeetechBus
from asyncinf.robots.feetech.emulator import Faults, FeetechEmulator, Servo
from asyncinf.robots.feetech.protocol import ErrorBit
from asyncinf.robots.feetech.registers import STS3215, Register
from asyncinf.robots.so_follower import MOTORS as SO_FOLLOWER_MOTORS
from asyncinf.runtime.errors import (
    MotorBusError,
    MotorFault,
    MotorReplyCorrupt,
    MotorTimeout,
    SerialPortError,
)
from asyncinf.runtime.testing import wait_until

# Generous per-attempt timeout: tests that count retries must not see spurious ones on a
# loaded machine. Tests of missing replies pay it a few times.
TIMEOUT_MS = 100


@pytest.fixture
def emulator():
    with FeetechEmulator.so_follower() as emu:
        yield emu


@pytest.fixture
def bus(emulator):
    with FeetechBus(emulator.port, SO_FOLLOWER_MOTORS, timeout_ms=TIMEOUT_MS, retries=2) as b:
        yield b


def test_ping_returns_the_sts3215_model_number(bus):
    assert {m: bus.ping(m) for m in SO_FOLLOWER_MOTORS} == dict.fromkeys(SO_FOLLOWER_MOTORS, 777)


def test_sync_read_matches_the_servos_memory(emulator, bus):
    positions = bus.sync_read("Present_Position")
    assert list(positions) == list(SO_FOLLOWER_MOTORS)
    for motor, motor_id in SO_FOLLOWER_MOTORS.items():
        assert positions[motor] == emulator.servo(motor_id).get("Present_Position")


def test_sync_write_sets_every_goal_and_the_arm_moves_there(emulator, bus):
    goals = {m: 2000 + 10 * i for i, m in enumerate(SO_FOLLOWER_MOTORS)}
    goals["gripper"] = 2500
    # Torque first: with torque off an STS3215's goal follows its present position.
    bus.sync_write("Torque_Enable", dict.fromkeys(SO_FOLLOWER_MOTORS, 1))
    bus.sync_write("Goal_Position", goals)  # no reply: wait for the servos to have it
    wait_until(
        lambda: all(
            emulator.servo(i).get("Goal_Position") == goals[m]
            for m, i in SO_FOLLOWER_MOTORS.items()
        )
    )
    wait_until(lambda: bus.sync_read("Present_Position") == goals)


def test_read_write_single_registers_with_sign_magnitude(emulator, bus):
    bus.write("P_Coefficient", "elbow_flex", 16)
    assert emulator.servo(3).get("P_Coefficient") == 16
    assert bus.read("P_Coefficient", "elbow_flex") == 16
    bus.write("Homing_Offset", "wrist_flex", -100)
    # Sign-magnitude on the wire: bit 11 set, magnitude 100 (0x0864), little-endian.
    assert bytes(emulator.servo(4).mem[31:33]) == b"\x64\x08"
    assert bus.read("Homing_Offset", "wrist_flex") == -100


def test_a_dropped_reply_is_retried(emulator, bus):
    expected = bus.sync_read("Present_Position")
    emulator.faults.drop_next = 1
    assert bus.sync_read("Present_Position") == expected
    assert (bus.stats.retries, bus.stats.timeouts) == (1, 1)


def test_a_garbled_reply_is_retried(emulator, bus):
    expected = bus.read("Present_Position", "gripper")
    emulator.faults.garble_next = 1
    assert bus.read("Present_Position", "gripper") == expected
    assert (bus.stats.retries, bus.stats.corrupt) == (1, 1)


def test_noise_before_replies_is_skipped_without_a_retry(emulator, bus):
    expected = bus.sync_read("Present_Position")
    emulator.faults.noise_next = 6  # junk before every reply of the sync read
    assert bus.sync_read("Present_Position") == expected
    assert bus.stats.retries == 0


def test_persistent_garbling_raises_a_typed_error_after_bounded_retries(emulator, bus):
    emulator.faults.garble_rate = 1.0
    before = emulator.stats.requests
    with pytest.raises(MotorReplyCorrupt, match=r"motor 'shoulder_pan' \(id 1\)") as info:
        bus.sync_read("Present_Position")
    assert (info.value.motor, info.value.motor_id) == ("shoulder_pan", 1)
    assert "after 3 tries" in str(info.value) and emulator.port in str(info.value)
    assert emulator.stats.requests - before == 3


def test_missing_servo_raises_a_timeout_naming_it(emulator, bus):
    emulator.faults.missing_ids = {6}
    before = emulator.stats.requests
    with pytest.raises(MotorTimeout, match=r"motor 'gripper' \(id 6\).*no reply") as info:
        bus.sync_read("Present_Position")
    assert (info.value.motor, info.value.motor_id) == ("gripper", 6)
    assert emulator.stats.requests - before == 3
    with pytest.raises(MotorTimeout, match="gripper"):
        bus.ping("gripper")
    assert bus.ping("wrist_roll") == 777


def test_servo_error_bits_raise_on_read_and_are_recorded_on_sync_read(emulator, bus):
    emulator.servo(3).error = ErrorBit.OVERHEAT | ErrorBit.OVERLOAD
    with pytest.raises(MotorFault, match=r"'elbow_flex' \(id 3\).*overheated, overloaded"):
        bus.read("Present_Position", "elbow_flex")
    positions = bus.sync_read("Present_Position")  # the data is still good
    assert positions["elbow_flex"] == emulator.servo(3).get("Present_Position")
    assert bus.faults == {"elbow_flex": 0x24}
    emulator.servo(3).error = 0
    bus.sync_read("Present_Position")
    assert bus.faults == {}


def test_a_refused_instruction_is_a_fault(emulator):
    table = {**STS3215, "Bogus": Register("Bogus", 200, 1)}
    with FeetechBus(emulator.port, {"a": 1}, timeout_ms=TIMEOUT_MS, table=table) as b:
        with pytest.raises(MotorFault, match="instruction refused"):
            b.read("Bogus", "a")
        with pytest.raises(ValueError, match="read-only"):
            b.write("Present_Position", "a", 1)
    assert emulator.stats.refused == 1


def test_writes_are_range_checked_before_anything_is_sent(bus):
    with pytest.raises(ValueError, match=r"'gripper' \(id 6\)"):
        bus.sync_write("Goal_Position", {"gripper": 40000})
    with pytest.raises(KeyError, match="no motor"):
        bus.read("Present_Position", "elbow")


def test_nonexistent_port_says_so(tmp_path):
    with pytest.raises(SerialPortError, match=r"no such port.*find-port"):
        FeetechBus(str(tmp_path / "ttyACM9"), {"a": 1}).open()


def test_busy_port_says_so(emulator, bus):
    with pytest.raises(SerialPortError, match="port busy"):
        FeetechBus(emulator.port, {"a": 1}).open()


def test_permission_denied_names_the_dialout_group(emulator):
    denied = PermissionError(errno.EACCES, "Permission denied")
    with mock.patch("os.open", side_effect=denied), pytest.raises(SerialPortError, match="dialout"):
        FeetechBus(emulator.port, {"a": 1}).open()


def test_unplugged_adapter_is_a_port_error_not_a_hang(emulator, bus):
    bus.sync_read("Present_Position")
    emulator.close()
    with pytest.raises((SerialPortError, MotorTimeout)):
        bus.sync_read("Present_Position")


def drain(fd):
    """Send a sentinel READ until its reply comes back: the emulator has consumed all before."""
    sentinel = protocol.read(6, STS3215["Model_Number"].address, 2)
    expected = protocol.status(6, 0, (777).to_bytes(2, "little"))
    seen = b""
    for _ in range(20):  # a sentinel can be swallowed by a partial frame of noise: resend
        os.write(fd, sentinel)
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.05)
            if ready:
                seen += os.read(fd, 4096)
                if expected in seen:
                    return
    raise AssertionError("the emulator stopped answering")


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
def test_the_emulator_survives_random_bytes(emulator):
    rng = random.Random(1)
    fd = os.open(emulator.port, os.O_RDWR | os.O_NOCTTY)
    try:
        for _ in range(200):
            os.write(fd, bytes(rng.randrange(256) for _ in range(rng.randint(1, 40))))
            # Valid frames with random instructions and parameters, addressed to real ids.
            params = bytes(rng.randrange(256) for _ in range(rng.randint(0, 8)))
            frame = bytearray(protocol.encode(rng.choice([1, 2, 254]), rng.randrange(256), params))
            if rng.random() < 0.3:
                frame[-1] ^= 0x55  # a bad checksum: no reply, as on the real bus
            os.write(fd, frame)
        drain(fd)
    finally:
        os.close(fd)
    assert emulator._thread is not None and emulator._thread.is_alive()
    assert emulator.stats.bad_checksum > 0 and emulator.stats.refused > 0
    # Random writes may have changed ids or settings: power-cycle, then it answers correctly.
    for motor_id, servo in emulator.servos.items():
        servo.id = motor_id
        servo.reset()
    with FeetechBus(emulator.port, SO_FOLLOWER_MOTORS, timeout_ms=TIMEOUT_MS) as b:
        assert b.ping("shoulder_pan") == 777


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
def test_every_fault_case_ends_in_data_or_a_typed_error():
    """Zero unhandled exceptions across the emulator's fault-injection cases."""
    faults = Faults(drop_rate=0.1, garble_rate=0.1, noise_rate=0.1, seed=7)
    outcomes = {"ok": 0, "typed": 0}
    with (
        FeetechEmulator([Servo(i) for i in range(1, 7)], faults=faults) as emu,
        FeetechBus(emu.port, SO_FOLLOWER_MOTORS, timeout_ms=20, retries=1) as b,
    ):
        for k in range(150):
            try:
                if k % 3 == 0:
                    b.sync_read("Present_Position")
                elif k % 3 == 1:
                    b.read("Present_Voltage", "gripper")
                else:
                    b.write("Acceleration", "wrist_roll", 254)
                b.sync_write("Goal_Position", dict.fromkeys(SO_FOLLOWER_MOTORS, 2048))
                outcomes["ok"] += 1
            except MotorBusError:
                outcomes["typed"] += 1
        assert emu._thread.is_alive()
    assert outcomes["ok"] > 100  # retries recover most
