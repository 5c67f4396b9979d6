"""The fixed header of observations and chunks: every count and byte of it is checked like a
msgpack header's, and a cached array table or head spares only checks that equal bytes pass
alike."""

from __future__ import annotations

import contextlib
import struct

import msgpack
import numpy as np
import pytest
from frames import fixed_header
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncinf.runtime.errors import CodecError, SchemaVersionError
from asyncinf.runtime.messages import SCHEMA_VERSION, ActionChunk, Observation
from asyncinf.transports import codec


def obs_frame(task: str = "stack the cubes") -> bytearray:
    obs = Observation(5, 6, np.arange(4, dtype=np.float32), {"front": np.ones((2, 2, 3), np.uint8)})
    obs.task = task
    return bytearray(codec.encode(obs))


def _with_table(frame: bytearray, table: list) -> bytearray:
    """`frame` (a chunk: no str fields) with its array table replaced by `table`."""
    hlen = int.from_bytes(frame[4:8], "little")
    at = 16 + codec._FIXED_BY_CODE[frame[10]].scalars.size
    old = int.from_bytes(frame[12:16], "little")
    packed = msgpack.packb(table, use_bin_type=True)
    header = frame[8:at] + packed + frame[at + old : 8 + hlen]
    header[4:8] = len(packed).to_bytes(4, "little")
    start = (8 + len(header) + codec.ALIGN - 1) // codec.ALIGN * codec.ALIGN
    data = frame[(8 + hlen + codec.ALIGN - 1) // codec.ALIGN * codec.ALIGN :]
    return bytearray(
        (codec.FIXED_MAGIC + struct.pack("<I", len(header)) + header).ljust(start, b"\0") + data
    )


def test_observations_and_chunks_have_a_fixed_header_and_the_rest_msgpack() -> None:
    assert bytes(obs_frame()[:4]) == codec.FIXED_MAGIC
    assert codec.encode(ActionChunk(1, np.zeros((2, 3), np.float32)))[:4] == codec.FIXED_MAGIC
    fields, _table = fixed_header(bytes(obs_frame("é")))
    assert fields["task"] == 2  # its UTF-8 byte count; the bytes follow the table
    assert codec.decode(obs_frame("é")).task == "é"


@pytest.mark.parametrize("wrap", [bytes, bytearray, lambda b: memoryview(bytearray(b))])
def test_a_fixed_frame_decodes_from_any_buffer(wrap) -> None:
    got = codec.decode(wrap(bytes(obs_frame("héllo"))))
    assert (got.timestep, got.capture_ns, got.task) == (5, 6, "héllo")
    np.testing.assert_array_equal(got.images["front"], np.ones((2, 2, 3), np.uint8))


def test_another_schema_version_in_a_fixed_header_names_both() -> None:
    frame = obs_frame()
    frame[8:10] = (SCHEMA_VERSION + 1).to_bytes(2, "little")
    with pytest.raises(SchemaVersionError) as info:
        codec.decode(frame)
    assert info.value.theirs == SCHEMA_VERSION + 1 and info.value.ours == SCHEMA_VERSION


@pytest.mark.parametrize(("at", "value"), [(10, 9), (10, 0), (11, 1)])
def test_an_unknown_fixed_kind_or_reserved_byte_is_refused(at, value) -> None:
    frame = obs_frame()
    frame[at] = value
    with pytest.raises(CodecError, match="unknown fixed header kind"):
        codec.decode(frame)


def test_a_str_field_that_is_not_utf8_is_refused() -> None:
    frame = obs_frame("ab")
    hlen = int.from_bytes(frame[4:8], "little")
    frame[8 + hlen - 2] = 0xFF
    with pytest.raises(CodecError, match="'task' is not UTF-8"):
        codec.decode(frame)


def test_a_str_length_past_the_header_is_refused() -> None:
    frame = obs_frame("ab")
    at = 16 + struct.calcsize("<qq")  # timestep, capture_ns, then task's byte count
    frame[at : at + 4] = (1000).to_bytes(4, "little")
    with pytest.raises(CodecError, match="field 'task' needs bytes"):
        codec.decode(frame)


def test_bytes_left_after_the_last_field_are_refused() -> None:
    frame = obs_frame("ab")
    at = 16 + struct.calcsize("<qq")
    frame[at : at + 4] = (1).to_bytes(4, "little")
    with pytest.raises(CodecError, match="1 B after its last field"):
        codec.decode(frame)


def test_a_cached_table_still_has_its_bounds_checked_on_every_frame() -> None:
    frame = bytes(obs_frame())
    codec.decode(frame)  # the table is checked and cached
    for n in range(len(frame) - 1, len(frame) - 40, -1):
        with pytest.raises(CodecError, match="truncated frame: array '"):
            codec.decode(frame[:n])


def test_a_cached_head_still_has_its_frame_bounds_and_str_fields_checked() -> None:
    frame = obs_frame("ab")
    codec.decode(bytes(frame))  # its first 16 bytes are checked and cached
    assert bytes(frame[:16]) in codec._HEADS
    hlen = int.from_bytes(frame[4:8], "little")
    with pytest.raises(CodecError, match="header claims"):
        codec.decode(bytes(frame[: 8 + hlen - 1]))
    at = 16 + struct.calcsize("<qq")  # past the cached 16 bytes: task's byte count
    frame[at : at + 4] = (1000).to_bytes(4, "little")
    with pytest.raises(CodecError, match="field 'task' needs bytes"):
        codec.decode(frame)


def test_the_decode_head_cache_is_bounded() -> None:
    for n in range(codec.PLAN_CACHE_SIZE + 10):
        codec.decode(bytes(obs_frame("x" * n)))  # each length its own header length
    assert len(codec._HEADS) <= codec.PLAN_CACHE_SIZE


@pytest.mark.parametrize(
    ("table", "match"),
    [
        ([["actions", "<f8", [2, 3], 0, 48]], "'actions' must be float32 with 2 dims"),
        ([["actions", "<f4", [6], 0, 24]], "'actions' must be float32 with 2 dims"),
        ([["actions", "|O", [2, 3], 0, 48]], "refused"),
        ([["actions", "<f4", [2, 3], 0, 20]], "does not match shape"),
        ([["other", "<f4", [2, 3], 0, 24]], "array 'actions' is missing"),
        ({"actions": 1}, "the array table must be a list"),
    ],
)
def test_a_bad_table_is_refused_every_time_and_never_cached(table, match) -> None:
    frame = _with_table(bytearray(codec.encode(ActionChunk(1, np.ones((2, 3), np.float32)))), table)
    for _ in range(2):
        with pytest.raises(CodecError, match=match):
            codec.decode(frame)


def test_a_table_that_is_not_msgpack_is_refused() -> None:
    frame = bytearray(codec.encode(ActionChunk(1, np.ones((2, 3), np.float32))))
    at = 16 + codec._FIXED_BY_CODE[frame[10]].scalars.size
    frame[at] = 0xC1  # never used in msgpack
    with pytest.raises(CodecError, match="malformed array table"):
        codec.decode(frame)


def test_the_decode_table_cache_is_bounded() -> None:
    for n in range(codec.PLAN_CACHE_SIZE + 10):
        codec.decode(codec.encode(ActionChunk(0, np.zeros((n, 2), np.float32))))
    assert len(codec._FIXED[ActionChunk].plans) <= codec.PLAN_CACHE_SIZE


@pytest.mark.parametrize(
    ("obs", "match"),
    [
        (Observation(2**63, 0, np.zeros(2, np.float32)), "'timestep' = 9223372036854775808"),
        (Observation(0, 0.5, np.zeros(2, np.float32)), "'capture_ns' = 0.5"),
        (Observation(0, 0, np.zeros(2, np.float32), task=3), "'task' must be a string"),
    ],
)
def test_a_field_the_fixed_header_cannot_carry_is_refused_naming_it(obs, match) -> None:
    with pytest.raises(CodecError, match=match):
        codec.encode(obs)


@settings(max_examples=200)
@given(data=st.data())
def test_any_byte_changed_in_a_fixed_header_decodes_or_is_a_codec_error(data) -> None:
    frame = obs_frame()
    hlen = int.from_bytes(frame[4:8], "little")
    at = data.draw(st.integers(4, 8 + hlen - 1))
    frame[at] = data.draw(st.integers(0, 255))
    with contextlib.suppress(CodecError):
        codec.decode(frame)
