"""Names of our POSIX objects, and removal of the ones that dead runs left behind.

Every object of a session is named `asyncinf.<run>.g<generation>.<role>`, where `run` is
`<supervisor pid>-<8 hex digits>`. On Linux, shared-memory segments appear as
`/dev/shm/asyncinf.…` and posix_ipc semaphores as `/dev/shm/sem.asyncinf.…`.

A run whose pid is no longer alive cannot unlink its objects any more, so `clean_stale`
does it. A run whose pid is alive is never touched, even if that pid now belongs to
another program (pids are reused): keeping a stale object is harmless, removing a live
session's objects is not. Names whose run id carries no pid are left alone for the
same reason.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import posix_ipc

from asyncinf.runtime.errors import ConfigError, TransportError

log = logging.getLogger(__name__)

PREFIX = "asyncinf"
SHM_DIR = Path("/dev/shm")  # noqa: S108  (where Linux shows POSIX shm and semaphores)
_SEM_FILE_PREFIX = "sem."  # glibc keeps named semaphores as /dev/shm/sem.<name>

# Roles of one session's objects: one segment and five semaphores.
SEGMENT = "seg"
UP_LOCK = "uplock"  # guards observation slots + client→server control ring
UP_BELL = "upbell"  # wakes the server
DOWN_LOCK = "downlock"  # guards chunk ring + server→client control ring
DOWN_BELL = "downbell"  # wakes the client
CHUNK_SPACE = "space"  # counts free chunk slots
SEMAPHORES = (UP_LOCK, UP_BELL, DOWN_LOCK, DOWN_BELL, CHUNK_SPACE)

_RUN = r"[A-Za-z0-9-]{1,64}"
_RUN_RE = re.compile(_RUN)
_SESSION = rf"{PREFIX}\.(?P<run>{_RUN})\.g(?P<gen>\d{{1,9}})"
_SESSION_RE = re.compile(rf"^{_SESSION}$")
_NAME_RE = re.compile(rf"^{_SESSION}\.(?P<role>[a-z]{{1,16}})$")


def _session(run_id: str, generation: int) -> str:
    """The session-name pattern, written once (`_SESSION` parses it back)."""
    return f"{PREFIX}.{run_id}.g{generation}"


def make_run_id(pid: int | None = None) -> str:
    """A fresh run id `<pid>-<8 hex>`; `clean` judges a run by that pid."""
    return f"{os.getpid() if pid is None else pid}-{os.urandom(4).hex()}"


def session_name(run_id: str, generation: int) -> str:
    """`asyncinf.<run>.g<gen>`: what children are given to attach."""
    if not _RUN_RE.fullmatch(run_id):
        raise ConfigError(
            f"run id {run_id!r} must be 1-64 letters, digits or '-' "
            "(use names.make_run_id() for '<pid>-<hex>')"
        )
    if not isinstance(generation, int) or not 0 <= generation < 10**9:
        raise ConfigError(f"generation {generation!r} must be an integer in [0, 1e9)")
    return _session(run_id, generation)


def session_generation(name: str) -> int:
    """The generation in a session name `asyncinf.<run>.g<gen>`."""
    m = _SESSION_RE.match(name)
    if m is None:
        raise TransportError(
            f"{name!r} is not a shared-memory session name (asyncinf.<run>.g<generation>)"
        )
    return int(m["gen"])


def object_name(session: str, role: str) -> str:
    """The posix_ipc name (leading slash) of one object of `session`."""
    return f"/{session}.{role}"


def unlink_role(session: str, role: str) -> None:
    """Remove one object of `session`; already gone is fine."""
    _unlink(object_name(session, role), semaphore=role != SEGMENT)


def _unlink(name: str, *, semaphore: bool) -> None:
    """Remove the object posix_ipc knows as `name` (leading slash); already gone is fine."""
    try:
        if semaphore:
            posix_ipc.unlink_semaphore(name)
        else:
            posix_ipc.unlink_shared_memory(name)
    except posix_ipc.ExistentialError:
        pass


@dataclass(frozen=True)
class ObjectName:
    """One of our objects as found in /dev/shm."""

    name: str  # as posix_ipc knows it, without the leading slash
    run: str
    generation: int
    role: str
    semaphore: bool

    @property
    def pid(self) -> int | None:
        """The run's owner pid, or None when the run id carries none."""
        head = self.run.split("-", 1)[0]
        return int(head) if head.isdigit() and "-" in self.run else None

    @property
    def session(self) -> str:
        return _session(self.run, self.generation)

    @property
    def path(self) -> Path:
        return SHM_DIR / (_SEM_FILE_PREFIX + self.name if self.semaphore else self.name)

    def unlink(self) -> None:
        """Remove the object; already gone is fine."""
        _unlink("/" + self.name, semaphore=self.semaphore)


def parse(filename: str) -> ObjectName | None:
    """Parse a /dev/shm file name; None when it is not one of ours."""
    semaphore = filename.startswith(_SEM_FILE_PREFIX + PREFIX + ".")
    name = filename[len(_SEM_FILE_PREFIX) :] if semaphore else filename
    m = _NAME_RE.match(name)
    if m is None:
        return None
    return ObjectName(name, m["run"], int(m["gen"]), m["role"], semaphore)


def list_objects(shm_dir: Path = SHM_DIR) -> list[ObjectName]:
    """Our objects currently in `shm_dir`, sorted by name."""
    try:
        entries = [p.name for p in Path(shm_dir).iterdir()]
    except FileNotFoundError:
        return []
    found = (parse(e) for e in entries)
    return sorted((o for o in found if o is not None), key=lambda o: (o.name, o.semaphore))


# Linux's PID_MAX_LIMIT on 64-bit: no pid is larger, whatever kernel.pid_max says.
PID_MAX = 1 << 22


def pid_alive(pid: int) -> bool:
    """True if a process `pid` exists (a zombie counts: its parent has not reaped it yet).

    A number no pid can be (a stray write into a pid word) is no process, and never reaches
    os.kill, which would raise OverflowError past a C int."""
    if not 0 < pid <= PID_MAX:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def stale_objects(shm_dir: Path = SHM_DIR) -> list[ObjectName]:
    """Our objects whose run's pid is known and no longer alive."""
    return [o for o in list_objects(shm_dir) if o.pid is not None and not pid_alive(o.pid)]


def clean_stale(dry_run: bool = False, shm_dir: Path = SHM_DIR) -> list[str]:
    """Remove objects of dead runs; returns their names (what would go, with `dry_run`)."""
    removed = []
    for obj in stale_objects(shm_dir):
        if not dry_run:
            obj.unlink()
            log.debug("unlinked %s of dead run %s", obj.name, obj.run)
        removed.append(("sem." if obj.semaphore else "") + obj.name)
    return removed
