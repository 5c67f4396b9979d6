"""A shared-memory config for tests: small slots, and a peer declared gone within half a second."""

from __future__ import annotations

from asyncinf.transports.shm import ShmConfig
from asyncinf.transports.shm.config import KiB, MiB


def fast_config(**kw) -> ShmConfig:
    base = dict(
        obs_slot_bytes=1 * MiB,
        chunk_slot_bytes=64 * KiB,
        control_slot_bytes=8 * KiB,
        heartbeat_interval_s=0.05,
        peer_timeout_s=0.5,
    )
    return ShmConfig(**{**base, **kw})
