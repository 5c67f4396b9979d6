"""Stray writes into a real segment, region by region: each one is found before it is used,
ends the session on both ends (SegmentCorrupt), and never raises anything else.

Both ends live in this process; the drills against a running `up --local` are in
test_faults_shm_corruption.py.
"""

from __future__ import annotations

import logging
import platform
import struct
import threading
import time
import zlib

import numpy as np
import pytest
from shm_configs import fast_config
from stray_writer import StrayWriter

from asyncinf.runtime.errors import LayoutError, SegmentCorrupt
from asyncinf.runtime.messages import ActionChunk, ErrorMessage, HandshakeReply, Observation
from asyncinf.runtime.testing import hello
from asyncinf.transports.shm import (
    ShmClientTransport,
    ShmServerTransport,
    ShmSession,
    names,
)
from asyncinf.transports.shm import layout as L
from asyncinf.transports.shm.config import MiB

CAM = (48, 64, 3)


def observation(t: int) -> Observation:
    now = time.monotonic_ns()
    return Observation(t, now, np.array([t, -t], np.float32), {"front": np.full(CAM, 7, np.uint8)})


def chunk(t: int, value: float = 1.0) -> ActionChunk:
    return ActionChunk(t, np.full((4, 2), value, np.float32))


@pytest.fixture
def linked(run_id, request):
    """(segment, client, server), handshake done, on a session made with `fast_config(**param)`."""
    kw = getattr(request, "param", {})
    with ShmSession.create(run_id, 0, fast_config(**kw)) as session:
        client = ShmClientTransport.attach(session.name)
        server = ShmServerTransport.attach(session.name)
        seg = StrayWriter.of_session(session)
        try:

            def serve() -> None:
                if server.accept(10) is not None:
                    server.reply(HandshakeReply(True, {"front": CAM}, ["a.pos", "b.pos"], 4))

            t = threading.Thread(target=serve)
            t.start()
            client.handshake(hello({"front": CAM}), 10)
            t.join(10)
            yield seg, client, server
        finally:
            client.close()
            server.close()
            seg.close()


def assert_both_ends_refuse(client, server, found_in: str) -> None:
    """After one end found corruption, every call of either end raises SegmentCorrupt."""
    with pytest.raises(SegmentCorrupt, match=found_in):
        client.receive(0.0)
    with pytest.raises(SegmentCorrupt, match=found_in):
        client.send_observation(observation(99))
    with pytest.raises(SegmentCorrupt, match=found_in):
        server.next_observation(0.0)
    with pytest.raises(SegmentCorrupt, match=found_in):
        server.publish_chunk(chunk(99), 0.1)


# --- chunk and control frames ----------------------------------------------------------------


def test_a_corrupted_action_float_is_never_delivered(linked) -> None:
    seg, client, server = linked
    server.publish_chunk(chunk(0, 1.0), 1.0)
    nbytes = seg.entry(seg.layout.chunks, 0)
    first_action = seg.layout.chunks.slot_offset(0) + nbytes - 4 * 2 * 4
    seg.write(first_action, struct.pack("<f", 109.0))  # finite, well-formed, wrong
    with pytest.raises(SegmentCorrupt, match="chunk frame: CRC-32"):
        client.receive(1.0)
    assert client.stats().corruption_found == 1
    assert_both_ends_refuse(client, server, "chunk frame")


@pytest.mark.parametrize("linked", [{"checksum": "none"}], indirect=True)
def test_without_checksums_the_same_write_gets_through(linked) -> None:
    """What the CRC is for: the same stray write, unchecked, arrives as an action."""
    seg, client, server = linked
    server.publish_chunk(chunk(0, 1.0), 1.0)
    nbytes = seg.entry(seg.layout.chunks, 0)
    seg.write(seg.layout.chunks.slot_offset(0) + nbytes - 4 * 2 * 4, struct.pack("<f", 109.0))
    got = client.receive(1.0)
    assert isinstance(got, ActionChunk) and got.actions[0, 0] == 109.0


def test_a_corrupted_error_frame_on_the_control_ring_is_refused(linked) -> None:
    seg, client, server = linked
    server.send_error(ErrorMessage("inference", "boom", 3))
    slot = seg.word(L.W_DNCTL_TAIL) % seg.layout.dnctl.slots
    seg.write(seg.layout.dnctl.slot_offset(slot) + 40, b"\xff")
    with pytest.raises(SegmentCorrupt, match="server→client control ring: CRC-32"):
        client.receive(1.0)
    assert_both_ends_refuse(client, server, "server→client control ring")


def test_a_corrupted_handshake_ends_in_one_log_line_not_a_replay(run_id, caplog) -> None:
    with ShmSession.create(run_id, 0, fast_config()) as session:
        seg = StrayWriter.of_session(session)
        client = ShmClientTransport.attach(session.name)
        server = ShmServerTransport.attach(session.name)
        errors: list[BaseException] = []

        def shake() -> None:
            try:
                client.handshake(hello(), 5.0)
            except BaseException as exc:
                errors.append(exc)

        t = threading.Thread(target=shake)
        with caplog.at_level(logging.WARNING):
            t.start()
            deadline = time.monotonic() + 5
            while seg.word(L.W_UPCTL_HEAD) == 0 and time.monotonic() < deadline:
                time.sleep(0.005)
            seg.write(seg.layout.upctl.slot_offset(0) + 20, b"\x00\xff\x00")
            for _ in range(5):
                assert server.accept(0.05) is None
            t.join(10)
        try:
            assert len(errors) == 1 and isinstance(errors[0], SegmentCorrupt), errors
            assert "client→server control ring" in str(errors[0])
            lines = [r for r in caplog.records if "corrupt" in r.getMessage()]
            assert len(lines) == 1, [r.getMessage() for r in lines]
        finally:
            client.close()
            server.close()
            seg.close()


# --- ring heads and tails ----------------------------------------------------------------------


CHUNK_AND_DOWN_CONTROL = [
    ("chunk head past the ring", L.W_CHUNK_HEAD, lambda w: w + 9, "chunk ring: head"),
    ("chunk head huge", L.W_CHUNK_HEAD, lambda w: 10**15, "chunk ring: head"),
    ("chunk head one ahead, empty slot", L.W_CHUNK_HEAD, lambda w: w + 1, "chunk ring"),
    ("chunk tail negative", L.W_CHUNK_TAIL, lambda w: -5, "chunk ring: tail"),
    ("chunk tail back: a replay", L.W_CHUNK_TAIL, lambda w: w - 1, "chunk ring: tail"),
    ("control head huge", L.W_DNCTL_HEAD, lambda w: 2**62, "server→client control ring"),
    ("control tail back", L.W_DNCTL_TAIL, lambda w: w - 1, "server→client control ring"),
]


@pytest.mark.parametrize(("what", "word", "value", "match"), CHUNK_AND_DOWN_CONTROL)
def test_the_client_checks_the_down_rings_indexes(linked, what, word, value, match) -> None:
    seg, client, server = linked
    server.publish_chunk(chunk(0), 1.0)  # one chunk taken, so a tail can go back
    assert isinstance(client.receive(1.0), ActionChunk)
    seg.poke(word, value(seg.word(word)))
    with pytest.raises(SegmentCorrupt, match=match):
        client.receive(0.2)


UP_CONTROL = [
    ("control head huge", L.W_UPCTL_HEAD, lambda w: 10**12, "client→server control ring: head"),
    ("control head one ahead", L.W_UPCTL_HEAD, lambda w: w + 1, "client→server control ring"),
    ("control tail back: the hello again", L.W_UPCTL_TAIL, lambda w: w - 1, "went back"),
]


@pytest.mark.parametrize(("what", "word", "value", "match"), UP_CONTROL)
def test_the_server_checks_the_up_control_rings_indexes(linked, what, word, value, match) -> None:
    seg, client, server = linked
    seg.poke(word, value(seg.word(word)))
    with pytest.raises(SegmentCorrupt, match=match):
        server.next_observation(0.2)
    assert_both_ends_refuse(client, server, "found by the server")


def test_a_down_seq_that_went_back_is_refused(linked) -> None:
    seg, _client, server = linked
    server.publish_chunk(chunk(0), 1.0)
    seg.poke(L.W_DOWN_SEQ, 0)
    with pytest.raises(SegmentCorrupt, match="down_seq = 0"):
        server.publish_chunk(chunk(1), 1.0)


# --- observations ----------------------------------------------------------------------------


def _published(seg: StrayWriter, client) -> tuple[int, int]:
    """Send one observation; (its slot's byte offset, its frame's length)."""
    client.send_observation(observation(1))
    slot = seg.word(L.W_OBS_LATEST)
    return seg.layout.obs.slot_offset(slot), seg.entry(seg.layout.obs, slot)


@pytest.mark.parametrize(
    "linked", [{"checksum": "frames"}, {"checksum": "none"}], indirect=True, ids=["crc", "nocrc"]
)
def test_a_corrupted_observation_header_never_reaches_the_policy(linked) -> None:
    seg, client, server = linked
    offset, _n = _published(seg, client)
    seg.write(offset + 4, b"\xff\xff\xff\x7f")  # the frame's header length
    with pytest.raises(SegmentCorrupt, match="observation frame"):
        server.next_observation(1.0)
    assert_both_ends_refuse(client, server, "observation frame")


def test_a_corrupted_state_is_caught_by_the_default_checksum(linked) -> None:
    seg, client, server = linked
    offset, n = _published(seg, client)
    frame = bytes(seg.mm[offset : offset + n])
    state_at = frame.index(np.array([1, -1], np.float32).tobytes())
    seg.write(offset + state_at, struct.pack("<f", 55.0))
    with pytest.raises(SegmentCorrupt, match="observation frame: CRC-32"):
        server.next_observation(1.0)


@pytest.mark.parametrize(
    ("linked", "caught"),
    [({"checksum": "all"}, True), ({"checksum": "frames"}, False)],
    indirect=["linked"],
    ids=["all", "frames"],
)
def test_image_bytes_are_checked_with_checksum_all_only(linked, caught) -> None:
    seg, client, server = linked
    offset, n = _published(seg, client)
    seg.write(offset + n - 1, b"\x00")  # the last pixel (7 before)
    if caught:
        with pytest.raises(SegmentCorrupt, match="observation frame: CRC-32"):
            server.next_observation(1.0)
    else:
        lease = server.next_observation(1.0)
        with lease:
            assert lease.observation.images["front"][-1, -1, -1] == 0


OBS_TABLE = [
    ("frame_bytes", lambda s: s.layout.obs.entry(s.word(L.W_OBS_LATEST)), 2 * MiB, "frame_bytes"),
    ("entry seq", lambda s: s.layout.obs.entry(s.word(L.W_OBS_LATEST)) + 2, 77, "holds frame 77"),
    ("crc", lambda s: s.layout.obs.entry(s.word(L.W_OBS_LATEST)) + 3, 1, "CRC-32"),
    ("crc_bytes", lambda s: s.layout.obs.entry(s.word(L.W_OBS_LATEST)) + 4, -1, "crc_bytes"),
    ("sent_ns", lambda s: s.layout.obs.entry(s.word(L.W_OBS_LATEST)) + 1, 5, "the table says 5"),
    ("obs_latest", lambda s: L.W_OBS_LATEST, 7, "obs_latest = 7"),
    ("obs_leased", lambda s: L.W_OBS_LEASED, 99, "obs_leased = 99"),
    ("obs_taken_seq", lambda s: L.W_OBS_TAKEN, 10**9, "obs_taken_seq"),
    ("obs_seq back", lambda s: L.W_OBS_SEQ, 0, "obs_taken_seq = 1, outside"),
]


@pytest.mark.parametrize(("what", "word", "value", "match"), OBS_TABLE)
def test_the_observation_table_and_indexes_are_checked(linked, what, word, value, match) -> None:
    seg, client, server = linked
    client.send_observation(observation(1))
    with server.next_observation(1.0):
        pass  # the server has taken seq 1: a seq of 0 now went back
    client.send_observation(observation(2))
    seg.poke(word(seg), value)
    with pytest.raises(SegmentCorrupt, match=match):
        server.next_observation(1.0)


def test_the_client_checks_the_slot_indexes_it_picks_from(linked) -> None:
    seg, client, _server = linked
    seg.poke(L.W_OBS_LEASED, -9)
    with pytest.raises(SegmentCorrupt, match="obs_leased = -9"):
        client.send_observation(observation(1))


# --- pid words and the header ------------------------------------------------------------------


@pytest.mark.parametrize("pid", [2**40, 2**63 - 1, -7])
def test_a_garbage_pid_is_corruption_not_an_overflow(linked, pid) -> None:
    seg, client, _server = linked
    seg.poke(L.W_SERVER_PID, pid)
    with pytest.raises(SegmentCorrupt, match=f"pid word: server_pid = {pid}"):
        client.receive(0.3)  # a slice passes: the peer check reads the word
    assert not names.pid_alive(pid)


def test_the_supervisors_view_survives_a_garbage_pid(run_id) -> None:
    with ShmSession.create(run_id, 0, fast_config()) as session:
        seg = StrayWriter.of_session(session)
        try:
            seg.poke(L.W_CLIENT_PID, 2**62)
            assert session.heartbeats()["client"].alive is False
        finally:
            seg.close()


def test_a_corrupt_segment_serves_no_new_session(linked) -> None:
    seg, client, server = linked
    seg.poke(L.W_CHUNK_HEAD, -3)
    with pytest.raises(SegmentCorrupt):
        client.receive(0.0)
    client.close()
    with (
        ShmClientTransport.attach(client.name) as again,
        pytest.raises(SegmentCorrupt, match=r"chunk ring \(found by the client\)"),
    ):
        again.handshake(hello(), 1.0)
    assert server.accept(0.05) is None


def test_a_garbage_checksum_field_is_a_layout_error(run_id) -> None:
    with ShmSession.create(run_id, 0, fast_config()) as session:
        seg = StrayWriter.of_session(session)
        try:
            seg.poke(L.W_CHECKSUM, 9)
            with pytest.raises(LayoutError, match="'checksum' expected"):
                ShmClientTransport.attach(session.name)
        finally:
            seg.close()


@pytest.mark.parametrize("size", [0, 1, 63, 2_900, 1 << 20])
def test_the_crc_is_zlibs_whichever_library_computes_it(size):
    # Ends installed on different platforms (isal's where it has wheels, zlib's elsewhere)
    # must agree on every frame.
    from asyncinf.transports.shm import integrity

    data = np.random.default_rng(size).integers(0, 256, size, np.uint8).tobytes()
    view = memoryview(bytearray(data))
    assert integrity.crc32(view) == zlib.crc32(data)
    assert integrity.crc32(view[size // 3 :]) == zlib.crc32(data[size // 3 :])


@pytest.mark.skipif(
    platform.machine() not in ("x86_64", "aarch64"), reason="isal is installed on x86-64/aarch64"
)
def test_isal_computes_the_crc_where_pyproject_installs_it():
    from isal import isal_zlib

    from asyncinf.transports.shm import integrity

    assert integrity.crc32 is isal_zlib.crc32
