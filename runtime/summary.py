"""The client's end-of-run summary as a declared shape: `RunSummary`, `--summary-json` schema 1.

`ClientStats.summary` makes it; the client's worker sends it to the supervisor in its Summary
event, which writes it out and prints it. Its parts are declared by what counts them
(`Percentiles` by `LogHistogram`, `InferenceDelay` by `DelayEstimator`, `HeldTime` by
`HoldTracker`, the transport's counters by the transport). Every field is required. The
fields are the file's keys, in its order: the document is exactly the map it always was.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from asyncinf.runtime import records
from asyncinf.runtime.holds import HeldTime
from asyncinf.runtime.rtc import InferenceDelay
from asyncinf.runtime.stats import Percentiles
from asyncinf.transports.counters import ClientCounters

__all__ = ["SCHEMA", "HeldTime", "InferenceDelay", "Percentiles", "RunSummary"]

SCHEMA = 1


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

    def to_json(self) -> dict[str, Any]:
        """The `--summary-json` document."""
        return records.fields_to_json(self)

    @classmethod
    def from_json(cls, data: Any) -> RunSummary:
        """Raises ValueError naming the field that is missing, unknown or of the wrong type."""
        return records.from_json(cls, data)
