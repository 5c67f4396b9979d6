"""The iceoryx2 row of `bench transport`: the chunk really comes back with what the peer saw,
nothing of a run stays behind in iceoryx2's files, and a missing package is one line."""

import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from asyncinf.runtime.bench import transport as bt
from asyncinf.runtime.bench.iceoryx2_ring import MISSING, iceoryx2_ring, load, service_names
from asyncinf.runtime.cli import app

# The `bench` extra installs iceoryx2 where it has wheels; there, these always run.
pytestmark = pytest.mark.skipif(
    platform.machine() != "x86_64", reason="iceoryx2 0.10 has Linux x86-64 wheels only"
)

IOX2_DIRS = (Path("/tmp/iceoryx2"), Path("/dev/shm"))  # its records, its segments


def _our_nodes(iox2, run_id: str) -> list[str]:
    """Ids of the nodes, alive or dead, that iceoryx2 lists under this run's names."""
    found = []
    for state in iox2.Node.list(iox2.ServiceType.Ipc, iox2.config.global_config()):
        view = state[0]
        details = getattr(view, "details", None)
        if details is not None and details.name.as_str().startswith(f"asyncinf/{run_id}/"):
            found.append(str(view.id.value))
    return found


def _files_naming(ids) -> list[str]:
    """iceoryx2's files (under /tmp/iceoryx2 and /dev/shm) whose paths name any of `ids`."""
    paths = (p for d in IOX2_DIRS if d.exists() for p in d.rglob("*iox2_*"))
    return sorted(str(p) for p in paths if any(i in str(p) for i in ids))


def _services_exist(iox2, run_id: str) -> list[bool]:
    cfg, ipc = iox2.config.global_config(), iox2.ServiceType.Ipc
    patterns = (iox2.MessagingPattern.PublishSubscribe, iox2.MessagingPattern.Event)
    return [
        iox2.Service.does_exist(iox2.ServiceName.new(name), cfg, pattern, ipc)
        for name in service_names(run_id)
        for pattern in patterns
    ]


def test_the_chunk_carries_what_the_peer_saw_and_nothing_stays_behind():
    iox2 = load()
    with iceoryx2_ring(1 << 20, (50, 14)) as sender:
        run_id = sender.run_id
        assert _services_exist(iox2, run_id) == [True] * 4
        ids = (*sender.ids, *_our_nodes(iox2, run_id))
        assert len(_our_nodes(iox2, run_id)) == 2  # the sender's node and the peer's
        assert _files_naming(ids)
        for size in (64, 921_600):
            for i in range(5):
                obs = np.full(size, i, np.uint8)
                obs[-1] = (size + i) % 251
                chunk = sender([obs], 10.0)
                assert chunk.shape == (50, 14) and chunk.dtype == np.float32
                assert chunk[0, 0] == size  # the byte count the peer saw
                assert chunk[0, 1] == (size + i) % 251  # and the last of them
    assert _services_exist(iox2, run_id) == [False] * 4
    assert _our_nodes(iox2, run_id) == []
    assert _files_naming(ids) == []


SENDER_SCRIPT = """\
import json, time, numpy as np
from asyncinf.runtime.bench.iceoryx2_ring import iceoryx2_ring
if __name__ == "__main__":
    with iceoryx2_ring(4096, (50, 14)) as s:
        s([np.zeros(16, np.float32)], 10.0)
        print(json.dumps([s.run_id, list(s.ids)]), flush=True)
        time.sleep(120)
"""


@contextlib.contextmanager
def _killed_run(tmp_path, *, whole_group: bool):
    """A sender (and its peer) in a subprocess, killed with SIGKILL once its round trips
    work: the sender alone, or the whole process group. Yields (run_id, the ids iceoryx2's
    files name it by)."""
    script = tmp_path / "sender.py"
    script.write_text(SENDER_SCRIPT)
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        run_id, ids = json.loads(proc.stdout.readline())
        ids = [*ids, *_our_nodes(load(), run_id)]
        if whole_group:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        yield run_id, ids
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        proc.stdout.close()


def _gone(iox2, run_id: str, ids) -> bool:
    """No node, file or service of that run is left."""
    left = _our_nodes(iox2, run_id) or _files_naming(ids) or any(_services_exist(iox2, run_id))
    return not left


@pytest.mark.faults
def test_an_orphaned_peer_leaves_and_removes_its_killed_parents_resources(tmp_path):
    """kill -9 of the sender: the peer notices within a poll, exits and cleans the dead node."""
    iox2 = load()
    with _killed_run(tmp_path, whole_group=False) as (run_id, ids):
        deadline = time.monotonic() + 30.0
        while not _gone(iox2, run_id, ids) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _our_nodes(iox2, run_id) == []
        assert _files_naming(ids) == []
        assert _services_exist(iox2, run_id) == [False] * 4


@pytest.mark.faults
def test_what_a_run_killed_as_a_whole_left_goes_when_the_next_run_opens(tmp_path):
    iox2 = load()
    with _killed_run(tmp_path, whole_group=True) as (run_id, ids):
        assert _files_naming(ids)  # nobody was left to clean up
        with iceoryx2_ring(4096, (50, 14)) as sender:
            assert _gone(iox2, run_id, ids)
            sender([np.zeros(16, np.float32)], 10.0)


runner = CliRunner()


def test_asking_for_the_row_without_the_package_is_one_line_exit_2(monkeypatch):
    monkeypatch.setitem(sys.modules, "iceoryx2", None)  # `import iceoryx2` now fails
    r = runner.invoke(app, ["bench", "transport", "--transports", "memcpy,iceoryx2", "-n", "2"])
    assert r.exit_code == 2, r.output
    assert r.output.strip() == MISSING
    assert bt.missing(("memcpy", "iceoryx2")) == {"iceoryx2": MISSING}


def test_with_the_package_nothing_is_missing():
    assert bt.missing(tuple(bt.ROWS)) == {}


@pytest.mark.slow
def test_the_default_run_skips_the_row_with_a_note_when_the_package_is_missing(
    monkeypatch, tmp_path
):
    monkeypatch.setitem(sys.modules, "iceoryx2", None)
    out = tmp_path / "t.json"
    r = runner.invoke(
        app, ["bench", "transport", "-n", "3", "--sizes", "64", "--mode", "backtoback",
              "--json", str(out)],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert f"skipped: {MISSING}" in r.output
    rows = {x["transport"] for x in json.loads(out.read_text())["results"]}
    assert "iceoryx2" not in rows and {"shm", "posix_ring", "memcpy"} <= rows
