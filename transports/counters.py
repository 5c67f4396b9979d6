"""What a client end counts for the run summary (`ClientTransport.stats()`), one record per kind.

The record travels in the client's Summary event to the supervisor and becomes the `transport`
map of `--summary-json` as its fields, the keys that map always had. Read back
(`asyncinf.runtime.records`), a map is the kind whose fields its keys are, so no two kinds may
have the same fields; an empty map is `NoCounters`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NoCounters:
    """An end that counts nothing (the in-process one), or no end attached by the run's end."""


@dataclass(frozen=True)
class ShmClientCounters:
    observations_sent: int
    bytes_per_observation: float  # encoded frames written into the observation slots
    chunks_received: int
    errors_received: int
    corruption_found: int  # overwritten frames this end found itself (shm/integrity.py)


@dataclass(frozen=True)
class GrpcClientCounters:
    transport: str  # "grpc", as the summary has always said
    image_codec: str  # raw | jpeg
    observations_sent: int
    observations_replaced: int  # overwritten by a newer one before it was sent (newest wins)
    observations_dropped: int  # handed over while disconnected
    observations_failed: int  # could not be encoded (reported as an ErrorMessage)
    bytes_sent: int  # serialized observation messages, as sent
    bytes_per_observation: float
    raw_image_bytes_per_observation: float  # the same observations' images as captured
    chunks_received: int
    errors_received: int
    disconnects: int
    reconnects: int
    drains: int  # of disconnects: a draining server's goodbye
    stale_dropped: int  # chunks and errors of an ended stream, not handed out
    last_disconnect_reason: str


ClientCounters = NoCounters | ShmClientCounters | GrpcClientCounters
