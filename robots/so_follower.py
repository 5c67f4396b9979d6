"""SO-100 / SO-101 follower arms: six Feetech STS3215 servos on one serial bus, plus cameras.

Compatible with LeRobot 0.4 to 0.6's `so100_follower` / `so101_follower`: the same motor names
and ids, the same calibration file per `--robot.id` (LeRobot's `so_follower/` folder, then the
`so100_follower/` / `so101_follower/` folders of LeRobot before 0.4, or
`--robot.calibration_dir`), the same defaults (no id; degrees for the body joints, or −100..100
with `--robot.use_degrees=false` as LeRobot before 0.4 had it; 0..100 for the gripper) and the
same servo settings on connect (P=16, I=0, D=32, acceleration 254, return delay 0, gripper
torque and current limited to half). One sync read per `read_state()`, one sync write per
`send_action()`.

Where it differs from LeRobot, on purpose:

- Never interactive. A calibration file that disagrees with the motors is written to them
  (LeRobot's default answer to its prompt). Without a file, the calibration that
  `lerobot-calibrate` stored in the motors' EPROM is used; an arm still at factory limits is
  an error that says how to calibrate.
- Before torque is enabled every goal is set to the present position, so the arm holds
  where it stands instead of jumping to a goal left from an earlier session.
- `disconnect()` holds position under torque unless `disable_torque_on_exit` (LeRobot's
  `disable_torque_on_disconnect`, accepted too) asks to release the arm.
- `max_relative_target` clamps against the position of the last `read_state()` (the control
  loop reads every tick) instead of an extra bus read per action.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from asyncinf.robots.camera import Camera
from asyncinf.robots.feetech.bus import FeetechBus
from asyncinf.robots.feetech.calibration import (
    MotorCalibration,
    NormMode,
    calibration_candidates,
    calibration_path,
    load_calibration,
    normalize,
    unnormalize,
)
from asyncinf.robots.feetech.registers import (
    BAUD_RATE_CODES,
    STS3215_MODEL_NUMBER,
    STS3215_RESOLUTION,
)
from asyncinf.robots.robot import Robot, RobotConfig
from asyncinf.runtime.errors import (
    ActionRejected,
    ConfigError,
    MotorBusError,
    MotorFault,
    MotorMissing,
    RobotError,
)

log = logging.getLogger(__name__)

# LeRobot's motor names and bus ids for the SO-10x follower, base to gripper.
MOTORS = {
    "shoulder_pan": 1,
    "shoulder_lift": 2,
    "elbow_flex": 3,
    "wrist_flex": 4,
    "wrist_roll": 5,
    "gripper": 6,
}
FULL_TURN_MOTOR = "wrist_roll"  # LeRobot calibrates it to the whole 0..4095 range

# LeRobot's `SOFollower.configure()` values, written with torque off on every connect.
_SETTINGS = {
    "Return_Delay_Time": 0,  # reply after 2 µs instead of the factory 500 µs
    "Maximum_Acceleration": 254,
    "Acceleration": 254,
    "Operating_Mode": 0,  # position control
    "P_Coefficient": 16,  # factory 32 shakes under load
    "I_Coefficient": 0,
    "D_Coefficient": 32,
}
_GRIPPER_SETTINGS = {
    "Max_Torque_Limit": 500,  # 50 % of stall torque, so a blocked gripper does not burn out
    "Protection_Current": 250,  # 50 % of the maximum current
    "Overload_Torque": 25,  # 25 % torque once overloaded
}
_ID_RE = re.compile(r"^[\w.\-]+$")


@dataclass
class SOFollowerConfig(RobotConfig):
    """`--robot.*` options of an SO-100/SO-101 follower (LeRobot's names where it has them)."""

    # LeRobot's default: None, which names the calibration file `None.json` as LeRobot does.
    id: str | None = None
    port: str = ""
    # LeRobot ≥ 0.4's default; policies trained on data recorded with it expect degrees.
    use_degrees: bool = True
    calibration_dir: str | None = None
    baudrate: int = 1_000_000
    bus_timeout_ms: float = 50.0  # per attempt, for one transaction's replies
    bus_retries: int = 2  # more attempts after a missing or garbled reply
    # LeRobot's name for disable_torque_on_exit; when given it wins.
    disable_torque_on_disconnect: bool | None = None
    cameras: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.port:
            raise ConfigError(
                "--robot.port is required: the arm's serial port, e.g. --robot.port=/dev/ttyACM0 "
                "(`asyncinf robot find-port` finds it; `asyncinf robot emulate` makes an "
                "emulated one)"
            )
        if self.id is not None and not _ID_RE.match(str(self.id)):
            raise ConfigError(
                f"--robot.id={self.id!r}: use letters, digits, '_', '-' or '.' "
                "(it names the calibration file)"
            )
        if self.baudrate not in BAUD_RATE_CODES:
            raise ConfigError(
                f"--robot.baudrate={self.baudrate}: not a Feetech baud rate; one of "
                f"{sorted(BAUD_RATE_CODES)} (SO arms ship at 1000000)"
            )
        if not 0 < self.bus_timeout_ms <= 1000:
            raise ConfigError(
                f"--robot.bus_timeout_ms={self.bus_timeout_ms}: must be in (0, 1000]; "
                "50 suits USB adapters, raise it for FTDI adapters you cannot tune"
            )
        if not 0 <= self.bus_retries <= 10:
            raise ConfigError(f"--robot.bus_retries={self.bus_retries}: must be in 0..10")
        if self.disable_torque_on_disconnect is not None:
            self.disable_torque_on_exit = self.disable_torque_on_disconnect


@dataclass
class MotorProbe:
    """What `probe()` learned about one motor; `error` is set when it did not answer."""

    name: str
    id: int
    model: int | None = None
    position: int | None = None  # raw steps
    value: float | None = None  # normalised, as read_state() would report it
    torque: bool | None = None
    voltage_v: float | None = None
    temperature_c: int | None = None
    status: int | None = None
    error: str | None = None


@dataclass
class CameraProbe:
    name: str
    shape: tuple[int, int, int]
    fps: float | None = None
    frames: int = 0
    frame_age_ms: float | None = None
    error: str | None = None


@dataclass
class ProbeReport:
    port: str
    calibration: str  # where the calibration comes from
    motors: list[MotorProbe]
    cameras: list[CameraProbe]

    @property
    def ok(self) -> bool:
        return all(m.error is None for m in self.motors) and all(
            c.error is None for c in self.cameras
        )


class SOFollower(Robot):
    """An SO-10x follower arm. Built from its config without touching hardware."""

    config_class = SOFollowerConfig
    robot_type = "so101_follower"

    def __init__(self, config: SOFollowerConfig) -> None:
        super().__init__(config)
        self.config: SOFollowerConfig = config
        self.bus = FeetechBus(
            config.port,
            MOTORS,
            baudrate=config.baudrate,
            timeout_ms=config.bus_timeout_ms,
            retries=config.bus_retries,
        )
        body = NormMode.DEGREES if config.use_degrees else NormMode.RANGE_M100_100
        self.norm_modes = {m: NormMode.RANGE_0_100 if m == "gripper" else body for m in MOTORS}
        self.calibration_fpath = calibration_path(
            self.robot_type, config.id, config.calibration_dir
        )
        self.calibration: dict[str, MotorCalibration] | None = None
        if self.calibration_fpath.is_file():
            self.calibration = self._checked(load_calibration(self.calibration_fpath))
            log.info("%s: calibration read from %s", self, self.calibration_fpath)
        self._connected = False
        self._last_state: np.ndarray | None = None

    # -- Robot interface ---------------------------------------------------------------------

    @property
    def joint_names(self) -> list[str]:
        return [f"{m}.pos" for m in MOTORS]

    @property
    def is_connected(self) -> bool:
        return self._connected

    def connect(self) -> None:
        """Open the bus, check every motor, apply the calibration, connect the cameras, then
        configure the servos and enable torque holding the present position."""
        if self._connected:
            raise RobotError(f"{self}: already connected")
        try:
            self.bus.open()
            self._check_motors()
            self._apply_calibration()
            self.connect_cameras()
            self._configure()
        except BaseException:
            self.disconnect_cameras()  # safe on those never connected
            if self.bus.is_open and self.config.disable_torque_on_exit:
                self._quietly(lambda: self._set_torque(False))  # torque may be partly on
            self.bus.close()
            raise
        self._connected = True
        log.info("%s connected on %s", self, self.config.port)

    def read_state(self) -> np.ndarray:
        self._require_connected()
        raw = self.bus.sync_read("Present_Position")
        cal, modes = self.calibration, self.norm_modes
        assert cal is not None
        state = np.array(
            [normalize(raw[m], cal[m], modes[m], STS3215_RESOLUTION) for m in MOTORS],
            dtype=np.float32,
        )
        self._last_state = state
        return state

    def send_action(self, target: np.ndarray) -> np.ndarray:
        """One sync write of the goals; returns the target after the `max_relative_target`
        clamp (float32). The control loop has clamped already, against the same reading, so
        there the clamp changes nothing; it guards callers that drive the arm directly."""
        self._require_connected()
        target = np.asarray(target, dtype=np.float64)
        if target.shape != (len(MOTORS),):
            raise ActionRejected(f"{self}: action shape {target.shape}, expected ({len(MOTORS)},)")
        if not np.isfinite(target).all():
            raise ActionRejected(f"{self}: non-finite action {target.tolist()}")
        limit = self.config.max_relative_target
        if limit is not None and self._last_state is not None:
            present = self._last_state.astype(np.float64)
            target = np.clip(target, present - limit, present + limit)
        cal, modes = self.calibration, self.norm_modes
        assert cal is not None
        goals = {}
        for m, value in zip(MOTORS, target.tolist(), strict=True):
            raw = unnormalize(value, cal[m], modes[m], STS3215_RESOLUTION)
            # The servo clamps to its position limits (= the calibrated range) anyway.
            goals[m] = min(max(raw, cal[m].range_min), cal[m].range_max)
        self.bus.sync_write("Goal_Position", goals)
        return target.astype(np.float32)

    def disconnect(self) -> None:
        """Hold position under torque, or release the arm (`disable_torque_on_exit`), then
        close the bus and the cameras. Safe to call twice. Raises RobotError only when the
        release was asked for and failed (the arm is then still stiff)."""
        failure: RobotError | None = None
        if self.bus.is_open:
            try:
                if self.config.disable_torque_on_exit:
                    self._set_torque(False)
                    log.info("%s: torque released", self)
                elif self._connected:
                    self.bus.sync_write("Goal_Position", self.bus.sync_read("Present_Position"))
                    log.info("%s: holding position under torque", self)
            except RobotError as exc:
                if self.config.disable_torque_on_exit:
                    failure = RobotError(f"{self}: could not release the arm's torque: {exc}")
                else:
                    log.warning(
                        "%s: could not re-read the hold position (%s); the arm holds its last goal",
                        self,
                        exc,
                    )
            finally:
                self.bus.close()
        self.disconnect_cameras()
        self._connected = False
        if failure is not None:
            raise failure

    # -- commissioning ----------------------------------------------------------------------

    def probe(self, camera_frames: int = 30, camera_timeout_s: float = 5.0) -> ProbeReport:
        """Ping every motor and read its state without enabling torque, and time
        `camera_frames` frames of each camera. Opens and closes everything; never raises for a
        motor or camera that does not answer (the report says so), only for the port."""
        if self._connected:
            raise RobotError(f"{self}: probe() needs the robot disconnected")
        motors = [MotorProbe(name, motor_id) for name, motor_id in MOTORS.items()]
        source = str(self.calibration_fpath) if self.calibration else "the motors (no file)"
        self.bus.open()
        try:
            for row in motors:
                self._probe_motor(row)
            if self.calibration is None and all(m.error is None for m in motors):
                in_motors = self._read_calibration()
                factory = factory_limit_motors(in_motors)
                if factory:
                    # `up` refuses such an arm (no file, factory limits): say so before it does.
                    source = (
                        f"none: no file at {self._looked_in()} and servos {factory} still hold "
                        "factory limits (uncalibrated); calibrate with lerobot-calibrate "
                        "before `asyncinf up`"
                    )
                    log.warning("%s: %s", self, source)
                self.calibration = self._checked(in_motors)
            for row in motors:
                if row.position is not None and self.calibration is not None:
                    cal = self.calibration[row.name]
                    row.value = normalize(row.position, cal, self.norm_modes[row.name])
        finally:
            self.bus.close()
        cameras = [
            self._probe_camera(n, c, camera_frames, camera_timeout_s)
            for n, c in self.cameras.items()
        ]
        return ProbeReport(self.config.port, source, motors, cameras)

    def _probe_motor(self, row: MotorProbe) -> None:
        try:
            row.model = self.bus.ping(row.name)
            row.position = self.bus.read("Present_Position", row.name)
            row.torque = bool(self.bus.read("Torque_Enable", row.name))
            row.voltage_v = self.bus.read("Present_Voltage", row.name) / 10
            row.temperature_c = self.bus.read("Present_Temperature", row.name)
            row.status = self.bus.read("Status", row.name)
        except MotorBusError as exc:
            row.error = str(exc)
            return
        if row.model != STS3215_MODEL_NUMBER:
            row.error = f"model number {row.model}, expected {STS3215_MODEL_NUMBER} (STS3215)"

    @staticmethod
    def _probe_camera(name: str, cam: Camera, frames: int, timeout_s: float) -> CameraProbe:
        row = CameraProbe(name, cam.shape)
        try:
            cam.connect()
        except RobotError as exc:
            row.error = str(exc)
            return row
        try:
            _, last_ns = cam.read()
            first_ns = last_ns
            deadline = time.monotonic() + timeout_s
            while row.frames < frames and time.monotonic() < deadline:
                _, last_ns = cam.wait_for_frame(last_ns, timeout_s)
                row.frames += 1
            if row.frames:
                row.fps = row.frames / ((last_ns - first_ns) / 1e9)
            row.frame_age_ms = (time.monotonic_ns() - last_ns) / 1e6
        except RobotError as exc:
            row.error = str(exc)
        finally:
            SOFollower._quietly(cam.disconnect)
        return row

    # -- internals ---------------------------------------------------------------------------

    def __str__(self) -> str:
        return f"{self.robot_type} {self.config.id!r}"

    def _looked_in(self) -> str:
        candidates = calibration_candidates(
            self.robot_type, self.config.id, self.config.calibration_dir
        )
        return " or ".join(str(p) for p in candidates)

    def _require_connected(self) -> None:
        if not self._connected:
            raise RobotError(f"{self} is not connected; call connect() first")

    @staticmethod
    def _quietly(fn: Any) -> None:
        try:
            fn()
        except RobotError as exc:
            log.warning("%s", exc)

    def _checked(self, calibration: dict[str, MotorCalibration]) -> dict[str, MotorCalibration]:
        missing = [m for m in MOTORS if m not in calibration]
        if missing:
            raise ConfigError(
                f"calibration {self.calibration_fpath}: no entry for {missing}; it is not an "
                f"SO-10x follower's file, or recalibrate with lerobot-calibrate"
            )
        for m, motor_id in MOTORS.items():
            if calibration[m].id != motor_id:
                log.warning(
                    "calibration of %s names id %d; the bus uses id %d",
                    m,
                    calibration[m].id,
                    motor_id,
                )
        return {m: calibration[m] for m in MOTORS}

    def _check_motors(self) -> None:
        missing, wrong, faulted = [], [], []
        for name, motor_id in MOTORS.items():
            try:
                model = self.bus.ping(name)
            except MotorFault as exc:  # it answered, with error bits set
                faulted.append(exc)
                continue
            except MotorBusError as exc:
                missing.append((name, motor_id, exc))
                continue
            if model != STS3215_MODEL_NUMBER:
                wrong.append(f"{name} (id {motor_id}) is model {model}")
        if len(missing) == len(MOTORS):
            raise MotorMissing(
                f"no motor answered on {self.config.port}: is the arm powered (its own 5/12 V "
                "supply, not just USB), and is this the follower's port? "
                f"({missing[0][2]})",
                missing[0][0],
                missing[0][1],
            )
        if missing:
            names = ", ".join(f"{n} (id {i})" for n, i, _ in missing)
            raise MotorMissing(
                f"{len(missing)} of {len(MOTORS)} motors did not answer on {self.config.port}: "
                f"{names}. Check the daisy-chain cable to them and that their ids were set "
                f"(lerobot-setup-motors). First error: {missing[0][2]}",
                missing[0][0],
                missing[0][1],
            )
        if faulted:
            raise MotorFault(
                "; ".join(str(e) for e in faulted) + ". A voltage error usually means the wrong "
                "power supply (5-7.4 V servos on 12 V, or the reverse); overheat and overload "
                "clear once the servo cools and its load is removed",
                faulted[0].motor,
                faulted[0].motor_id,
            )
        if wrong:
            raise RobotError(
                f"{self}: expected STS3215 servos (model {STS3215_MODEL_NUMBER}); "
                + "; ".join(wrong)
            )

    def _read_calibration(self) -> dict[str, MotorCalibration]:
        offsets = self.bus.sync_read("Homing_Offset")
        mins = self.bus.sync_read("Min_Position_Limit")
        maxes = self.bus.sync_read("Max_Position_Limit")
        return {m: MotorCalibration(i, 0, offsets[m], mins[m], maxes[m]) for m, i in MOTORS.items()}

    def _apply_calibration(self) -> None:
        in_motors = self._read_calibration()
        if self.calibration is None:
            if len(factory_limit_motors(in_motors)) == len(MOTORS) - 1:
                id_flag = "" if self.config.id is None else f" --robot.id={self.config.id}"
                raise RobotError(
                    f"{self} is not calibrated: no file at {self._looked_in()} and the "
                    "motors hold factory limits. Calibrate once with `lerobot-calibrate "
                    f"--robot.type={self.robot_type} --robot.port={self.config.port}{id_flag}` "
                    "(asyncinf reads LeRobot's file), or pass "
                    "--robot.calibration_dir=<folder holding <id>.json>"
                )
            log.warning(
                "%s: no calibration file at %s; using the calibration stored in the motors",
                self,
                self._looked_in(),
            )
            self.calibration = self._checked(in_motors)
            return
        stale = [
            m for m, cal in self.calibration.items()
            if (cal.homing_offset, cal.range_min, cal.range_max)
            != (in_motors[m].homing_offset, in_motors[m].range_min, in_motors[m].range_max)
        ]  # fmt: skip
        if not stale:
            return
        log.warning(
            "%s: motors %s disagree with %s; writing the file's calibration to them",
            self,
            stale,
            self.calibration_fpath,
        )
        self._set_torque(False)
        for m in stale:
            cal = self.calibration[m]
            self.bus.write("Homing_Offset", m, cal.homing_offset)
            self.bus.write("Min_Position_Limit", m, cal.range_min)
            self.bus.write("Max_Position_Limit", m, cal.range_max)

    def _set_torque(self, on: bool) -> None:
        """LeRobot's enable/disable_torque: Torque_Enable then Lock, per motor, confirmed."""
        for m in MOTORS:
            self.bus.write("Torque_Enable", m, int(on))
            self.bus.write("Lock", m, int(on))  # EPROM writable only while unlocked

    def _configure(self) -> None:
        self._set_torque(False)
        for m in MOTORS:
            settings = {**_SETTINGS, **(_GRIPPER_SETTINGS if m == "gripper" else {})}
            for register, value in settings.items():
                self.bus.write(register, m, value)
        # Hold where the arm stands: the goal register may hold a target from long ago.
        self.bus.sync_write("Goal_Position", self.bus.sync_read("Present_Position"))
        self._set_torque(True)


def factory_limit_motors(calibration: dict[str, MotorCalibration]) -> list[str]:
    """The motors whose calibration is the STS3215's factory one (full range, no offset).
    The wrist roll is left out: LeRobot calibrates it to the full range too."""
    return [
        m for m, c in calibration.items()
        if m != FULL_TURN_MOTOR and (c.range_min, c.range_max, c.homing_offset) == (0, 4095, 0)
    ]  # fmt: skip


class SO100Follower(SOFollower):
    """`--robot.type=so100_follower`; calibration under LeRobot's `so100_follower` folder."""

    robot_type = "so100_follower"


class SO101Follower(SOFollower):
    """`--robot.type=so101_follower`; calibration under LeRobot's `so101_follower` folder."""

    robot_type = "so101_follower"
