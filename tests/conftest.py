"""Fixtures for every test: no shared-memory object of ours may outlive the test that made it.

Other test runs share this machine, so an object counts as this test's leak only when it
appeared during the test and its run can be pinned on this test: the run id's pid is this
process, or a process that is dead now (a child or supervisor the test started, gone
without unlinking). Objects of live runs of other processes, and of run ids that carry
no pid, are never touched. Runs named `<pid>-dead…` are made dead on purpose by the tests
of `asyncinf clean`, which check those themselves. Leaks are reported, then removed, so
one failure does not cascade.
"""

from __future__ import annotations

import os

import pytest

from asyncinf.transports.shm import names

STAGED_DEAD = "dead"  # run-id prefix (after the pid) of deliberately dead runs


def _pinned_on_us(obj: names.ObjectName) -> bool:
    pid = obj.pid
    if pid is None or obj.run.split("-", 1)[1].startswith(STAGED_DEAD):
        return False
    return pid == os.getpid() or not names.pid_alive(pid)


@pytest.fixture(autouse=True)
def no_leaked_shm_objects():
    """Fail a test that leaves `/dev/shm/asyncinf.*` or `sem.asyncinf.*` objects behind."""
    before = {o.path for o in names.list_objects()}
    yield
    leaked = [o for o in names.list_objects() if o.path not in before and _pinned_on_us(o)]
    for obj in leaked:
        obj.unlink()
    assert not leaked, "shared-memory objects left behind: " + ", ".join(
        str(o.path) for o in leaked
    )


@pytest.fixture
def run_id() -> str:
    """A run id unique to this test, carrying this process's pid like a supervisor's."""
    return names.make_run_id()
