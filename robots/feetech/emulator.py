"""An emulated Feetech bus: N STS3215 servos answering the real protocol on a pseudo-terminal.

`--robot.port` pointed at `emulator.port` works exactly like a USB port: the driver opens it
with pyserial and exchanges the same bytes it would with an arm. Each servo has the STS3215
control-table memory, moves its present position toward its goal at a fixed speed while
torque is on (lazily, from the monotonic clock, so no ticking thread), honours the position
limits and homing offset, and answers bad commands with the instruction error bit.
Packets with a bad checksum get no reply, as on the real bus (the id itself may be garbled).

Three behaviours LeRobot's Feetech driver relies on, as the STS3215 does them:

- Present_Position is the 12-bit magnetic encoder minus Homing_Offset, modulo one turn: it
  stays in 0..4095 in position mode (it never goes negative below the offset). LeRobot's
  `set_half_turn_homings` and range recording assume that.
- With torque off, Goal_Position follows Present_Position, so enabling torque holds the arm
  where it stands. LeRobot's SO follower enables torque without writing a goal first; a goal
  left from before the arm was moved by hand would otherwise make it jump there.
- A READ the servo refuses (a range past its control table) is answered with the bytes asked
  for (past the table they read 0) and the instruction error bit, so a driver that takes
  `length` data bytes from every read reply (LeRobot's scservo_sdk indexes them) sees the
  error instead of a short packet. Why not byte-exact: Feetech does not document what the
  STS3215 answers here; the length is what both drivers need, the error bit keeps the refusal
  visible. A READ without its two parameters (or asking more than a reply holds) has no length
  to honour, and keeps a status with no data.

Fault injection (`Faults`) drops replies, garbles them (one byte flipped), prefixes them
with noise, or removes servos, by count or by probability, so tests and `asyncinf robot
emulate` can exercise every error path of the driver.

Runs in a thread (`start()` / `close()`, or as a context manager); `asyncinf robot emulate`
runs one in its own process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import select
import threading
import time
import tty
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from asyncinf.robots.feetech import protocol
from asyncinf.robots.feetech.calibration import MotorCalibration
from asyncinf.robots.feetech.protocol import ErrorBit, Instruction, PacketError
from asyncinf.robots.feetech.registers import (
    STS3215,
    STS3215_MODEL_NUMBER,
    TABLE_END,
    Register,
)

log = logging.getLogger(__name__)

STEPS_PER_TURN = 4096  # the STS3215's 12-bit magnetic encoder
# The servos' receive state machine resets after this much silence inside a frame.
INTER_BYTE_TIMEOUT_S = 0.01
DEFAULT_SPEED_STEPS_S = 3000.0  # ≈ 264°/s: an STS3215 at 12 V, no load

# Factory values of the STS3215 registers the emulator starts from (the rest read 0).
_FACTORY = {
    "Firmware_Major_Version": 3,
    "Firmware_Minor_Version": 10,
    "Model_Number": STS3215_MODEL_NUMBER,
    "Baud_Rate": 0,  # 1 Mbaud
    "Return_Delay_Time": 0,
    "Response_Status_Level": 1,
    "Min_Position_Limit": 0,
    "Max_Position_Limit": 4095,
    "Max_Temperature_Limit": 70,
    "Max_Voltage_Limit": 140,
    "Min_Voltage_Limit": 40,
    "Max_Torque_Limit": 1000,
    "P_Coefficient": 32,
    "D_Coefficient": 32,
    "I_Coefficient": 0,
    "Protection_Current": 500,
    "Angular_Resolution": 1,
    "Overload_Torque": 80,
    "Torque_Limit": 1000,
    "Lock": 1,
    "Present_Voltage": 120,  # 12.0 V
    "Present_Temperature": 30,
    "Maximum_Acceleration": 254,
}

# A plausible LeRobot calibration of an SO-10x follower, for the emulated arm.
DEFAULT_SO_CALIBRATION = {
    "shoulder_pan": MotorCalibration(1, 0, -1470, 758, 3292),
    "shoulder_lift": MotorCalibration(2, 0, 156, 817, 3227),
    "elbow_flex": MotorCalibration(3, 0, 1225, 847, 3094),
    "wrist_flex": MotorCalibration(4, 0, 30, 866, 3215),
    "wrist_roll": MotorCalibration(5, 0, -430, 0, 4095),
    "gripper": MotorCalibration(6, 0, 1430, 2023, 3451),
}

_WRITABLE = bytearray(TABLE_END)
for _reg in STS3215.values():
    if _reg.writable:
        _WRITABLE[_reg.address : _reg.address + _reg.size] = b"\x01" * _reg.size


@dataclass
class Faults:
    """Deliberate misbehaviour. `*_next` count down over the next replies; `*_rate` are
    per-reply probabilities (seeded). `missing_ids` never answer anything."""

    drop_next: int = 0
    garble_next: int = 0
    noise_next: int = 0
    drop_rate: float = 0.0
    garble_rate: float = 0.0
    noise_rate: float = 0.0
    missing_ids: set[int] = field(default_factory=set)
    seed: int | None = 0


@dataclass
class EmulatorStats:
    requests: int = 0
    replies: int = 0
    bad_checksum: int = 0
    dropped: int = 0
    garbled: int = 0
    noised: int = 0
    refused: int = 0  # replies carrying the instruction error bit


class Servo:
    """One emulated STS3215: control-table memory plus a position that moves toward the goal.

    `position` is in the Present_Position frame (encoder − Homing_Offset, modulo a turn), as
    a float so slow motion accumulates; the registers hold it rounded.
    """

    def __init__(
        self,
        motor_id: int,
        position: float = 2048.0,
        *,
        speed_steps_s: float = DEFAULT_SPEED_STEPS_S,
        clock_ns=time.monotonic_ns,
    ) -> None:
        self.id = motor_id
        self.mem = bytearray(TABLE_END)
        self.speed_steps_s = speed_steps_s
        self.error = 0  # status bits reported in every reply (e.g. ErrorBit.OVERLOAD)
        self._clock_ns = clock_ns
        self._t_ns = clock_ns()
        self._pending: tuple[int, bytes] | None = None  # REG_WRITE awaiting ACTION
        self.reset()
        self.position = float(position) % STEPS_PER_TURN
        self._sync_present(0.0)  # torque is off at power-on: the goal is where it stands

    def reset(self) -> None:
        """Factory values (the RESET instruction); keeps the id."""
        self.mem[:] = bytes(TABLE_END)
        for name, value in _FACTORY.items():
            self.set(name, value)
        self.set("ID", self.id)

    # Register access for tests and setup; bypasses the read-only rules.
    def get(self, name: str) -> int:
        reg = STS3215[name]
        return reg.decode(self.mem[reg.address : reg.address + reg.size])

    def set(self, name: str, value: int) -> None:
        reg = STS3215[name]
        self.mem[reg.address : reg.address + reg.size] = reg.encode(value)

    @property
    def torque_enabled(self) -> bool:
        return self.mem[STS3215["Torque_Enable"].address] != 0

    def advance(self, now_ns: int | None = None) -> None:
        """Move toward the goal for the time elapsed since the last call."""
        now_ns = self._clock_ns() if now_ns is None else now_ns
        dt = max(0, now_ns - self._t_ns) / 1e9
        self._t_ns = now_ns
        velocity = 0.0
        if self.torque_enabled and dt > 0:
            lo, hi = self.get("Min_Position_Limit"), self.get("Max_Position_Limit")
            goal = float(self.get("Goal_Position"))
            if lo < hi:  # position mode clamps the goal to the limits
                goal = min(max(goal, lo), hi)
            goal_speed = abs(self.get("Goal_Velocity"))
            speed = goal_speed if goal_speed else self.speed_steps_s
            error = goal - self.position
            step = min(abs(error), speed * dt)
            self.position += step if error > 0 else -step
            velocity = step / dt if error > 0 else -step / dt
        self._sync_present(velocity)

    def _sync_present(self, velocity: float) -> None:
        present = round(self.position) % STEPS_PER_TURN
        self.set("Present_Position", present)
        self.set("Present_Velocity", max(-32767, min(32767, round(velocity))))
        if not self.torque_enabled:
            self.set("Goal_Position", present)  # the STS3215's goal tracks a free joint
        moving = abs(self.get("Goal_Position") - present) > 1 and self.torque_enabled
        self.set("Moving", int(moving))

    def read(self, address: int, length: int) -> tuple[bool, bytes]:
        """(in the table, `length` bytes): bytes past the table read 0."""
        data = bytes(self.mem[address : address + length])
        return length > 0 and address + length <= TABLE_END, data.ljust(length, b"\0")

    def write(self, address: int, data: bytes) -> bool:
        """Store `data` at `address`; False (nothing written) if any byte is read-only."""
        end = address + len(data)
        if not data or end > TABLE_END or not all(_WRITABLE[address:end]):
            return False
        old_offset = self.get("Homing_Offset")
        self.mem[address:end] = data
        if _overlaps(address, end, STS3215["Homing_Offset"]):
            # The encoder did not move: the present frame shifts by the offset change.
            self.position = (self.position - (self.get("Homing_Offset") - old_offset)) % (
                STEPS_PER_TURN
            )
            self._sync_present(0.0)
        if _overlaps(address, end, STS3215["ID"]):
            self.id = self.mem[STS3215["ID"].address]
        return True


def _overlaps(start: int, end: int, reg: Register) -> bool:
    return start < reg.address + reg.size and end > reg.address


class FeetechEmulator:
    """N STS3215 servos behind a pseudo-terminal. `port` is the path to open."""

    def __init__(
        self,
        servos: Iterable[Servo] | None = None,
        *,
        faults: Faults | None = None,
    ) -> None:
        self.servos: dict[int, Servo] = {
            s.id: s for s in (servos if servos is not None else [Servo(i) for i in range(1, 7)])
        }
        self.faults = faults or Faults()
        self.stats = EmulatorStats()
        self.port = ""
        self._rng = random.Random(self.faults.seed)  # noqa: S311  (fault injection, not crypto)
        self._lock = threading.Lock()  # guards servos and faults against test threads
        self._master = self._slave = -1
        self._wake_r = self._wake_w = -1
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def so_follower(
        cls,
        calibration: Mapping[str, MotorCalibration] | None = None,
        *,
        faults: Faults | None = None,
        speed_steps_s: float = DEFAULT_SPEED_STEPS_S,
    ) -> FeetechEmulator:
        """Six servos wired as an SO-100/SO-101 follower, calibrated with `calibration`
        (LeRobot's, written to their EPROM as `lerobot-calibrate` does) or a built-in one,
        each joint standing mid-range and the gripper closed."""
        from asyncinf.robots.so_follower import MOTORS  # noqa: PLC0415

        calibration = calibration or DEFAULT_SO_CALIBRATION
        servos = []
        for motor, motor_id in MOTORS.items():
            cal = calibration.get(motor) or DEFAULT_SO_CALIBRATION[motor]
            start = (
                cal.range_min + 100 if motor == "gripper" else (cal.range_min + cal.range_max) / 2
            )
            servo = Servo(motor_id, start, speed_steps_s=speed_steps_s)
            servo.set("Homing_Offset", cal.homing_offset)
            servo.set("Min_Position_Limit", cal.range_min)
            servo.set("Max_Position_Limit", cal.range_max)
            servos.append(servo)
        return cls(servos, faults=faults)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> FeetechEmulator:
        """Open the pseudo-terminal and answer on it from a background thread."""
        if self._thread is not None:
            return self
        self._master, self._slave = os.openpty()
        # Raw: no echo, no line editing, no CR/LF or XON/XOFF translation of binary packets.
        tty.setraw(self._slave)
        # Keeping our own slave fd open means the master never sees EIO/HUP when a client
        # closes the port, so clients can come and go.
        os.set_blocking(self._master, False)
        self.port = os.ttyname(self._slave)
        self._wake_r, self._wake_w = os.pipe()
        self._stop.clear()
        self._thread = threading.Thread(target=self._serve, name="feetech-emulator", daemon=True)
        self._thread.start()
        log.debug("emulating %d servos on %s", len(self.servos), self.port)
        return self

    def close(self) -> None:
        """Stop answering and close the pseudo-terminal. Safe to call twice."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"x")
            thread.join(timeout=5)
        for name in ("_master", "_slave", "_wake_r", "_wake_w"):
            fd = getattr(self, name)
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
                setattr(self, name, -1)

    def __enter__(self) -> FeetechEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until `close()` is called (from another thread); True if it was."""
        return self._stop.wait(timeout)

    # -- the serving loop --------------------------------------------------------------------

    def _serve(self) -> None:
        buf = bytearray()
        last_rx = time.monotonic()
        while not self._stop.is_set():
            # Inside a partial frame, wake up to apply the servos' inter-byte timeout.
            timeout = INTER_BYTE_TIMEOUT_S if buf else None
            try:
                ready, _, _ = select.select([self._master, self._wake_r], [], [], timeout)
            except (OSError, ValueError):
                return
            if self._wake_r in ready:
                return
            if not ready:
                if buf and time.monotonic() - last_rx >= INTER_BYTE_TIMEOUT_S:
                    # Abandon the stale partial frame: skip its header and rescan the rest.
                    buf = bytearray(buf[2:]) if buf[:2] == protocol.HEADER else bytearray()
                    buf = self._consume(buf)
                continue
            try:
                data = os.read(self._master, 4096)
            except BlockingIOError:
                continue
            except OSError:
                return
            last_rx = time.monotonic()
            buf += data
            buf = self._consume(buf)

    def _consume(self, buf: bytearray) -> bytearray:
        """Handle every complete packet in `buf`; return what is left (a partial frame)."""
        pos = 0
        while True:
            try:
                packet, pos = protocol.find_packet(buf, pos)
            except PacketError as exc:
                self.stats.bad_checksum += 1
                pos = exc.resume
                continue
            if packet is None:
                return bytearray(buf[pos:])
            self.stats.requests += 1
            with self._lock:
                replies = self.handle(packet)
            if replies:
                self._send(replies)

    def _send(self, data: bytes) -> None:
        try:
            os.write(self._master, data)
        except (BlockingIOError, OSError):
            # Nobody is draining the port: the bytes are lost, as on a real bus.
            self.stats.dropped += 1

    # -- protocol semantics ------------------------------------------------------------------

    def handle(self, packet: protocol.Packet) -> bytes:
        """The bytes the servos put on the bus in answer to one instruction packet."""
        now = time.monotonic_ns()
        for servo in self.servos.values():
            servo.advance(now)
        instr, params, target = packet.code, packet.params, packet.id
        if instr == Instruction.SYNC_READ:
            return self._sync_read(target, params)
        if instr == Instruction.SYNC_WRITE:
            self._sync_write(target, params)
            return b""
        if instr == Instruction.ACTION:
            for servo in self._addressed(target):
                if servo._pending is not None:
                    servo.write(*servo._pending)
                    servo._pending = None
            return b""
        out = bytearray()
        broadcast = target == protocol.BROADCAST_ID
        for servo in self._addressed(target):
            error, data = self._execute(servo, instr, params)
            # Broadcasts are answered only by PING; Response_Status_Level 0 answers only
            # READ and PING.
            if broadcast and instr != Instruction.PING:
                continue
            level = servo.get("Response_Status_Level")
            if level == 0 and instr not in (Instruction.READ, Instruction.PING) and not error:
                continue
            out += self._reply(servo, error, data)
        return bytes(out)

    def _addressed(self, target: int) -> list[Servo]:
        present = [s for s in self.servos.values() if s.id not in self.faults.missing_ids]
        if target == protocol.BROADCAST_ID:
            return sorted(present, key=lambda s: s.id)
        return [s for s in present if s.id == target]

    def _execute(self, servo: Servo, instr: int, params: bytes) -> tuple[int, bytes]:
        refused = ErrorBit.INSTRUCTION, b""
        if instr == Instruction.PING:
            return 0, b""
        if instr == Instruction.READ:
            if len(params) != 2 or params[1] > protocol.MAX_PARAMS:
                return refused  # no length to honour, or more than a reply can carry
            ok, data = servo.read(params[0], params[1])
            return (0 if ok else ErrorBit.INSTRUCTION), data
        if instr in (Instruction.WRITE, Instruction.REG_WRITE):
            if len(params) < 2:
                return refused
            address, data = params[0], bytes(params[1:])
            if instr == Instruction.REG_WRITE:
                ok = address + len(data) <= TABLE_END and all(
                    _WRITABLE[address : address + len(data)]
                )
                if ok:
                    servo._pending = (address, data)
                return (0, b"") if ok else refused
            return (0, b"") if servo.write(address, data) else refused
        if instr == Instruction.RESET:
            servo.reset()
            return 0, b""
        return refused

    def _sync_read(self, target: int, params: bytes) -> bytes:
        if target != protocol.BROADCAST_ID or len(params) < 3:
            return b""
        address, length = params[0], params[1]
        if length > protocol.MAX_PARAMS:
            return b""  # no servo can answer it: every one ignores it
        out = bytearray()
        for motor_id in params[2:]:
            if motor_id > protocol.MAX_ID:
                continue  # only real ids are listed; a broadcast id answers nothing
            for servo in self._addressed(motor_id):
                ok, data = servo.read(address, length)
                out += self._reply(servo, 0 if ok else ErrorBit.INSTRUCTION, data)
        return bytes(out)

    def _sync_write(self, target: int, params: bytes) -> None:
        if target != protocol.BROADCAST_ID or len(params) < 2:
            return
        address, length = params[0], params[1]
        body = params[2:]
        if length == 0 or len(body) % (length + 1):
            return  # malformed: every servo ignores it
        for k in range(0, len(body), length + 1):
            if body[k] > protocol.MAX_ID:
                continue
            for servo in self._addressed(body[k]):
                servo.write(address, bytes(body[k + 1 : k + 1 + length]))

    def _reply(self, servo: Servo, error: int, data: bytes) -> bytes:
        """One status packet, after fault injection."""
        error |= servo.error
        if error & ErrorBit.INSTRUCTION:
            self.stats.refused += 1
        frame = bytearray(protocol.status(servo.id, error, data))
        if self._roll("drop"):
            self.stats.dropped += 1
            return b""
        if self._roll("garble"):
            self.stats.garbled += 1
            i = self._rng.randrange(2, len(frame))
            frame[i] ^= 1 << self._rng.randrange(8)
        if self._roll("noise"):
            self.stats.noised += 1
            junk = bytes(self._rng.randrange(256) for _ in range(self._rng.randint(1, 4)))
            frame[:0] = junk
        self.stats.replies += 1
        return bytes(frame)

    def _roll(self, kind: str) -> bool:
        f = self.faults
        count = getattr(f, f"{kind}_next")
        if count > 0:
            setattr(f, f"{kind}_next", count - 1)
            return True
        rate = getattr(f, f"{kind}_rate")
        return rate > 0 and self._rng.random() < rate

    # -- for tests and tools -----------------------------------------------------------------

    def servo(self, motor_id: int) -> Servo:
        with self._lock:
            servo = self.servos[motor_id]
            servo.advance()
            return servo


__all__ = [
    "DEFAULT_SO_CALIBRATION",
    "EmulatorStats",
    "Faults",
    "FeetechEmulator",
    "Servo",
]
