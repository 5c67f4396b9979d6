"""The client's end-of-run summary as a declared shape: `RunSummary`, `--summary-json` schema 1.

The client's worker sends it to the supervisor in its Summary event, which writes it out and
prints it. Its parts are made by what counts them, in their JSON form (`ClientStats.summary`,
`HoldTracker.summary`, `LogHistogram.summary`), and read into this shape before the summary
leaves the client (`from_parts`), so a part that drifts from it fails there, by name; the
transport's counters are a record of their own. Every field is required. The fields are the
file's keys, in its order: the document is exactly the map it always was.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from asyncinf.runtime import records
from asyncinf.transports.counters import ClientCounters

SCHEMA = 1


@dataclass(frozen=True)
class Percentiles:
    """`LogHistogram.summary`: in the unit its key names (`_ms`), or robot units."""

    p50: float
    p99: float
    max: float


@dataclass(frozen=True)
class InferenceDelay:
    """`DelayEstimator.summary`: the measured delay and how often the announced one was off."""

    chunks: int  # steady-state chunks, after the warm-up
    measured_ticks: Percentiles
    exact: int
    one_above: int
    too_low: int
    too_high: int


@dataclass(frozen=True)
class HeldTime:
    """`HoldTracker.summary`: how long the robot executed no action, and why."""

    total_s: float
    fraction: float  # of the run's time
    reasons_s: dict[str, float]


@dataclass(frozen=True)
class RunSummary:
    schema: int
    fps: float
    actions_per_chunk: int  # as agreed at handshake (0: never)
    ticks: int
    actions_executed: int
    idle_frames: int
    idle_frames_after_first_chunk: int
    chunks_received: int
    errors: int
    rejected_chunks: int
    observations_sent: int
    server_lost: int
    sessions_corrupted: int
    overruns: int
    period_error_ms: Percentiles
    roundtrip_ms: Percentiles
    server_queue_wait_ms: Percentiles
    server_compute_ms: Percentiles
    server_preprocess_ms: Percentiles
    server_inference_ms: Percentiles
    server_postprocess_ms: Percentiles
    overhead_ms: Percentiles
    seam_jump: Percentiles
    command_step: Percentiles
    inference_delay: InferenceDelay
    transport: ClientCounters
    held: HeldTime

    def __post_init__(self) -> None:
        if self.schema != SCHEMA:
            raise ValueError(f"schema={self.schema!r}: this asyncinf reads schema {SCHEMA}")

    @classmethod
    def from_parts(
        cls, stats: dict[str, Any], transport: ClientCounters, held: dict[str, Any]
    ) -> RunSummary:
        """From `ClientStats.summary` and `HoldTracker.summary` (their JSON form) and the
        transport's counters; raises ValueError naming a part that is not of this shape."""
        return cls.from_json({**stats, "transport": records.to_json(transport), "held": held})

    def to_json(self) -> dict[str, Any]:
        """The `--summary-json` document."""
        return records.fields_to_json(self)

    @classmethod
    def from_json(cls, data: Any) -> RunSummary:
        """Raises ValueError naming the field that is missing, unknown or of the wrong type."""
        return records.from_json(cls, data)
