"""The status file: atomic replacement, read back, and `asyncinf status` on top of it."""

import json
import os
import subprocess
import sys
import threading

import pytest
from typer.testing import CliRunner

from asyncinf.runtime.cli import app
from asyncinf.runtime.cli.status import StatusExit
from asyncinf.runtime.supervise.status_file import (
    ClientStatus,
    RunStatus,
    ServerStatus,
    State,
    StatusFileError,
    StatusWriter,
    read_status_file,
    write_status_file,
)

runner = CliRunner()


def dead_pid():
    """A pid that is certainly gone: a child we started and reaped."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def running_status(**changes):
    status = RunStatus(
        state=State.RUNNING,
        pid=os.getpid(),
        server=ServerStatus(pid=os.getpid(), state=State.RUNNING, restarts=2),
        client=ClientStatus(pid=os.getpid(), state=State.RUNNING),
    )
    for key, value in changes.items():
        setattr(status, key, value)
    return status


def test_write_then_read_back(tmp_path):
    path = tmp_path / "status.json"
    status = running_status()
    write_status_file(path, status)
    assert status.updated_ns > 0
    assert read_status_file(path) == status
    assert json.loads(path.read_text()) == {
        "state": "running",
        "pid": os.getpid(),
        "server": {
            "pid": os.getpid(),
            "state": "running",
            "restarts": 2,
            "policy": {},
            "batch_sizes": {},
        },
        "client": {
            "pid": os.getpid(),
            "state": "running",
            "hold_s": 0.0,
            "hold_reason": "",
            "held_s": 0.0,
        },
        "robots": {},  # by name, under --robots
        "updated_ns": status.updated_ns,
    }
    assert os.stat(path).st_mode & 0o777 == 0o644  # readable by a monitor of another user
    assert os.listdir(tmp_path) == ["status.json"]  # no temporary file left beside it


def test_remote_run_has_no_server(tmp_path):
    path = tmp_path / "status.json"
    write_status_file(path, running_status(server=None))
    assert read_status_file(path).server is None
    assert json.loads(path.read_text())["server"] is None


def test_every_state_round_trips(tmp_path):
    path = tmp_path / "s.json"
    for state in State:
        status = RunStatus(state=state, client=ClientStatus(None, state))
        write_status_file(path, status)
        assert read_status_file(path) == status
    assert [s.value for s in State] == [
        "starting", "running", "restarting", "stopping", "stopped", "failed",
    ]  # fmt: skip


def test_a_reader_never_sees_a_partial_file(tmp_path):
    path = tmp_path / "status.json"
    write_status_file(path, running_status())
    stop = threading.Event()
    seen, errors = set(), []

    def read_all_the_time():
        while not stop.is_set():
            try:
                seen.add(read_status_file(path).server.restarts)
            except StatusFileError as exc:
                errors.append(exc)

    reader = threading.Thread(target=read_all_the_time)
    reader.start()
    try:
        status = running_status()
        for restarts in range(2000):
            status.server.restarts = restarts
            write_status_file(path, status)
    finally:
        stop.set()
        reader.join()
    assert errors == []
    assert len(seen) > 1  # the reader did overlap the writes
    assert os.listdir(tmp_path) == ["status.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "status.json"
    write_status_file(path, running_status())
    before = path.read_text()

    def broken_replace(self, target):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("pathlib.Path.replace", broken_replace)
    with pytest.raises(OSError, match="No space"):
        write_status_file(path, running_status(state=State.STOPPING))
    assert path.read_text() == before
    assert os.listdir(tmp_path) == ["status.json"]


def test_writer_logs_instead_of_raising(tmp_path, caplog):
    writer = StatusWriter(tmp_path / "missing-dir" / "status.json")
    assert writer.write() is False
    assert writer.write() is False
    assert len([r for r in caplog.records if "status file" in r.getMessage()]) == 1  # once
    writer.path = tmp_path / "status.json"
    writer.status.state = State.RUNNING
    assert writer.write() is True
    assert read_status_file(writer.path).state is State.RUNNING


@pytest.mark.parametrize(
    "content",
    [
        "",
        "{not json",
        "[]",
        '{"state": "running"}',
        '{"state": "dancing", "pid": 1, "server": null, '
        '"client": {"pid": 1, "state": "running"}, "updated_ns": 1}',
        '{"state": "running", "pid": "1", "server": null, '
        '"client": {"pid": 1, "state": "running"}, "updated_ns": 1}',
        '{"state": "running", "pid": 1, "server": {"pid": 1, "state": "running"}, '
        '"client": {"pid": 1, "state": "running"}, "updated_ns": 1}',
    ],
)
def test_corrupt_files_are_reported(tmp_path, content):
    path = tmp_path / "status.json"
    path.write_text(content)
    with pytest.raises(StatusFileError, match="corrupt"):
        read_status_file(path)
    r = runner.invoke(app, ["status", str(path)])
    assert r.exit_code == StatusExit.UNKNOWN
    assert "corrupt status file" in r.stderr


def test_missing_file(tmp_path):
    path = tmp_path / "nope.json"
    with pytest.raises(StatusFileError, match="no status file"):
        read_status_file(path)
    r = runner.invoke(app, ["status", str(path), "--json"])
    assert r.exit_code == StatusExit.UNKNOWN
    assert "--status-json" in r.stderr and r.stdout == ""


def test_status_for_humans(tmp_path):
    path = tmp_path / "status.json"
    write_status_file(path, running_status())
    r = runner.invoke(app, ["status", str(path)])
    assert r.exit_code == StatusExit.RUNNING, r.output
    for word in ("supervisor", "server", "client", "running", str(os.getpid()), "updated"):
        assert word in r.stdout
    assert "stale" not in r.output


def test_status_json_is_the_file(tmp_path):
    path = tmp_path / "status.json"
    write_status_file(path, running_status())
    r = runner.invoke(app, ["status", str(path), "--json"])
    assert r.exit_code == StatusExit.RUNNING
    assert json.loads(r.stdout) == json.loads(path.read_text())


def test_status_shows_the_hold_in_progress_and_its_reason(tmp_path):
    path = tmp_path / "status.json"
    hold = ClientStatus(os.getpid(), State.RUNNING, 3.25, "server lost", 7.5)
    write_status_file(path, running_status(client=hold))
    assert read_status_file(path).client == hold
    r = runner.invoke(app, ["status", str(path)])
    assert r.exit_code == StatusExit.RUNNING
    assert "holding" in r.stdout and "3.2 s" in r.stdout and "server lost" in r.stdout
    assert "7.5 s" in r.stdout
    data = json.loads(path.read_text())
    data["client"]["hold_s"] = -1
    path.write_text(json.dumps(data))
    assert runner.invoke(app, ["status", str(path)]).exit_code == StatusExit.UNKNOWN


def test_status_shows_each_robot_of_a_fleet_with_its_own_hold(tmp_path):
    path = tmp_path / "status.json"
    me, running = os.getpid(), State.RUNNING
    robots = {"left": ClientStatus(me, running, 0.0, "", 0.5),
              "right": ClientStatus(me, State.FAILED, 2.5, "server lost", 9.0)}  # fmt: skip
    write_status_file(path, running_status(client=robots["left"], robots=robots))
    assert read_status_file(path).robots == robots
    r = runner.invoke(app, ["status", str(path)])
    assert r.exit_code == StatusExit.RUNNING
    left, right = (r.stdout.index(f"client {n}") for n in ("left", "right"))
    assert left < right < r.stdout.index("server lost")  # right's hold under right's row
    assert "failed" in r.stdout[right:] and "9.0 s" in r.stdout[right:]
    data = json.loads(path.read_text())
    data["robots"]["right"]["state"] = "dancing"
    path.write_text(json.dumps(data))
    assert runner.invoke(app, ["status", str(path)]).exit_code == StatusExit.UNKNOWN


def test_a_finished_run_is_not_running_and_not_stale(tmp_path):
    path = tmp_path / "status.json"
    gone = dead_pid()
    stopped = State.STOPPED
    write_status_file(
        path, RunStatus(stopped, gone, ServerStatus(gone, stopped), ClientStatus(gone, stopped))
    )
    r = runner.invoke(app, ["status", str(path)])
    assert r.exit_code == StatusExit.NOT_RUNNING
    assert "stopped" in r.stdout and "stale" not in r.output and "gone" not in r.output


def test_a_stale_file_says_so(tmp_path):
    path = tmp_path / "status.json"
    gone = dead_pid()
    write_status_file(path, running_status(pid=gone, client=ClientStatus(gone, State.RUNNING)))
    r = runner.invoke(app, ["status", str(path)])
    assert r.exit_code == StatusExit.DEAD
    assert f"supervisor pid {gone} is gone" in r.stderr
    assert "stale" in r.stdout and "(gone)" in r.stdout  # the dead client is marked too
    r = runner.invoke(app, ["status", str(path), "--json"])
    assert r.exit_code == StatusExit.DEAD
    assert json.loads(r.stdout)["pid"] == gone and "stale" in r.stderr
