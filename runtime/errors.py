"""The error hierarchy. Each subclasses the builtin a caller would naturally catch."""

from __future__ import annotations


class AsyncinfError(Exception):
    """Base of every error asyncinf raises on purpose."""


class ConfigError(AsyncinfError, ValueError):
    """A configuration value is invalid; the message names the field, the value and the fix."""


class FlagError(ConfigError):
    """A bad command line (an unknown flag, two flags that disagree): exit code 2, not 78."""


class CodecError(AsyncinfError, ValueError):
    """A frame could not be encoded or decoded (malformed, truncated, bad dtype or shape)."""


class SchemaVersionError(CodecError):
    """The peer speaks another schema version."""

    def __init__(self, theirs: int, ours: int) -> None:
        super().__init__(f"peer speaks schema version {theirs}, this build speaks {ours}")
        self.theirs = theirs
        self.ours = ours


class PayloadTooLarge(AsyncinfError, ValueError):
    """A message does not fit the space reserved for it."""


class TransportError(AsyncinfError, ConnectionError):
    """The transport cannot carry messages any more."""


class PeerGone(TransportError):
    """The process at the other end exited or stopped publishing heartbeats."""


class PeerClosed(TransportError):
    """The other end said goodbye in an orderly way."""


class ServerDraining(PeerClosed):
    """The server is draining (stopping) and asked this client to reconnect elsewhere: not a
    failure; a self-healing transport reconnects at once (through a balancer, to a replica)."""


class HandshakeError(TransportError):
    """The peers could not agree at handshake (schema version, features, policy)."""


class SessionBusy(HandshakeError):
    """The server is serving another client; the message names that session."""


class ServerNotServing(SessionBusy):
    """The server is loading its policy or draining (stopping): ask again, or another replica.
    A kind of SessionBusy, so every place that retries a busy server retries this too."""


class Unauthenticated(HandshakeError):
    """The server refused this client's credentials (missing or wrong token)."""


class SegmentCorrupt(TransportError):
    """Shared memory was overwritten by something other than its two ends (a checksum, an
    index or a pid word out of range): the session is over; the next one needs a new segment."""


class LayoutError(TransportError):
    """A shared-memory segment's header does not match what this build expects."""


class RobotError(AsyncinfError, RuntimeError):
    """The robot (driver, bus, camera) failed."""


class SerialPortError(RobotError):
    """A serial port cannot be opened: missing, no permission, or held by another process."""


class MotorBusError(RobotError):
    """A servo on a serial bus did not answer properly; names the motor, its id and the port."""

    def __init__(self, message: str, motor: str | None = None, motor_id: int | None = None) -> None:
        super().__init__(message)
        self.motor = motor
        self.motor_id = motor_id


class MotorTimeout(MotorBusError):
    """A servo did not reply in time, after every retry."""


class MotorReplyCorrupt(MotorBusError):
    """A servo's reply was malformed (checksum, length, id), after every retry."""


class MotorFault(MotorBusError):
    """A servo replied with error bits set (voltage, overheat, overload, refused instruction)."""


class MotorMissing(MotorBusError):
    """Servos the robot needs did not answer a ping."""


class PolicyError(AsyncinfError, RuntimeError):
    """The policy failed to load or to predict."""


class PolicyOptionError(ConfigError, PolicyError):
    """A `--policy.*` value is wrong (an unknown type or option, a value out of range): a
    configuration error (exit 78), not a policy that failed to load (exit 3)."""


class ActionRejected(AsyncinfError, ValueError):
    """An action chunk is unusable (NaN/inf, wrong shape) and was not executed."""
