"""Owning, naming, checking and cleaning up shared-memory sessions."""

from __future__ import annotations

import mmap
import os
import subprocess
import sys

import numpy as np
import posix_ipc
import pytest
from typer.testing import CliRunner

from asyncinf.runtime.cli import app
from asyncinf.runtime.errors import ConfigError, LayoutError, TransportError
from asyncinf.runtime.messages import ActionChunk
from asyncinf.transports.shm import (
    ShmClientTransport,
    ShmConfig,
    ShmServerTransport,
    ShmSession,
    WhenFull,
    names,
)
from asyncinf.transports.shm import layout as L
from asyncinf.transports.shm.config import KiB, MiB

SMALL = dict(obs_slot_bytes=64 * KiB, chunk_slot_bytes=16 * KiB, control_slot_bytes=4 * KiB)


def objects_of(session_name: str) -> list[str]:
    return [o.name for o in names.list_objects() if o.session == session_name]


# --- ownership -----------------------------------------------------------------------------


def test_create_makes_one_segment_and_five_semaphores_and_unlink_removes_them(run_id) -> None:
    session = ShmSession.create(run_id, 3, ShmConfig(**SMALL))
    assert session.name == f"asyncinf.{run_id}.g3"
    found = {(o.role, o.semaphore) for o in names.list_objects() if o.session == session.name}
    assert found == {("seg", False)} | {(r, True) for r in names.SEMAPHORES}
    assert (names.SHM_DIR / f"{session.name}.seg").exists()
    assert (names.SHM_DIR / f"sem.{session.name}.uplock").exists()
    session.unlink()
    assert objects_of(session.name) == []
    session.unlink()  # twice is fine


def test_create_refuses_an_existing_session_and_leaves_it_alone(run_id) -> None:
    with ShmSession.create(run_id, 0, ShmConfig(**SMALL)) as first:
        with pytest.raises(TransportError, match="already exists"):
            ShmSession.create(run_id, 0, ShmConfig(**SMALL))
        assert len(objects_of(first.name)) == 6
        with ShmClientTransport.attach(first.name):
            pass


def test_a_create_that_fails_half_way_removes_what_it_made(run_id) -> None:
    name = names.session_name(run_id, 0)
    squatter = posix_ipc.Semaphore(names.object_name(name, names.DOWN_LOCK), posix_ipc.O_CREX)
    try:
        with pytest.raises(TransportError, match="downlock already exists"):
            ShmSession.create(run_id, 0, ShmConfig(**SMALL))
        assert objects_of(name) == [f"{name}.downlock"]  # only the one it did not make
    finally:
        squatter.unlink()
        squatter.close()


def test_attach_to_a_missing_session_says_so(run_id) -> None:
    with pytest.raises(TransportError, match="no shared-memory session"):
        ShmClientTransport.attach(names.session_name(run_id, 0))
    with pytest.raises(TransportError, match="not a shared-memory session name"):
        ShmServerTransport.attach("/etc/passwd")


def test_session_unlinked_while_attached_keeps_working_for_the_attached(run_id) -> None:
    session = ShmSession.create(run_id, 0, ShmConfig(**SMALL))
    client = ShmClientTransport.attach(session.name)
    server = ShmServerTransport.attach(session.name)
    session.unlink()
    assert objects_of(session.name) == []
    server.publish_chunk(_chunk(1), 1)
    assert client.receive(1).timestep == 1
    client.close()
    server.close()


def _chunk(t: int) -> ActionChunk:
    return ActionChunk(t, np.zeros((2, 2), np.float32))


# --- layout checks -------------------------------------------------------------------------


def _poke(session: ShmSession, word: int | None = None, value: int = 0, raw: bytes = b"") -> None:
    """Write into a session's header behind its back."""
    shm = posix_ipc.SharedMemory(names.object_name(session.name, names.SEGMENT))
    try:
        with mmap.mmap(shm.fd, L.PAGE) as mm:
            if raw:
                mm[0 : len(raw)] = raw
            if word is not None:
                mm[word * 8 : word * 8 + 8] = value.to_bytes(8, "little", signed=True)
    finally:
        shm.close_fd()


@pytest.mark.parametrize(
    ("poke", "field", "expected", "got"),
    [
        (dict(raw=b"notasync"), "magic", "b'asyncinf'", "b'notasync'"),
        (dict(word=L.W_VERSION, value=99), "layout_version", "2", "99"),
        (dict(word=L.W_GENERATION, value=5), "generation", "0", "5"),
        (dict(word=L.W_CHUNK_SLOTS, value=9), "segment_bytes", None, None),
        (dict(word=L.W_OBS_SLOTS, value=400), "header_bytes", None, None),
        (dict(word=L.W_SEGMENT_BYTES, value=1), "segment_bytes", None, "1"),
        (dict(word=L.W_WHEN_FULL, value=7), "when_full", None, "7"),
    ],
    ids=lambda v: str(v) if not isinstance(v, dict) else next(iter(v.items()))[1],
)
def test_attach_checks_the_header_and_names_the_field(run_id, poke, field, expected, got) -> None:
    with ShmSession.create(run_id, 0, ShmConfig(**SMALL)) as session:
        _poke(session, **poke)
        for end in (ShmClientTransport, ShmServerTransport):
            with pytest.raises(LayoutError) as info:
                end.attach(session.name)
            msg = str(info.value)
            assert f"field '{field}" in msg and session.name in msg, msg
            if expected is not None:
                assert f"expected {expected}" in msg, msg
            if got is not None:
                assert f"got {got}" in msg, msg


def test_obs_slots_below_three_in_a_header_is_a_layout_error(run_id) -> None:
    with ShmSession.create(run_id, 0, ShmConfig(**SMALL)) as session:
        _poke(session, word=L.W_OBS_SLOTS, value=2)
        with pytest.raises(LayoutError, match="obs_slots=2"):
            ShmClientTransport.attach(session.name)


def test_attach_with_an_expected_config_names_the_differing_size(run_id) -> None:
    with ShmSession.create(run_id, 0, ShmConfig(**SMALL)) as session:
        expected = ShmConfig(**{**SMALL, "obs_slot_bytes": 128 * KiB})
        with pytest.raises(
            LayoutError, match=f"'obs_slot_bytes' expected {128 * KiB}, got {64 * KiB}"
        ):
            ShmServerTransport.attach(session.name, expected)
        ShmServerTransport.attach(session.name, ShmConfig(**SMALL)).close()


def test_a_truncated_segment_is_a_layout_error(run_id) -> None:
    with ShmSession.create(run_id, 0, ShmConfig(**SMALL)) as session:
        shm = posix_ipc.SharedMemory(names.object_name(session.name, names.SEGMENT))
        os.ftruncate(shm.fd, session.layout.segment_bytes - L.PAGE)
        shm.close_fd()
        with pytest.raises(LayoutError, match=r"'segment_bytes \(file size\)'"):
            ShmClientTransport.attach(session.name)
        shm = posix_ipc.SharedMemory(names.object_name(session.name, names.SEGMENT))
        os.ftruncate(shm.fd, 100)
        shm.close_fd()
        with pytest.raises(LayoutError, match="'segment_bytes' expected >= 384, got 100"):
            ShmClientTransport.attach(session.name)


def test_layout_offsets_match_the_comment_block() -> None:
    lay = L.Layout.compute(ShmConfig(), 0)
    doc = L.__doc__
    for word, name in [
        (L.W_CLIENT_PID, "client_pid"),
        (L.W_SERVER_HB, "server_heartbeat_ns"),
        (L.W_OBS_SEQ, "obs_seq"),
        (L.W_DOWN_SEQ, "down_seq"),
        (L.W_DNCTL_DROPPED, "dnctl_dropped"),
        (L.W_TABLES, "obs table"),
    ]:
        assert f"{word * 8:>10}  {name}" in doc, name
    assert lay.header_bytes % L.PAGE == 0 and lay.obs.data == lay.header_bytes
    assert all(a.data % L.PAGE == 0 and a.stride % L.PAGE == 0 for a in (lay.obs, lay.chunks))
    assert lay.dnctl.data + lay.dnctl.slots * lay.dnctl.stride == lay.segment_bytes
    # Heartbeat words on their own cache lines, away from the locked state.
    assert {L.W_CLIENT_HB * 8 // 64, L.W_SERVER_HB * 8 // 64, L.W_OBS_SEQ * 8 // 64} == {2, 3, 4}


# --- config ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        (dict(obs_slots=2), r"obs_slots=2 \(--shm.obs_slots\) must be an integer in \[3, "),
        (dict(chunk_slots=0), r"chunk_slots=0"),
        (dict(obs_slot_bytes=100), r"obs_slot_bytes=100 \(--shm.obs_slot_mb\)"),
        (dict(obs_slot_mb=0), r"--shm.obs_slot_mb=0 must be a positive number"),
        (dict(obs_slot_mb="big"), r"--shm.obs_slot_mb='big'"),
        (dict(when_full="drop"), r"--shm.when_full='drop' is not a policy; choose one of"),
        (dict(heartbeat_interval_s=0), r"--shm.heartbeat_interval_s=0 must be seconds"),
        (dict(peer_timeout_s=0.15), r"at least twice --shm.heartbeat_interval_s=0.1"),
        (dict(control_slots=1.5), r"control_slots=1.5"),
    ],
)
def test_config_errors_name_field_value_and_fix(kw, match) -> None:
    with pytest.raises(ConfigError, match=match):
        ShmConfig(**kw)


def test_config_spellings_from_the_command_line() -> None:
    cfg = ShmConfig(obs_slot_mb=16, when_full="error")
    assert cfg.obs_slot_bytes == 16 * MiB and cfg.when_full is WhenFull.ERROR
    assert cfg.obs_slot_mb is None
    assert ShmConfig(obs_slot_mb=0.5).obs_slot_bytes == 512 * KiB


def test_attach_reads_timings_and_policy_from_the_header(run_id) -> None:
    cfg = ShmConfig(**SMALL, when_full="error", heartbeat_interval_s=0.02, peer_timeout_s=0.3)
    with (
        ShmSession.create(run_id, 0, cfg) as session,
        ShmServerTransport.attach(session.name) as server,
    ):
        got = server.layout.config
        assert got == cfg


# --- names and clean -------------------------------------------------------------------------


def test_names_round_trip_and_refuse_odd_run_ids() -> None:
    rid = names.make_run_id(1234)
    assert rid.startswith("1234-") and len(rid) == 13
    obj = names.parse(f"sem.asyncinf.{rid}.g7.uplock")
    assert obj is not None and obj.semaphore and obj.pid == 1234 and obj.generation == 7
    assert obj.role == "uplock" and obj.session == f"asyncinf.{rid}.g7"
    assert names.parse(f"asyncinf.{rid}.g7.seg").pid == 1234
    assert names.parse("asyncinf.conf1234abcd.g0.seg").pid is None  # no pid: never judged
    for other in ("psm_1234", "sem.mp-abc", "asyncinf.a/b.g0.seg", "asyncinf.x.gx.seg"):
        assert names.parse(other) is None
    for bad in ("a.b", "a/b", "", "x" * 65):
        with pytest.raises(ConfigError, match="run id"):
            names.session_name(bad, 0)


def dead_run_id() -> str:
    """A run id whose pid has exited (the conftest leaves `<pid>-dead…` runs to this test)."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    pid = int(done.stdout)
    assert not names.pid_alive(pid)
    return f"{pid}-dead{os.urandom(2).hex()}"


def test_clean_removes_a_dead_runs_objects_and_leaves_a_live_ones(run_id) -> None:
    crashed = ShmSession.create(dead_run_id(), 0, ShmConfig(**SMALL))
    crashed.close()  # its owner "died": nobody will unlink these
    dead = crashed.name
    try:
        assert len(objects_of(dead)) == 6
        with ShmSession.create(run_id, 0, ShmConfig(**SMALL)) as live:
            runner = CliRunner()
            dry = runner.invoke(app, ["clean", "--dry-run"])
            assert dry.exit_code == 0, dry.output
            assert f"would remove /dev/shm/{dead}.seg" in dry.output
            assert f"would remove /dev/shm/sem.{dead}.uplock" in dry.output
            assert live.name not in dry.output
            assert len(objects_of(dead)) == 6  # a dry run removes nothing
            done = runner.invoke(app, ["clean"])
            assert done.exit_code == 0, done.output
            assert f"removed /dev/shm/{dead}.seg" in done.output
            assert objects_of(dead) == []
            assert len(objects_of(live.name)) == 6
            ShmClientTransport.attach(live.name).close()  # still usable
    finally:
        crashed.unlink()


def test_clean_leaves_names_without_a_pid_alone(tmp_path) -> None:
    (tmp_path / "asyncinf.confabc.g0.seg").touch()
    (tmp_path / "sem.asyncinf.1-x.g0.uplock").touch()  # pid 1 is alive
    (tmp_path / "unrelated").touch()
    assert names.clean_stale(dry_run=True, shm_dir=tmp_path) == []
    assert [o.name for o in names.list_objects(tmp_path)] == [
        "asyncinf.1-x.g0.uplock",
        "asyncinf.confabc.g0.seg",
    ]
