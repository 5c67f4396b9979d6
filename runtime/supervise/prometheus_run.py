"""`up --prometheus-port`: the run as its supervisor sees it, in the Prometheus text format.

What a robot cell's dashboard and alerts need without another process: the run's state, the
server's restarts and chunks (`--local`), and each robot's heartbeat (its client's counters,
queue, last round trip and holds), every series of a robot labelled `robot` (its `--robots`
name, else its `--robot.type`).

The supervisor's loop (main thread) hands us each change (`update`), from which we keep one
immutable `RunSample`; the HTTP thread turns the latest into metric families when scraped. No
lock is needed: replacing the attribute is atomic, and a scrape sees one whole sample.
Counters are the client's own, from its start; the server's chunks start again at 0 after a
restart (Prometheus' `rate()` takes such resets in its stride).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from asyncinf.runtime.supervise import protocol
from asyncinf.runtime.supervise.prometheus import Endpoint
from asyncinf.runtime.supervise.status_file import State

if TYPE_CHECKING:
    from collections.abc import Iterator

    from asyncinf.runtime.supervise.supervisor import Supervisor

# Per robot, from its heartbeat (protocol.ClientBeat): field -> (metric, help, is a counter).
# Counters are exposed with the `_total` suffix Prometheus expects.
BEAT_SERIES = {
    "ticks": ("asyncinf_robot_ticks", "Control ticks", True),
    "actions": ("asyncinf_robot_actions", "Actions sent to the robot", True),
    "idle": ("asyncinf_robot_idle_frames", "Ticks the robot held for want of an action", True),
    "chunks": ("asyncinf_robot_chunks", "Action chunks received", True),
    "errors": ("asyncinf_robot_errors", "Errors the client received or hit", True),
    "held_s": ("asyncinf_robot_held_seconds", "Seconds the robot held, all holds", True),
    "queue": ("asyncinf_robot_queue_actions", "Actions queued for the robot", False),
    "attached": ("asyncinf_robot_attached", "1 while the client has a server session", False),
    "hold_s": ("asyncinf_robot_hold_seconds", "The hold in progress, seconds (0: moving)", False),
}


@dataclasses.dataclass(frozen=True)
class RobotSample:
    name: str
    state: State
    beat: protocol.ClientBeat | None  # none yet: it has not sent its first heartbeat


@dataclasses.dataclass(frozen=True)
class RunSample:
    state: State
    restarts: int
    server: State | None  # None: --remote, that server is another host's business
    server_chunks: int | None
    robots: tuple[RobotSample, ...]


def sample(sup: Supervisor) -> RunSample:
    """The supervisor's view now, in values that no longer change."""
    server = sup.server
    beat = server.beat if server is not None else None
    default = sup.plan.client.robot.type
    return RunSample(
        state=sup.state,
        restarts=sup.restarts,
        server=None if sup.plan.server is None else (server.state if server else State.RESTARTING),
        server_chunks=beat.chunks if isinstance(beat, protocol.ServerBeat) else None,
        robots=tuple(
            RobotSample(
                c.name or default,
                State.STOPPED if c.lost else c.state,
                c.beat if isinstance(c.beat, protocol.ClientBeat) else None,
            )
            for c in sup.clients
        ),
    )


class RunMetrics(Endpoint):
    """The run's metrics; `update(sup)` on each change, `serve(host, port)` exposes them."""

    def __init__(self) -> None:
        super().__init__()  # raises ConfigError if prometheus_client is missing
        from prometheus_client import core  # noqa: PLC0415

        self._core = core
        self._sample: RunSample | None = None
        self.registry.register(self)

    def update(self, sup: Supervisor) -> None:
        self._sample = sample(sup)

    def collect(self) -> Iterator[Any]:
        """prometheus_client's collector protocol: the families of the latest sample."""
        run, core = self._sample, self._core
        if run is None:
            return
        yield core.StateSetMetricFamily(
            "asyncinf_run_state", "The run's state", {s.value: s is run.state for s in State}
        )
        if run.server is not None:
            yield core.CounterMetricFamily(
                "asyncinf_server_restarts", "Restarts of the local policy server after it was "
                "ready", value=run.restarts,
            )  # fmt: skip
            yield core.GaugeMetricFamily(
                "asyncinf_server_up", "1 while the local policy server is running",
                value=run.server is State.RUNNING,
            )  # fmt: skip
        if run.server_chunks is not None:
            yield core.CounterMetricFamily(
                "asyncinf_server_chunks", "Chunks the local policy server sent (since its "
                "last start)", value=run.server_chunks,
            )  # fmt: skip
        yield from self._robots(run.robots)

    def _robots(self, robots: tuple[RobotSample, ...]) -> Iterator[Any]:
        gauge, counter = self._core.GaugeMetricFamily, self._core.CounterMetricFamily
        yield _family(gauge, "asyncinf_robot_up", "1 while the robot's client is running",
                      {(r.name,): r.state is State.RUNNING for r in robots})  # fmt: skip
        beats = {r.name: r.beat for r in robots if r.beat is not None}
        for field, (name, doc, is_counter) in BEAT_SERIES.items():
            values = {(robot,): getattr(beat, field) for robot, beat in beats.items()}
            yield _family(counter if is_counter else gauge, name, doc, values)
        yield _family(gauge, "asyncinf_robot_roundtrip_seconds",
                      "The last chunk's round trip: observation sent to chunk received",
                      {(robot,): beat.roundtrip_ms / 1e3 for robot, beat in beats.items()
                       if beat.roundtrip_ms is not None})  # fmt: skip
        yield _family(gauge, "asyncinf_robot_holding",
                      "1 while the robot holds, labelled with why (runtime/holds.py)",
                      {(robot, beat.hold_reason): 1 for robot, beat in beats.items()
                       if beat.hold_s > 0}, labels=("robot", "reason"))  # fmt: skip


def _family(
    kind: Any, name: str, doc: str, values: dict[tuple[str, ...], float], labels=("robot",)
) -> Any:
    metric = kind(name, doc, labels=list(labels))
    for key, value in values.items():
        metric.add_metric(list(key), value)
    return metric
