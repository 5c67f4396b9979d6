"""Fixtures for every test: no shared-memory object of ours may outlive the test that made it.

Other test runs may share this machine, so an object counts as this test's leak when it
appeared during the test and its run is ours (the run id's pid is this process) or dead
(a child or supervisor this test started, gone without unlinking). Live runs of other
processes are someone else's business. Leaks are reported, then removed, so one failure
does not cascade.
"""

from __future__ import annotations

import os

import pytest

from asyncinf.transports.shm import names


def _ours_or_dead(obj: names.ObjectName) -> bool:
    pid = obj.pid
    return pid is None or pid == os.getpid() or not names.pid_alive(pid)


@pytest.fixture(autouse=True)
def no_leaked_shm_objects():
    """Fail a test that leaves `/dev/shm/asyncinf.*` or `sem.asyncinf.*` objects behind."""
    before = {o.path for o in names.list_objects()}
    yield
    leaked = [o for o in names.list_objects() if o.path not in before and _ours_or_dead(o)]
    for obj in leaked:
        obj.unlink()
    assert not leaked, "shared-memory objects left behind: " + ", ".join(
        str(o.path) for o in leaked
    )


@pytest.fixture
def run_id() -> str:
    """A run id unique to this test, carrying this process's pid like a supervisor's."""
    return names.make_run_id()
