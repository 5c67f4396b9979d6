"""Sizes and timings of a shared-memory session, chosen by the supervisor that creates it.

Children attach by name and read everything from the segment's header, so they need no
copy of this config (and cannot disagree with it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from asyncinf.runtime.errors import ConfigError
from asyncinf.transports.base import WhenFull
from asyncinf.transports.shm.integrity import Checksum

MiB = 1 << 20
KiB = 1 << 10

# Limits that keep a typo from asking for terabytes or thousands of slots.
MAX_SLOT_BYTES = 1 << 31
MAX_SLOTS = 1024


def option(name: str) -> str:
    """The command-line option that sets ShmConfig field `name`."""
    return "--shm.obs_slot_mb" if name == "obs_slot_bytes" else f"--shm.{name}"


@dataclass
class ShmConfig:
    """Shared-memory session sizes (`--shm.<field>=…` on the command line).

    `obs_slot_mb` is the command-line spelling of `obs_slot_bytes` in MiB; when given it
    wins. The default observation slot (8 MiB) fits four 640×480 RGB frames plus header.
    """

    obs_slot_bytes: int = 8 * MiB
    obs_slots: int = 3  # being written, newest published, leased by the server
    chunk_slots: int = 8
    chunk_slot_bytes: int = 1 * MiB
    control_slots: int = 8
    control_slot_bytes: int = 64 * KiB
    when_full: WhenFull = WhenFull.BLOCK
    heartbeat_interval_s: float = 0.1
    peer_timeout_s: float = 1.0
    # Before blocking on a doorbell, poll it (sem_getvalue/sem_trywait: still the kernel
    # primitive, never a plain word) this long, yielding the core between polls. A frame
    # that comes within it costs no wake-up, and the core stays warm: on a VM a woken
    # process runs its next ~100 µs several times slower. CPU cost: at most this much per
    # blocking call that ends up blocking (the server's wait for an observation: ~1.5 %
    # of a core at 30 Hz). 0 disables.
    spin_us: int = 500
    # CRC-32 of every frame, checked before anything read from the segment is used:
    # `frames` (chunks and control whole, observations' header and state), `all` (and the
    # images: ~0.13 ms per 3.7 MB on each side, ~1 ms without isal), `none` (only to
    # measure what it costs).
    checksum: Checksum = Checksum.FRAMES
    obs_slot_mb: float | None = None

    def __post_init__(self) -> None:
        if self.obs_slot_mb is not None:
            mb = self.obs_slot_mb
            if isinstance(mb, bool) or not isinstance(mb, int | float) or not mb > 0:
                raise ConfigError(
                    f"--shm.obs_slot_mb={mb!r} must be a positive number of MiB, e.g. 16"
                )
            self.obs_slot_bytes = math.ceil(mb * MiB)
            self.obs_slot_mb = None  # one source of truth from here on
        if isinstance(self.when_full, str):
            try:
                self.when_full = WhenFull(self.when_full)
            except ValueError:
                raise ConfigError(
                    f"--shm.when_full={self.when_full!r} is not a policy; "
                    f"choose one of {[w.value for w in WhenFull]}"
                ) from None
        if isinstance(self.checksum, str) and not isinstance(self.checksum, Checksum):
            try:
                self.checksum = Checksum(self.checksum)
            except ValueError:
                raise ConfigError(
                    f"--shm.checksum={self.checksum!r} is not a choice; "
                    f"choose one of {[c.value for c in Checksum]}"
                ) from None
        if not isinstance(self.checksum, Checksum):
            raise ConfigError(
                f"--shm.checksum={self.checksum!r}: choose one of {[c.value for c in Checksum]}"
            )
        self._check_int("obs_slots", 3, MAX_SLOTS, "3 slots: written, published, leased")
        self._check_int("chunk_slots", 1, MAX_SLOTS, "e.g. 8")
        self._check_int("control_slots", 2, MAX_SLOTS, "e.g. 8")
        self._check_int("obs_slot_bytes", 4 * KiB, MAX_SLOT_BYTES, "e.g. 8 MiB")
        self._check_int("chunk_slot_bytes", 4 * KiB, MAX_SLOT_BYTES, "e.g. 1 MiB")
        self._check_int("control_slot_bytes", 4 * KiB, MAX_SLOT_BYTES, "e.g. 64 KiB")
        self._check_int("spin_us", 0, 100_000, "e.g. 50, or 0 to always block at once")
        if not isinstance(self.when_full, WhenFull):
            raise ConfigError(f"--shm.when_full={self.when_full!r}: choose 'block' or 'error'")
        for name in ("heartbeat_interval_s", "peer_timeout_s"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not 0.001 <= v <= 3600:
                raise ConfigError(f"{option(name)}={v!r} must be seconds in [0.001, 3600]")
        if self.peer_timeout_s < 2 * self.heartbeat_interval_s:
            raise ConfigError(
                f"--shm.peer_timeout_s={self.peer_timeout_s} must be at least twice "
                f"--shm.heartbeat_interval_s={self.heartbeat_interval_s}, or a live peer "
                "would be declared gone between two heartbeats"
            )

    def _check_int(self, name: str, lo: int, hi: int, fix: str) -> None:
        v = getattr(self, name)
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise ConfigError(
                f"ShmConfig.{name}={v!r} ({option(name)}) must be an integer in [{lo}, {hi}]; {fix}"
            )
