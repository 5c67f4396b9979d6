"""The STS3215 control table, and values ↔ register bytes.

Addresses and sizes are Feetech's STS/SMS memory table (the one LeRobot's `feetech/tables.py`
carries). EPROM entries (addresses < 40) persist across power cycles and are writable only
with torque off and `Lock` = 0; SRAM entries (40 and up) reset at power-on.

Byte order is little-endian. Some registers are sign-magnitude, not two's complement: the
sign sits in one bit (bit 11 for `Homing_Offset`, bit 15 for positions and velocities, bit 10
for load) and the magnitude in the bits below it.
"""

from __future__ import annotations

from dataclasses import dataclass

STS3215_MODEL_NUMBER = 777  # what PING and Model_Number return for an STS3215
STS3215_RESOLUTION = 4096  # 12-bit magnetic encoder: one turn = 4096 steps

# Baud_Rate register value per baud rate (STS/SMS series).
BAUD_RATE_CODES = {
    1_000_000: 0,
    500_000: 1,
    250_000: 2,
    128_000: 3,
    115_200: 4,
    57_600: 5,
    38_400: 6,
    19_200: 7,
}


@dataclass(frozen=True)
class Register:
    name: str
    address: int
    size: int  # bytes: 1 or 2
    writable: bool = True
    sign_bit: int | None = None  # sign-magnitude: index of the sign bit

    @property
    def eprom(self) -> bool:
        return self.address < 40

    @property
    def max_magnitude(self) -> int:
        bits = self.sign_bit if self.sign_bit is not None else 8 * self.size
        return (1 << bits) - 1

    def encode(self, value: int) -> bytes:
        """Signed value -> little-endian register bytes, range-checked."""
        value = int(value)
        if self.sign_bit is not None:
            raw = encode_sign_magnitude(value, self.sign_bit)
        elif 0 <= value <= self.max_magnitude:
            raw = value
        else:
            raise ValueError(f"{self.name}={value} out of range 0..{self.max_magnitude}")
        return raw.to_bytes(self.size, "little")

    def decode(self, data: bytes | bytearray | memoryview) -> int:
        raw = int.from_bytes(data, "little")
        return raw if self.sign_bit is None else decode_sign_magnitude(raw, self.sign_bit)


def encode_sign_magnitude(value: int, sign_bit: int) -> int:
    """Sign-magnitude with the sign in bit `sign_bit` (LeRobot's `encode_sign_magnitude`)."""
    max_magnitude = (1 << sign_bit) - 1
    magnitude = abs(value)
    if magnitude > max_magnitude:
        raise ValueError(f"magnitude {magnitude} exceeds {max_magnitude} (sign bit {sign_bit})")
    return ((1 << sign_bit) if value < 0 else 0) | magnitude


def decode_sign_magnitude(raw: int, sign_bit: int) -> int:
    magnitude = raw & ((1 << sign_bit) - 1)
    return -magnitude if (raw >> sign_bit) & 1 else magnitude


def _table(*regs: Register) -> dict[str, Register]:
    return {r.name: r for r in regs}


R = Register
# fmt: off
STS3215 = _table(
    # EPROM (persistent; write with torque off and Lock = 0)
    R("Firmware_Major_Version", 0, 1, writable=False),
    R("Firmware_Minor_Version", 1, 1, writable=False),
    R("Model_Number", 3, 2, writable=False),
    R("ID", 5, 1),
    R("Baud_Rate", 6, 1),
    R("Return_Delay_Time", 7, 1),  # 2 µs per unit; factory 250 (500 µs), LeRobot sets 0
    R("Response_Status_Level", 8, 1),  # 0: reply to READ/PING only; 1: reply to all
    R("Min_Position_Limit", 9, 2),
    R("Max_Position_Limit", 11, 2),
    R("Max_Temperature_Limit", 13, 1),  # °C
    R("Max_Voltage_Limit", 14, 1),  # 0.1 V
    R("Min_Voltage_Limit", 15, 1),  # 0.1 V
    R("Max_Torque_Limit", 16, 2),  # 0.1 % of stall torque
    R("Phase", 18, 1),
    R("Unloading_Condition", 19, 1),
    R("LED_Alarm_Condition", 20, 1),
    R("P_Coefficient", 21, 1),
    R("D_Coefficient", 22, 1),
    R("I_Coefficient", 23, 1),
    R("Minimum_Startup_Force", 24, 2),
    R("CW_Dead_Zone", 26, 1),
    R("CCW_Dead_Zone", 27, 1),
    R("Protection_Current", 28, 2),  # 6.5 mA per unit
    R("Angular_Resolution", 30, 1),
    R("Homing_Offset", 31, 2, sign_bit=11),  # Present_Position = actual - Homing_Offset
    R("Operating_Mode", 33, 1),  # 0 position, 1 velocity, 2 PWM, 3 step
    R("Protective_Torque", 34, 1),
    R("Protection_Time", 35, 1),
    R("Overload_Torque", 36, 1),
    R("Velocity_Closed_Loop_P", 37, 1),
    R("Over_Current_Protection_Time", 38, 1),
    R("Velocity_Closed_Loop_I", 39, 1),
    # SRAM (reset at power-on)
    R("Torque_Enable", 40, 1),  # 0 limp, 1 holds Goal_Position
    R("Acceleration", 41, 1),  # 100 step/s² per unit; 0 = the servo's maximum
    R("Goal_Position", 42, 2, sign_bit=15),
    R("Goal_Time", 44, 2),
    R("Goal_Velocity", 46, 2, sign_bit=15),  # step/s; 0 = the servo's maximum
    R("Torque_Limit", 48, 2),
    R("Lock", 55, 1),  # 1 locks the EPROM area against writes
    R("Present_Position", 56, 2, writable=False, sign_bit=15),
    R("Present_Velocity", 58, 2, writable=False, sign_bit=15),
    R("Present_Load", 60, 2, writable=False, sign_bit=10),
    R("Present_Voltage", 62, 1, writable=False),  # 0.1 V
    R("Present_Temperature", 63, 1, writable=False),  # °C
    R("Status", 65, 1, writable=False),
    R("Moving", 66, 1, writable=False),
    R("Present_Current", 69, 2, writable=False),  # 6.5 mA per unit
    # Factory area
    R("Moving_Velocity_Threshold", 80, 1),
    R("DTs", 81, 1),
    R("Velocity_Unit_Factor", 82, 1),
    R("Hts", 83, 1),
    R("Maximum_Velocity_Limit", 84, 1),
    R("Maximum_Acceleration", 85, 1),
    R("Acceleration_Multiplier", 86, 1),
)
# fmt: on
del R

TABLE_END = 87  # first address past the table


def register(name: str) -> Register:
    try:
        return STS3215[name]
    except KeyError:
        raise KeyError(f"no register {name!r} in the STS3215 table") from None
