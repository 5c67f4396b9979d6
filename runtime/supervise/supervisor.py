"""The supervisor: starts, watches and stops the server and the client, in that order.

Modelled on gunicorn's arbiter. Signal handlers only record the signal (and wake the loop
through `signal.set_wakeup_fd`); the main loop dispatches. Start: clean stale IPC objects of
dead runs → create this run's shared memory → server → wait for READY (policy loaded and
warmed up) → client → wait for READY (robot connected, handshake done). Watch: children's
exits are decoded and logged; a child that stops beating for `hang_timeout_s` gets SIGABRT
(its faulthandler prints every stack) then SIGKILL. A server that dies after it was ready
is restarted with backoff on a new shared-memory generation while the client holds the
robot; the client is told to attach and is not restarted. Stop (signal, --duration, a
failure): client first, then server, then unlink every IPC object; a second Ctrl-C forces.

Progress, not only liveness: a client that holds the robot (executes no action) while both
processes are alive — a paused peer whose session ended, a corrupt ring, a server that
stopped answering — is recovered in steps. (1) Re-handshake: `up --local` moves server and
client to a new shared-memory generation, `--remote` re-opens the stream; taken at once when
the client has lost its server and the server beats again, else after `--progress-timeout`.
(2) Restart the server (`up --local`). (3) Stop with ExitCode.STALLED and one line saying how
long the robot held and why. A run that would end 0 but held for more than
HELD_FRACTION_LIMIT of its time (and longer than --progress-timeout) ends STALLED too.
Under `--robots` each robot is watched on its own, and no step may move the others: (1) its
client re-handshakes on its own session (the server's lane takes the new hello), (2) that
client alone is stopped (its robot holding still), the others go on and the run ends
STALLED.

A child that fails to boot stops the whole run with its exit code: no restart loop.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import select
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from asyncinf.runtime.errors import ConfigError
from asyncinf.runtime.summary import RunSummary
from asyncinf.runtime.supervise import protocol, sdnotify, stop_signals
from asyncinf.runtime.supervise.exitcodes import BOOT_ERRORS, HELD_FRACTION_LIMIT, ExitCode
from asyncinf.runtime.supervise.plan import RunPlan
from asyncinf.runtime.supervise.protocol import Command, Role
from asyncinf.runtime.supervise.specs import ClientSpec, ServerSpec
from asyncinf.runtime.supervise.status_file import (
    ClientStatus,
    RunStatus,
    ServerStatus,
    State,
    StatusWriter,
)
from asyncinf.transports.factory import LocalSessions, TransportSpec, clean_stale

log = logging.getLogger(__name__)

SIGNAL_KILL_GRACE_S = 2.0  # between SIGABRT/SIGTERM and SIGKILL for a child that won't go
BUSY_GRACE_S = 5.0


@dataclass
class SupervisorConfig:
    start_timeout_s: float = 300.0  # per child: a large model can take minutes to load
    stop_timeout_s: float = 10.0  # the whole client-first stop
    hang_timeout_s: float = 10.0  # no heartbeat for this long = hung
    progress_timeout_s: float = 5.0  # the robot held this long with both alive = stalled
    max_restarts: int = 3  # server restarts after it was ready, per run
    restart_backoff_s: float = 1.0  # doubled after each restart
    duration_s: float | None = None
    status_json: str | None = None  # keep this JSON file current (asyncinf status reads it)
    log_level: str | None = None  # the children's; None: this process's root logger level

    def __post_init__(self) -> None:
        for name in ("start_timeout_s", "stop_timeout_s", "hang_timeout_s", "progress_timeout_s"):
            if getattr(self, name) <= 0:
                flag = "--" + name.removesuffix("_s").replace("_", "-")
                raise ConfigError(f"{flag}={getattr(self, name)}: must be > 0 seconds")
        if self.max_restarts < 0:
            raise ConfigError(f"--max-restarts={self.max_restarts}: must be >= 0")
        if self.restart_backoff_s < 0:
            raise ConfigError(f"--restart-backoff={self.restart_backoff_s}: must be >= 0 seconds")
        if self.duration_s is not None and self.duration_s <= 0:
            raise ConfigError(f"--duration={self.duration_s}: must be > 0 seconds (or omitted)")


def describe_exit(returncode: int, sent: tuple[signal.Signals, str] | None = None) -> str:
    """How a child ended; `sent`: the signal the supervisor last sent it, and why."""
    if returncode >= 0:
        try:
            return f"exit code {returncode} ({ExitCode(returncode).name})"
        except ValueError:
            return f"exit code {returncode}"
    try:
        sig = signal.Signals(-returncode)
    except ValueError:
        return f"killed by signal {-returncode}"
    if sent is not None and sent[0] is sig:
        return f"killed by {sig.name} (sent by the supervisor: {sent[1]})"
    if sig is signal.SIGKILL:  # nobody says who: a person, a script, or the kernel
        return "killed by SIGKILL (by another process or the kernel's out-of-memory killer)"
    return f"killed by {sig.name} (sent by another process)"


def _of(client: Child) -> str:
    """ " NAME" for a robot of --robots, "" for the one robot: "the robot{_of(c)} held"."""
    return f" {client.name}" if client.name else ""


class Child:
    """One worker process and its two pipes."""

    def __init__(
        self, role: Role, spec: ClientSpec | ServerSpec, log_level: str, name: str = ""
    ) -> None:
        self.role = role
        self.name = name  # the robot's, under --robots
        read_fd, write_fd = os.pipe()
        # Only the supervisor talks to systemd (NotifyAccess=main).
        env = {k: v for k, v in os.environ.items() if k not in sdnotify.ENV_VARS}
        self.proc = subprocess.Popen(
            protocol.worker_argv(role, spec.to_json(), write_fd, log_level),
            env=env,
            stdin=subprocess.PIPE,
            pass_fds=(write_fd,),
            # Own session: a terminal's Ctrl-C reaches only the supervisor, which decides order.
            start_new_session=True,
        )
        os.close(write_fd)
        os.set_blocking(read_fd, False)
        self.events_fd = read_fd
        self._partial = b""
        self.ready = False
        self.state = State.STARTING
        self.failure: protocol.Failed | None = None
        self.last_beat = time.monotonic()
        self.beat: protocol.ClientBeat | protocol.ServerBeat | None = None
        # What it said when ready: the client's chunk length, the server's policy info.
        self.ready_event: protocol.ClientReady | protocol.ServerReady | None = None
        self.sent: tuple[signal.Signals, str] | None = None  # our last signal to it, and why
        self.summary: RunSummary | None = None  # a client's, from its Summary event
        self.holding: protocol.Holding | None = None  # a client's last words on its robot
        self.lost = False  # a client of --robots that ended while the others go on
        self.given_up_at: float | None = None  # when such a client was told to stop for good
        self.recovery_step = 0  # a client's steps taken for its hold in progress
        self.recovery_at = 0.0  # when the last one was taken
        log.info("%s started (pid %d)", self.label, self.proc.pid)

    @property
    def label(self) -> str:
        return f"{self.role.value} {self.name}" if self.name else self.role.value

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(
        self, cmd: Command, transport: TransportSpec | None = None, timeout_s: float | None = None
    ) -> None:
        try:
            self.proc.stdin.write(protocol.encode_command(cmd, transport, timeout_s))
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError):
            pass  # already gone; its exit is handled by the watch loop

    def read_events(self) -> list[protocol.Event]:
        if self.events_fd < 0:
            return []
        try:
            data = os.read(self.events_fd, 65536)
        except BlockingIOError:
            return []
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        events = []
        for line in lines:
            try:
                events.append(protocol.decode_event(self.role, line))
            except ValueError as exc:
                log.warning("%s sent a malformed event %r: %s", self.role.value, line[:200], exc)
        return events

    def signal(self, sig: signal.Signals, why: str) -> None:
        if self.proc.poll() is None:
            log.info("sending %s to %s (pid %d): %s", sig.name, self.role.value, self.pid, why)
            self.sent = (sig, why)
            self.proc.send_signal(sig)

    def kill_late(self) -> None:
        """It outlasted --stop-timeout: SIGKILL, once."""
        if self.sent is None or self.sent[0] is not signal.SIGKILL:
            log.error("%s did not stop in time: SIGKILL", self.label)
            self.signal(signal.SIGKILL, "it did not stop within --stop-timeout")

    def describe_exit(self) -> str:
        return describe_exit(self.proc.returncode, self.sent)

    def close(self) -> None:
        if self.proc.stdin:
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()
        if self.events_fd >= 0:
            os.close(self.events_fd)
            self.events_fd = -1


class Supervisor:
    def __init__(
        self,
        plan: RunPlan,
        config: SupervisorConfig,
        on_state: Callable[[State, Supervisor], None] = lambda _state, _sup: None,
        on_beat: Callable[[Supervisor], None] = lambda _sup: None,
    ) -> None:
        self.plan = plan
        self.config = config
        self.state = State.STARTING
        self.server: Child | None = None
        self.clients: list[Child] = []  # one, or one per robot of --robots
        # (robot name, client spec) per client; one unnamed one without --robots
        self._robots = list(plan.robots) or [("", plan.client)]
        self._client_transports: list[TransportSpec] = []  # per client, under up --local
        self.restarts = 0
        self._on_state = on_state
        self._on_beat = on_beat
        self._signals: list[int] = []
        self._sessions = LocalSessions(plan.shm)  # this run's shared memory, per generation
        self._server_transport: TransportSpec | None = None
        self._log_level = config.log_level or logging.getLevelName(
            logging.getLogger().getEffectiveLevel()
        )
        self._exit: ExitCode | None = None  # set when a stop is decided
        self._fleet_code: ExitCode | None = None  # the first robot lost under --robots
        # A re-handshake blocks the client's loop (it holds): keep it well inside hang_timeout.
        self._attach_timeout_s = min(config.progress_timeout_s, config.hang_timeout_s / 2)
        self._wake_r, self._wake_w = os.pipe()
        self._status = StatusWriter(config.status_json) if config.status_json else None

    @property
    def client(self) -> Child | None:
        """The first (or only) client."""
        return self.clients[0] if self.clients else None

    @property
    def fleet(self) -> bool:
        return bool(self.plan.robots)

    @property
    def summaries(self) -> dict[str, RunSummary]:
        """The clients' summaries by robot name ("" without --robots), of those that sent one."""
        clients = self.clients if self.fleet else self.clients[:1]
        return {c.name: c.summary for c in clients if c.summary is not None}

    @property
    def summary(self) -> dict[str, Any] | None:
        """The `--summary-json` document: the client's summary; under --robots,
        `{"robots": {name: summary}}`; None when no client sent one."""
        documents = {name: s.to_json() for name, s in self.summaries.items()}
        if not documents:
            return None
        return {"robots": documents} if self.fleet else documents[""]

    @property
    def holding(self) -> protocol.Holding | None:
        return self.client.holding if self.client else None

    # --- signals: record only ------------------------------------------------------------

    def _on_signal(self, signum: int, _frame: object) -> None:
        self._signals.append(signum)

    def _install_signals(self) -> None:
        os.set_blocking(self._wake_w, False)
        os.set_blocking(self._wake_r, False)
        signal.set_wakeup_fd(self._wake_w)
        for sig in stop_signals.STOP_SIGNALS:
            signal.signal(sig, self._on_signal)
        for signum in stop_signals.take():  # received while the CLI was starting
            log.info("%s received while starting: nothing is started", signal.Signals(signum).name)
            self._signals.append(signum)
        # A child's exit only needs to wake the loop (its byte lands on the wakeup fd): the
        # loop's poll() then sees it at once instead of at its next 100 ms turn.
        signal.signal(signal.SIGCHLD, lambda _signum, _frame: None)

    def _set_state(self, state: State) -> None:
        self.state = state
        log.info("state: %s", state.value)
        if state is State.RUNNING and self.restarts == 0:
            sdnotify.ready("running")
        elif state is State.STOPPING:
            sdnotify.stopping("stopping: client first")
        else:
            sdnotify.status(state.value)
        self._publish()
        self._on_state(state, self)

    def _child_state(self, child: Child | None, state: State) -> None:
        if child is not None:
            child.state = state
            self._publish()

    def _publish(self) -> None:
        """Rewrite the status file (pids and states) for monitoring and for tests."""
        if self._status is None:
            return
        server = self.server
        self._status.status = RunStatus(
            state=self.state,
            server=None if self.plan.server is None else ServerStatus(
                server.pid if server else None,
                server.state if server else State.RESTARTING,
                self.restarts,
                server.ready_event.policy if server and server.ready_event else {},
                server.beat.batch_sizes if server and isinstance(server.beat, protocol.ServerBeat)
                else {},
            ),
            client=self._client_status(self.client),
            robots={c.name: self._client_status(c) for c in self.clients} if self.fleet else {},
        )  # fmt: skip
        self._status.write()

    @staticmethod
    def _client_status(client: Child | None) -> ClientStatus:
        if client is None:
            return ClientStatus()
        beat = client.beat if isinstance(client.beat, protocol.ClientBeat) else None
        if beat is None:
            return ClientStatus(client.pid, client.state)
        return ClientStatus(client.pid, client.state, beat.hold_s, beat.hold_reason, beat.held_s)

    # --- the loop --------------------------------------------------------------------------

    def run(self) -> int:
        self._install_signals()
        try:
            self._pump(0)  # a stop signal that came during start-up stops before anything
            if self._exit is None:
                self._start()
            if self._exit is None:
                self._set_state(State.RUNNING)
                self._watch()
        finally:
            self._stop()
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            os.close(self._wake_r)
            os.close(self._wake_w)
        return int(self._exit)

    def _pump(self, timeout_s: float) -> None:
        """Wait up to `timeout_s` for anything, then dispatch all of it once."""
        children = [c for c in (self.server, *self.clients) if c is not None and c.events_fd >= 0]
        fds = [self._wake_r] + [c.events_fd for c in children]
        ready, _, _ = select.select(fds, [], [], max(0.0, timeout_s))
        sdnotify.watchdog_ping()  # every state, restarts included: the loop itself is alive
        if self._wake_r in ready:
            while True:
                try:
                    if not os.read(self._wake_r, 512):
                        break
                except BlockingIOError:
                    break
        for child in children:
            self._drain_events(child)
        while self._signals:
            self._handle_signal(self._signals.pop(0))

    def _drain_events(self, child: Child) -> None:
        """Dispatch whatever the child has written, e.g. its last words before exiting."""
        for event in child.read_events():
            self._dispatch(child, event)

    def _dispatch(self, child: Child, event: protocol.Event) -> None:
        child.last_beat = time.monotonic()
        if isinstance(event, protocol.ClientReady | protocol.ServerReady):
            child.ready = True
            child.ready_event = event
            log.info("%s ready (pid %d)", child.label, child.pid)
            self._child_state(child, State.RUNNING)
        elif isinstance(event, protocol.ClientBeat | protocol.ServerBeat):
            was_holding = isinstance(child.beat, protocol.ClientBeat) and child.beat.hold_s > 0
            child.beat = event
            if isinstance(event, protocol.ClientBeat) and (event.hold_s > 0 or was_holding):
                self._publish()  # the hold in progress, live in `asyncinf status`
            self._on_beat(self)
        elif isinstance(event, protocol.Failed):
            child.failure = event
        elif isinstance(event, protocol.Holding):
            child.holding = event
            log.info("%s holding at %s", child.label, event.target)
        elif isinstance(event, protocol.Summary):
            child.summary = event.summary

    def _handle_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self._exit is not None:
            log.warning("%s again while stopping: forcing", name)
            self._force_kill()
            return
        log.info("%s received: stopping, client first", name)
        self._exit = ExitCode.INTERRUPTED if signum == signal.SIGINT else ExitCode.OK

    # --- start -----------------------------------------------------------------------------

    def _start(self) -> None:
        for name in clean_stale():
            log.info("removed stale IPC object %s of a dead run", name)
        if self.plan.server is not None:
            if not self._start_server():
                return
            transports = self._client_transports
        else:
            transports = [self.plan.remote] * len(self._robots)
        for (name, planned), transport in zip(self._robots, transports, strict=True):
            spec = dataclasses.replace(
                planned, transport=transport, busy_retry_s=self.config.start_timeout_s
            )
            self.clients.append(Child(Role.CLIENT, spec, self._log_level, name))
        self._publish()
        for client in self.clients:  # all started at once: their robots connect side by side
            if not self._await_ready(client):
                return

    def _start_server(self) -> bool:
        names = [name for name, _ in self._robots]
        self._client_transports = self._sessions.create_many(len(names), names)
        self._server_transport = self._sessions.server_spec()
        spec = dataclasses.replace(self.plan.server, transport=self._server_transport)
        self.server = Child(Role.SERVER, spec, self._log_level)
        self._publish()
        return self._await_ready(self.server)

    def _await_ready(self, child: Child) -> bool:
        # The client asks a busy server again until its own --start-timeout: a little longer
        # here, to hear it say so (ExitCode.SERVER_BUSY) rather than time it out.
        grace_s = BUSY_GRACE_S if child.role is Role.CLIENT else 0.0
        deadline = time.monotonic() + self.config.start_timeout_s + grace_s
        while not child.ready and self._exit is None:
            if child.proc.poll() is not None:
                self._boot_failed(child)
                return False
            if time.monotonic() > deadline:
                log.error(
                    "%s not ready within --start-timeout=%g s", child.label,
                    self.config.start_timeout_s,
                )  # fmt: skip
                self._exit = ExitCode.RUNTIME_FAILURE
                return False
            self._pump(0.1)
        return child.ready and self._exit is None  # ready as a stop came: start no more

    def _boot_failed(self, child: Child) -> None:
        self._drain_events(child)
        rc = child.proc.returncode
        why = child.failure.message if child.failure else child.describe_exit()
        log.error("%s failed to start: %s", child.label, why)
        told = rc in {int(c) for c in (*BOOT_ERRORS, ExitCode.SERVER_BUSY)}
        self._exit = ExitCode(rc) if told else ExitCode.RUNTIME_FAILURE

    # --- watch -----------------------------------------------------------------------------

    def _watch(self) -> None:
        end = None if self.config.duration_s is None else time.monotonic() + self.config.duration_s
        while self._exit is None:
            self._pump(0.1)
            if self._exit is not None:
                break  # a stop signal: the stop has its own bound (--stop-timeout), no hang check
            now = time.monotonic()
            if end is not None and now >= end:
                log.info("--duration reached: stopping, client first")
                self._exit = ExitCode.OK
                break
            for client in self._live_clients():
                if client.proc.poll() is not None:
                    self._client_lost(client)
                elif now - client.last_beat > self.config.hang_timeout_s:
                    log.error(
                        "%s sent no heartbeat for %.1f s: hung", client.label,
                        now - client.last_beat,
                    )  # fmt: skip
                    self._abort(client)
            if self._exit is not None or not self._live_clients():
                break
            self._see_out(now)
            if self.server is not None:
                self._check_server(now)
            if self._exit is None and self.state is State.RUNNING:
                for client in self._live_clients():
                    self._check_progress(client, now)

    def _live_clients(self) -> list[Child]:
        return [c for c in self.clients if not c.lost]

    def _check_server(self, now: float) -> None:
        server = self.server
        hung = server.proc.poll() is None
        if hung:
            if now - server.last_beat <= self.config.hang_timeout_s:
                return
            log.error("server sent no heartbeat for %.1f s: hung", now - server.last_beat)
        # The client would see the loss itself within the transport's peer timeout; told
        # now, before a hung server's SIGABRT grace, it stops executing the dead server's
        # chunks within a tick or two.
        for client in self._live_clients():
            client.send(Command.DETACH)
        if hung:
            self._abort(server)
        log.error("server lost: %s; client holding", server.describe_exit())
        self._restart_server()

    def _check_progress(self, client: Child, now: float) -> None:
        """Recover a session in which the robot holds while both processes are alive."""
        beat = client.beat
        if not isinstance(beat, protocol.ClientBeat):
            return
        if beat.hold_s == 0:
            if client.recovery_step:
                log.info("the robot%s moves again: recovered", _of(client))
                client.recovery_step = 0
            return
        server = self.server
        bound = self.config.progress_timeout_s
        # A client that lost its server to a pause, beside a server that beats again.
        came_back = (
            not beat.attached
            and server is not None
            and isinstance(server.beat, protocol.ServerBeat)
            and now - server.last_beat < 1.0
        )
        if client.recovery_step == 0:
            if beat.hold_s > bound or came_back:
                self._recover(client, beat, "re-handshake")
            return
        if now - client.recovery_at < bound + self._attach_timeout_s:
            return  # the last step's re-handshake may still be under way
        # A server restart would move every robot of --robots: not for one of them.
        restartable = server is not None and self.restarts < self.config.max_restarts
        if client.recovery_step == 1 and restartable and not self.fleet:
            self._recover(client, beat, "server restart")
            return
        if client.recovery_step > 1:
            tried = "a re-handshake and a server restart"
        elif self.fleet:
            tried = "a re-handshake on its own session (a server restart would move the others)"
        elif server is None:
            tried = "a re-handshake (the server is remote: no restart)"
        else:
            limit = self.config.max_restarts
            tried = f"a re-handshake (no server restart left: --max-restarts={limit})"
        log.error(
            "the robot%s held for %.1f s (%s) while both processes were alive, and %s did not "
            "recover it: stopping%s",
            _of(client), beat.hold_s, beat.hold_reason or "no action", tried,
            " its client; the other robots go on" if self.fleet else "",
        )  # fmt: skip
        if self.fleet:
            self._give_up(client)
        else:
            self._exit = ExitCode.STALLED

    def _recover(self, client: Child, beat: protocol.ClientBeat, step: str) -> None:
        client.recovery_step += 1
        client.recovery_at = time.monotonic()
        log.warning(
            "the robot%s has held for %.1f s (%s) while both processes are alive: %s",
            _of(client), beat.hold_s, beat.hold_reason or "no action", step,
        )  # fmt: skip
        if step == "server restart":
            client.send(Command.DETACH)
            self._abort(self.server, "the robot held beside it after a re-handshake")
            self._restart_server()
            client.recovery_at = time.monotonic()
            return
        if self.fleet:
            # Its own session again: the server's lane ends the old one when the new hello
            # comes, and no other robot's session is touched.
            target = self._client_transports[self.clients.index(client)]
        elif self.server is None:
            target = self.plan.remote
        else:
            # A new generation: whatever state the old rings are in (a pause, corruption),
            # both ends start afresh. The old objects are unlinked; each end keeps its mapping
            # until it moves.
            target = self._server_transport = self._sessions.create()
            self.server.send(Command.ATTACH, target)
        client.send(Command.ATTACH, target, self._attach_timeout_s)

    def _give_up(self, client: Child) -> None:
        """Stop one robot's client for good (--robots): it brings its robot to a hold and
        ends; the run goes on with the others and ends STALLED."""
        client.send(Command.STOP)
        client.given_up_at = time.monotonic()
        self._lose(client, ExitCode.STALLED)

    def _see_out(self, now: float) -> None:
        """Each client given up (--robots) ends while the others go on: its end logged when it
        comes, a SIGKILL if it outlasts --stop-timeout."""
        for client in self.clients:
            if client.given_up_at is None or client.events_fd < 0:
                continue
            if client.proc.poll() is None:
                if now - client.given_up_at > self.config.stop_timeout_s:
                    client.kill_late()
                continue
            self._drain_events(client)  # its summary and last words
            log.info("%s stopped: %s", client.label, client.describe_exit())
            client.close()

    def _client_lost(self, client: Child) -> None:
        """A client ended: the run stops with its code; under --robots, once the last one
        ended, and the others go on meanwhile."""
        self._drain_events(client)
        rc = client.proc.returncode
        said = {int(ExitCode.RUNTIME_FAILURE), *(int(c) for c in BOOT_ERRORS)}
        if rc in said and client.failure:  # it said why: its code, not "lost"
            log.error("%s stopped: %s", client.label, client.failure.message)
            code = ExitCode(rc)
        else:
            log.error("%s lost: %s; %s", client.label, client.describe_exit(),
                      self._last_command(client))  # fmt: skip
            code = ExitCode.CLIENT_LOST
        self._lose(client, code)

    def _lose(self, client: Child, code: ExitCode) -> None:
        """`client` is out of the run with `code`; the run stops once no client is left."""
        client.lost = True
        self._child_state(client, State.FAILED)
        self._fleet_code = self._fleet_code or code
        if self._live_clients():
            log.info("the other robots go on: %s", ", ".join(c.name for c in self._live_clients()))
        else:
            self._exit = code

    def _last_command(self, client: Child) -> str:
        """What the robot was last told, as far as the client's last words say."""
        if client.holding is not None:  # it said so as its loop ended
            if client.holding.target is None:
                return "it had not commanded the robot"
            return f"the robot was last commanded to {client.holding.target}"
        actions = client.beat.actions if client.beat else 0
        age_s = time.monotonic() - client.last_beat
        return (
            f"it died without reporting its last command ({actions} actions executed "
            f"by its last report, {age_s:.1f} s before)"
        )

    def _abort(self, child: Child, why: str = "hung, no heartbeat") -> None:
        """A hung (or stalled) child: SIGABRT for a stack dump, then SIGKILL."""
        child.signal(signal.SIGABRT, f"{why} (its stacks are above)")
        # A stopped process can only act on SIGABRT once resumed.
        child.signal(signal.SIGCONT, "to let it act on SIGABRT")
        if not self._wait_exit(child, SIGNAL_KILL_GRACE_S):
            child.signal(
                signal.SIGKILL, f"hung, and still there {SIGNAL_KILL_GRACE_S:g} s after SIGABRT"
            )
            child.proc.wait()

    def _restart_server(self) -> None:
        if self.restarts >= self.config.max_restarts:
            log.error("server restarted %d times (--max-restarts): giving up", self.restarts)
            self._exit = ExitCode.RUNTIME_FAILURE
            return
        self._set_state(State.RESTARTING)
        backoff = self.config.restart_backoff_s * 2**self.restarts
        self.restarts += 1
        self.server.close()
        self.server = None
        for client in self._live_clients():
            self._child_state(client, State.RESTARTING)  # it holds the robot meanwhile
        self._sessions.unlink()  # the client keeps its mapping until it attaches anew
        log.info("restarting the server in %.1f s (restart %d)", backoff, self.restarts)
        deadline = time.monotonic() + backoff
        while self._exit is None and time.monotonic() < deadline:
            self._pump(deadline - time.monotonic())
        if self._exit is not None or not self._start_server():
            if self._exit is None:
                self._exit = ExitCode.RUNTIME_FAILURE
            return
        for client, target in zip(self.clients, self._client_transports, strict=True):
            if not client.lost:
                client.send(Command.ATTACH, target, self._attach_timeout_s)
                client.state = State.RUNNING
        # A recovery step of its own: the progress watch gives this attach its time too.
        for client in self._live_clients():
            client.recovery_step = max(client.recovery_step, 1)
            client.recovery_at = time.monotonic()
        self._set_state(State.RUNNING)

    # --- stop ------------------------------------------------------------------------------

    def _wait_exit(self, child: Child, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while child.proc.poll() is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._pump(min(0.05, remaining))
        return True

    def _stop_child(self, child: Child | None, deadline: float) -> None:
        if child is None or child.events_fd < 0:
            return  # none, or seen out already (_see_out)
        if child.proc.poll() is None:
            log.info("stopping %s (pid %d)", child.label, child.pid)
            self._child_state(child, State.STOPPING)
            child.send(Command.STOP)
            if not self._wait_exit(child, max(0.0, deadline - time.monotonic())):
                child.kill_late()
                child.proc.wait()
        self._drain_events(child)
        rc = child.proc.returncode
        log.info("%s stopped: %s", child.label, child.describe_exit())
        self._child_state(child, State.STOPPED if rc == 0 else State.FAILED)
        child.close()

    def _stop(self) -> None:
        if self._exit is None:
            self._exit = ExitCode.RUNTIME_FAILURE
        self._set_state(State.STOPPING)
        deadline = time.monotonic() + self.config.stop_timeout_s
        # Clients first: each robot is brought to a hold before its action source goes away.
        for client in self.clients:
            client.send(Command.STOP)  # all at once: each robot holds without waiting
        for client in self.clients:
            self._stop_child(client, deadline)
        if self._exit is ExitCode.OK and self._fleet_code is not None:
            self._exit = self._fleet_code  # a robot lost on the way: the run says so
        for client in self.clients:
            self._check_held(client)
        self._stop_child(self.server, deadline)
        if self._sessions.unlink():
            log.info("removed this run's IPC objects")
        failed = self._exit not in (ExitCode.OK, ExitCode.INTERRUPTED)
        self._set_state(State.FAILED if failed else State.STOPPED)

    def _check_held(self, client: Child) -> None:
        """A run that would end 0 after holding through most of it ends STALLED."""
        if self._exit is not ExitCode.OK or client.summary is None:
            return
        held = client.summary.held
        # A hold shorter than the progress bound is no stall, however short the run.
        if held.fraction > HELD_FRACTION_LIMIT and held.total_s > self.config.progress_timeout_s:
            reasons = ", ".join(f"{k} {v:.1f} s" for k, v in held.reasons_s.items())
            log.error(
                "the robot%s held for %.1f s, %.0f%% of the run (%s): exit code %d (STALLED)",
                _of(client), held.total_s,
                100 * held.fraction, reasons, ExitCode.STALLED,
            )  # fmt: skip
            self._exit = ExitCode.STALLED

    def _force_kill(self) -> None:
        for child in (*self.clients, self.server):
            if child is not None:
                child.signal(signal.SIGKILL, "a second stop signal forced the stop")
