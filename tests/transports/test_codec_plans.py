"""The codec's cached encode plans and its reader-free decode of plain fields: a plan is
reused only for the layout it was made for, and nothing a plan skips is left unchecked."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
from frames import fixed_header

from asyncinf.runtime.errors import CodecError
from asyncinf.runtime.messages import SCHEMA_VERSION, ActionChunk, Heartbeat, Observation
from asyncinf.transports import codec


def test_a_fixed_header_carries_every_scalar_field_and_the_array_table() -> None:
    obs = Observation(3, 4, np.ones(5, np.float32), {"front": np.zeros((2, 3, 3), np.uint8)})
    frame = codec.encode(obs)
    fields, table = fixed_header(frame)
    assert int.from_bytes(frame[8:10], "little") == SCHEMA_VERSION
    assert fields == {
        "timestep": 3,
        "capture_ns": 4,
        "task": 0,
        "must_go": False,
        "sent_ns": 0,
        "inference_delay": -1,
    }  # fmt: skip  (a str field holds its UTF-8 length; its bytes follow the table)
    assert [row[:3] for row in table] == [
        ["state", "<f4", [5]], ["prev_chunk_left_over", "<f4", [0, 0]],
        ["image/front", "|u1", [2, 3, 3]],
    ]  # fmt: skip


def test_a_msgpack_header_is_the_whole_map_packed_at_once() -> None:
    frame = codec.encode(Heartbeat(5, 6))
    hlen = int.from_bytes(frame[4:8], "little")
    header = msgpack.unpackb(frame[8 : 8 + hlen])
    assert frame[8 : 8 + hlen] == msgpack.packb(header, use_bin_type=True)
    assert header == {"v": SCHEMA_VERSION, "k": "heartbeat", "f": {"seq": 5, "sent_ns": 6}, "a": []}


def test_a_new_shape_makes_a_new_plan_and_the_old_one_stays_right() -> None:
    small = ActionChunk(1, np.arange(6, dtype=np.float32).reshape(2, 3))
    large = ActionChunk(2, np.arange(20, dtype=np.float32).reshape(4, 5))
    for msg in (small, large, small, large):  # alternating shapes: each plan reused
        got = codec.decode(codec.encode(msg))
        assert got.timestep == msg.timestep
        np.testing.assert_array_equal(got.actions, msg.actions)
    assert fixed_header(codec.encode(large))[1][0][2] == [4, 5]
    assert fixed_header(codec.encode(small))[1][0][2] == [2, 3]


def test_scalar_values_are_packed_per_message_not_kept_in_the_plan() -> None:
    state = np.zeros(4, np.float32)
    for t, task in [(1, ""), (2**40, "a much longer task than before"), (3, "x")]:
        got = codec.decode(codec.encode(Observation(t, t + 1, state, task=task, sent_ns=t)))
        assert (got.timestep, got.capture_ns, got.task, got.sent_ns) == (t, t + 1, task, t)


def test_a_refused_dtype_stays_refused_after_a_good_plan_of_the_same_shape() -> None:
    codec.encode(Observation(0, 0, np.zeros(4, np.float32)))
    for _ in range(2):  # a refusal is not cached as a plan either
        with pytest.raises(CodecError, match="allowed: bool, int, uint, float"):
            codec.encode(Observation(0, 0, np.zeros(4, np.complex64)))


def test_a_wrong_dtype_of_the_same_shape_gets_its_own_plan_and_the_decoder_refuses_it() -> None:
    codec.encode(Observation(0, 0, np.zeros(4, np.float32)))
    frame = codec.encode(Observation(0, 0, np.zeros(4, np.float64)))
    assert fixed_header(frame)[1][0][1] == "<f8"
    with pytest.raises(CodecError, match="'state' must be float32 with 1 dims"):
        codec.decode(frame)


def test_byte_order_and_layout_of_the_array_are_honoured_per_message() -> None:
    native = np.arange(12, dtype="<f4")
    swapped = native.astype(">f4")
    strided = np.arange(24, dtype="<f4")[::2]  # same dtype and shape, not contiguous
    for arr in (native, swapped, strided, native):
        got = codec.decode(codec.encode(Observation(0, 0, arr)))
        assert got.state.dtype == np.dtype("<f4")
        np.testing.assert_array_equal(got.state, arr)


def test_the_plan_cache_is_bounded() -> None:
    for n in range(codec.PLAN_CACHE_SIZE + 10):
        codec.encode(Observation(0, 0, np.zeros(n, np.float32)))
    assert len(codec._PLANS) <= codec.PLAN_CACHE_SIZE


@pytest.mark.parametrize("annotation", sorted(codec.EXACT_TYPES))
def test_the_reader_free_path_agrees_with_each_plain_reader(annotation) -> None:
    exact, zero = codec.EXACT_TYPES[annotation]
    read = codec._READERS[annotation]
    assert read({}, "x") == zero and type(read({}, "x")) is exact


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"seq": True, "sent_ns": 1}, "'seq' must be an integer, got bool"),
        ({"seq": 1.0, "sent_ns": 1}, "'seq' must be an integer, got float"),
        ({"seq": "1", "sent_ns": 1}, "'seq' must be an integer, got str"),
    ],
)
def test_a_plain_field_of_another_type_still_reaches_its_reader(fields, match) -> None:
    header = {"v": SCHEMA_VERSION, "k": "heartbeat", "f": fields, "a": []}
    h = msgpack.packb(header, use_bin_type=True)
    frame = (codec.MAGIC + len(h).to_bytes(4, "little") + h).ljust(64 * 2, b"\0")
    with pytest.raises(CodecError, match=match):
        codec.decode(frame)
    assert codec.decode(codec.encode(Heartbeat(1, 2))) == Heartbeat(1, 2)
