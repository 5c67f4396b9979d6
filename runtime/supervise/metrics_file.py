"""`--metrics`: one JSON line per control tick, in at most `--metrics-max-mb` on disk.

At 200 Hz the lines come to about 1.6 GiB a day. When the file reaches half the cap it is
renamed to `PATH.1` (replacing the previous one) and a new `PATH` begins, so the two together
never exceed the cap and always hold the latest ticks: between half the cap and the whole of it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from asyncinf.runtime.records import fields_to_json

if TYPE_CHECKING:
    from asyncinf.runtime.client import Tick

log = logging.getLogger(__name__)

DEFAULT_MAX_MB = 100.0


def rotated(path: str | Path) -> Path:
    """Where the older half of the ticks lies after a rotation."""
    return Path(f"{path}.1")


class MetricsFile:
    def __init__(self, path: str, max_mb: float = DEFAULT_MAX_MB) -> None:
        self.path = path
        self._max_mb = max_mb
        self._limit = int(max_mb * 1e6 / 2)
        rotated(path).unlink(missing_ok=True)  # a previous run's older half is not this run's
        self._file = open(path, "w")  # noqa: PTH123, SIM115  (closed by close())
        self._written = 0
        self.rotations = 0

    def write(self, tick: Tick) -> None:
        line = json.dumps(fields_to_json(tick)) + "\n"
        if self._written + len(line) > self._limit and self._written:
            self._rotate()
        self._file.write(line)
        self._written += len(line)

    def _rotate(self) -> None:
        self._file.close()
        Path(self.path).replace(rotated(self.path))
        self._file = open(self.path, "w")  # noqa: PTH123, SIM115
        self._written = 0
        self.rotations += 1
        log.info(
            "metrics: %s reached %g MB: moved to %s (rotation %d; --metrics-max-mb=%g caps "
            "the two files together)",
            self.path, self._max_mb / 2, rotated(self.path), self.rotations, self._max_mb,
        )  # fmt: skip

    def close(self) -> None:
        self._file.close()
