"""Batched inference across sessions: several sessions' inputs through one model call.

Each session's thread preprocesses its own observation, then calls `Batcher.predict`. The
first input to arrive leads: it waits up to `max_wait_ms` for company — no longer than
until every session using the policy has one waiting, so a robot alone is never kept
waiting; and only while waiting pays: after FRUITLESS_WAITS waits in a row that drew no
company (robots whose observations rarely coincide), only every PROBE_EVERY-th leader
waits, until one draws company again. It takes up to `max_size` inputs and runs them
through `Policy.predict_batch`, outside the lock. Inputs that arrive meanwhile form the next
batch, behind the one running (no wait needed when the server is the bottleneck): the model
runs one batch at a time, which also keeps a policy that is not thread-safe safe.

A batch that fails is run again one input at a time, so one session's bad input fails only
that session's inference. Postprocessing stays with each session's thread.

Per-session state (`Policy.keeps_session_state`: an observation history): each session that
`join`s gets a key its requests carry; right before a request runs, the policy's state is
swapped for that session's (`Policy.session_state` / `restore_session_state`), inside the
serialized run where nothing else touches the model. A new session starts fresh; `leave`
drops its state. Such a policy is never batched across sessions (its model has one history).
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from asyncinf.policies.policy import Policy
from asyncinf.runtime.errors import ConfigError
from asyncinf.runtime.messages import RtcInput
from asyncinf.runtime.stats import LogHistogram

FRUITLESS_WAITS = 3
PROBE_EVERY = 8


@dataclass
class BatchConfig:
    """`--batch.*`: how observations of several sessions are run together."""

    # Observations run through the model in one call; None: the server's --max_sessions.
    max_size: int | None = None
    # How long the first observation may wait for company. 2 ms: under a tenth of a 30 Hz
    # tick, and a robot alone never waits (see `Batcher`).
    max_wait_ms: float = 2.0

    def __post_init__(self) -> None:
        size = self.max_size
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
            raise ConfigError(
                f"--batch.max_size={size!r}: must be an integer >= 1 (1: no batching)"
            )
        if not 0 <= self.max_wait_ms <= 1000:
            raise ConfigError(
                f"--batch.max_wait_ms={self.max_wait_ms}: must be in 0..1000 milliseconds"
            )


@dataclass
class Prediction:
    outputs: Any
    wait_ns: int  # from the call until its batch started: waiting for company or a turn
    inference_ns: int  # the batch's model time
    batch_size: int


@dataclass
class _Request:
    inputs: Any
    rtc: RtcInput | None = None
    session: int | None = None
    arrived_ns: int = field(default_factory=time.monotonic_ns)
    result: Prediction | None = None
    error: BaseException | None = None


class Batcher:
    """One per loaded policy; shared by the sessions' threads."""

    def __init__(self, policy: Policy, max_size: int, max_wait_ms: float) -> None:
        self.policy = policy
        batches = policy.supports_batch and not policy.keeps_session_state
        self.max_size = max_size if batches else 1
        self._max_wait_ns = round(max_wait_ms * 1e6)
        self._cond = threading.Condition()
        self._waiting: list[_Request] = []
        self._running = False
        self._fruitless = 0  # waits in a row that drew no company
        self._leaders = 0
        self.sessions = 0  # sessions using the policy now: how much company to wait for
        self._keys = 0  # the last session key handed out
        self._states: dict[int, Any] = {}  # session -> its state, while another's is loaded
        self._loaded: int | None = None  # the session whose state the policy holds now
        self.batch_sizes: dict[int, int] = {}  # size -> batches of that size
        self.inference_ns = LogHistogram()  # per batch

    def join(self) -> int:
        """A new session: its key, for `predict` and `leave`."""
        with self._cond:
            self.sessions += 1
            self._keys += 1
            return self._keys

    def leave(self, session: int) -> None:
        with self._cond:
            self.sessions -= 1
            self._states.pop(session, None)
            if self._loaded == session:
                self._loaded = None  # what the policy holds is nobody's now: never saved
            self._cond.notify_all()  # a leader waiting for this session's company goes now

    def predict(
        self, inputs: Any, rtc: RtcInput | None = None, session: int | None = None
    ) -> Prediction:
        """`policy.predict_chunk(inputs)`, possibly in a batch with other sessions' inputs
        (with `rtc`: `predict_chunk(inputs, rtc=rtc)`, alone), with `session`'s state loaded
        (None: whatever state the policy holds). Raises what the policy raised for these
        inputs."""
        me = _Request(inputs, rtc, session)
        batch: list[_Request] = []
        with self._cond:
            self._waiting.append(me)
            self._cond.notify_all()
            while me.result is None and me.error is None:
                if not self._running and self._waiting[0] is me:
                    batch = self._gather(me)
                    self._running = True
                    break
                # Woken by every batch's end; the bound only re-checks (a hung model is the
                # server's heartbeat's to find, as with one session).
                self._cond.wait(1.0)
        if batch:
            try:
                self._run(batch)
            finally:
                with self._cond:
                    self._running = False
                    self._cond.notify_all()
        if me.error is not None:
            raise me.error
        assert me.result is not None
        return me.result

    def _gather(self, leader: _Request) -> list[_Request]:
        """With the condition held: wait for company, then take this batch off the queue."""
        self._leaders += 1
        wanted = min(self.max_size, self.sessions)
        had = len(self._waiting)
        if had < wanted and self._worth_waiting():
            deadline = leader.arrived_ns + self._max_wait_ns
            while len(self._waiting) < wanted:
                left_ns = deadline - time.monotonic_ns()
                if left_ns <= 0:
                    break
                self._cond.wait(left_ns / 1e9)
            self._fruitless = 0 if len(self._waiting) > had else self._fruitless + 1
        batch, self._waiting[:] = self._waiting[: self.max_size], self._waiting[self.max_size :]
        return batch

    def _worth_waiting(self) -> bool:
        return self._fruitless < FRUITLESS_WAITS or self._leaders % PROBE_EVERY == 0

    def _run(self, batch: list[_Request]) -> None:
        t0 = time.monotonic_ns()
        try:
            if len(batch) == 1:
                one = batch[0]
                self._load_state(one.session)
                told = {} if one.rtc is None else {"rtc": one.rtc}
                outputs = [self.policy.predict_chunk(one.inputs, **told)]
            else:
                outputs = self.policy.predict_batch([r.inputs for r in batch])
        except Exception as exc:  # noqa: BLE001  (told to the session whose input it was)
            if len(batch) > 1:
                for one in batch:  # each alone: the error lands on the session that caused it
                    self._run([one])
                return
            with self._cond:
                batch[0].error = exc
                self._cond.notify_all()
            return
        t1 = time.monotonic_ns()
        with self._cond:
            self.batch_sizes[len(batch)] = self.batch_sizes.get(len(batch), 0) + 1
            self.inference_ns.record(t1 - t0)
            for request, out in zip(batch, outputs, strict=True):
                request.result = Prediction(out, t0 - request.arrived_ns, t1 - t0, len(batch))
            self._cond.notify_all()

    def _load_state(self, session: int | None) -> None:
        """Swap the policy's state for `session`'s (fresh for a new one); the state it held
        is kept for its session. Under the condition: against a `leave` meanwhile."""
        if session is None or not self.policy.keeps_session_state:
            return
        with self._cond:
            if session == self._loaded:
                return
            if self._loaded is not None:
                self._states[self._loaded] = self.policy.session_state()
            self.policy.restore_session_state(self._states.pop(session, None))
            self._loaded = session

    def summary(self) -> dict[str, Any]:
        """Batch sizes formed (size -> count) and the model's time per batch, in ms."""
        with self._cond:
            sizes = dict(sorted(self.batch_sizes.items()))
            inference = asdict(self.inference_ns.summary(1e-6))
        batches = sum(sizes.values())
        mean = sum(k * v for k, v in sizes.items()) / batches if batches else 0.0
        return {
            "max_size": self.max_size,
            "batch_sizes": {str(k): v for k, v in sizes.items()},
            "mean_batch_size": round(mean, 3),
            "inference_ms_per_batch": inference,
        }
