"""The frame codec: round trips of every message, arrays of every allowed dtype and shape,
and typed refusals of everything malformed."""

from __future__ import annotations

import contextlib
import struct

import msgpack
import numpy as np
import pytest
from frames import fixed_header
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from asyncinf.runtime.errors import CodecError, PayloadTooLarge, SchemaVersionError
from asyncinf.runtime.messages import (
    SCHEMA_VERSION,
    ActionChunk,
    ErrorMessage,
    Goodbye,
    HandshakeReply,
    Heartbeat,
    Observation,
    PolicySpec,
)
from asyncinf.runtime.testing import hello
from asyncinf.transports import codec

INT64 = st.integers(-(2**63), 2**63 - 1)
NAMES = st.text(min_size=1, max_size=12)


def observation(t: int = 7) -> Observation:
    return Observation(
        timestep=t,
        capture_ns=123_456_789,
        state=np.arange(6, dtype=np.float32),
        images={
            "front": np.full((4, 5, 3), 9, np.uint8),
            "wrist": np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3),
        },
        task="pick up the cube",
        must_go=True,
        sent_ns=987_654_321,
    )


def chunk() -> ActionChunk:
    return ActionChunk(
        timestep=3,
        actions=np.linspace(0, 1, 50 * 14, dtype=np.float32).reshape(50, 14),
        obs_sent_ns=11,
        queue_wait_ns=22,
        preprocess_ns=33,
        inference_ns=44,
        postprocess_ns=55,
    )


SCALAR_MESSAGES = [
    hello(
        {"front": (480, 640, 3)},
        joint_names=["shoulder_pan.pos", "gripper.pos"],
        policy=PolicySpec("act", "/ckpt", "cuda:0", 50, {"temporal_ensemble": 0.01}),
        task="stack",
    ),
    HandshakeReply(True, {"front": (224, 224, 3)}, ["a", "b"], 50, "ok"),
    HandshakeReply(False, message="no such policy"),
    ErrorMessage("inference", "CUDA out of memory", timestep=12, fatal=True),
    Heartbeat(seq=5, sent_ns=2**62),
    Goodbye("bye"),
    Goodbye(),
]


def assert_same(a: object, b: object) -> None:
    assert type(a) is type(b)
    for name, va in vars(a).items():
        vb = getattr(b, name)
        if isinstance(va, np.ndarray):
            assert va.dtype == vb.dtype and va.shape == vb.shape
            np.testing.assert_array_equal(va, vb)
        elif isinstance(va, dict) and va and isinstance(next(iter(va.values())), np.ndarray):
            assert va.keys() == vb.keys()
            for k in va:
                assert_same_array(va[k], vb[k])
        else:
            assert va == vb, name


def assert_same_array(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(a, b)


# --- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize("msg", [observation(), chunk(), *SCALAR_MESSAGES], ids=repr)
def test_every_message_kind_round_trips(msg) -> None:
    assert_same(codec.decode(codec.encode(msg)), msg)


def test_decoded_arrays_are_zero_copy_views_of_the_buffer() -> None:
    buf = bytearray(codec.encode(observation()))
    got = codec.decode(buf)
    assert got.images["front"][0, 0, 0] == 9
    start = buf.index(bytes(np.full((4, 5, 3), 9, np.uint8)))
    buf[start] = 200  # the view sees writes to the buffer: no copy was made
    assert got.images["front"][0, 0, 0] == 200


def test_a_plan_writes_in_place_and_refuses_a_small_buffer() -> None:
    msg = observation()
    buf = bytearray(1 << 16)
    n = codec.FrameWriter(msg).write(memoryview(buf))
    assert bytes(buf[:n]) == codec.encode(msg)
    with pytest.raises(PayloadTooLarge, match=f"frame of {n} B"):
        codec.FrameWriter(msg).write(bytearray(n - 1))


def test_big_endian_input_is_sent_little_endian() -> None:
    msg = observation()
    msg.state = msg.state.astype(">f4")
    got = codec.decode(codec.encode(msg))
    assert got.state.dtype == np.dtype("<f4")
    np.testing.assert_array_equal(got.state, np.arange(6, dtype=np.float32))


def test_non_contiguous_arrays_are_encoded_by_value() -> None:
    msg = observation()
    msg.images["front"] = np.arange(8 * 10 * 3, dtype=np.uint8).reshape(8, 10, 3)[::2, ::2]
    got = codec.decode(codec.encode(msg))
    np.testing.assert_array_equal(got.images["front"], msg.images["front"])


# --- property tests --------------------------------------------------------------------------

ALLOWED = sorted(codec.ALLOWED_DTYPES)
SHAPES = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5)


def _wire_arrays(frame: bytes) -> dict[str, np.ndarray]:
    """Every array in a frame, read with the codec's own checked entries (any dtype)."""
    (hlen,) = struct.unpack_from("<I", frame, 4)
    data_start = (8 + hlen + codec.ALIGN - 1) // codec.ALIGN * codec.ALIGN
    out = {}
    for e in fixed_header(frame)[1]:
        name, dt, shape, offset, nbytes = codec._entry(e)
        assert data_start + offset + nbytes <= len(frame)
        out[name] = np.ndarray(shape, dt, frame, data_start + offset)
    return out


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), dtype=st.sampled_from(ALLOWED), shape=SHAPES)
def test_arrays_of_every_allowed_dtype_and_shape_cross_the_wire(data, dtype, shape) -> None:
    arr = data.draw(hnp.arrays(np.dtype(dtype), shape))
    frame = codec.encode(Observation(0, 0, arr))  # state of any dtype: encodable as an array
    got = _wire_arrays(frame)["state"]
    assert got.dtype == np.dtype(dtype) and got.shape == arr.shape
    assert got.tobytes() == arr.tobytes()  # bytes, so NaNs and -0.0 compare exactly
    # The message itself only accepts what its fields are: float32 state, 1 dim.
    if np.dtype(dtype) == np.float32 and arr.ndim == 1:
        np.testing.assert_array_equal(codec.decode(frame).state, arr)
    else:
        with pytest.raises(CodecError, match="'state' must be float32 with 1 dims"):
            codec.decode(frame)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(
    t=INT64,
    ns=INT64,
    state=hnp.arrays(np.float32, st.integers(0, 20)),
    images=st.dictionaries(
        NAMES,
        hnp.arrays(np.uint8, hnp.array_shapes(min_dims=3, max_dims=3, min_side=0, max_side=6)),
        max_size=3,
    ),
    task=st.text(max_size=30),
    must_go=st.booleans(),
)
def test_observations_round_trip(t, ns, state, images, task, must_go) -> None:
    msg = Observation(t, ns, state, images, task, must_go, sent_ns=ns)
    got = codec.decode(codec.encode(msg))
    assert (got.timestep, got.capture_ns, got.task, got.must_go) == (t, ns, task, must_go)
    assert got.state.tobytes() == state.tobytes()
    assert got.images.keys() == images.keys()
    for k, img in images.items():
        assert_same_array(got.images[k], img)


@settings(max_examples=100)
@given(actions=hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=2, min_side=0)))
def test_chunks_round_trip(actions) -> None:
    got = codec.decode(codec.encode(ActionChunk(1, actions)))
    assert got.actions.shape == actions.shape
    assert got.actions.tobytes() == actions.tobytes()


# --- refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "arr",
    [
        np.array([object(), 1], dtype=object),
        np.zeros(3, dtype="V4"),
        np.array(["ab", "cd"]),
        np.array([b"ab"]),
        np.array(["2024-01-01"], dtype="datetime64[D]"),
        np.zeros(2, np.complex64),
    ],
    ids=lambda a: a.dtype.str,
)
def test_refuses_to_encode_non_numeric_dtypes(arr) -> None:
    with pytest.raises(CodecError, match="allowed: bool, int, uint, float"):
        codec.encode(Observation(0, 0, arr))


def test_refuses_to_encode_what_is_not_a_message() -> None:
    with pytest.raises(CodecError, match="not a message"):
        codec.encode({"timestep": 1})  # type: ignore[arg-type]


def _frame(header: dict, data: bytes = b"", *, magic: bytes = codec.MAGIC) -> bytes:
    h = msgpack.packb(header, use_bin_type=True)
    start = (8 + len(h) + codec.ALIGN - 1) // codec.ALIGN * codec.ALIGN
    return (magic + struct.pack("<I", len(h)) + h).ljust(start, b"\0") + data


def _obs_header(entry: list) -> dict:
    return {"v": SCHEMA_VERSION, "k": "obs", "f": {"timestep": 1}, "a": [entry]}


def test_size_that_does_not_match_the_shape_is_refused() -> None:
    frame = _frame(_obs_header(["state", "<f4", [4], 0, 12]), bytes(16))
    with pytest.raises(CodecError, match=r"12 B does not match shape \[4\] of <f4 \(16 B\)"):
        codec.decode(frame)


def test_array_past_the_end_is_refused() -> None:
    frame = _frame(_obs_header(["state", "<f4", [4], 0, 16]), bytes(8))
    with pytest.raises(CodecError, match="truncated frame: array 'state' needs bytes"):
        codec.decode(frame)


@pytest.mark.parametrize("shape", [[-1], [2, -3], [True], ["4"], 4, [0.5]])
def test_negative_or_non_integer_dims_are_refused(shape) -> None:
    frame = _frame(_obs_header(["state", "<f4", shape, 0, 16]), bytes(16))
    with pytest.raises(CodecError, match="shape"):
        codec.decode(frame)


@pytest.mark.parametrize("dtype", ["|O", "|V4", "<U2", "|S2", "<M8[D]", "<c8", ">f4", "float32"])
def test_refuses_dtypes_on_the_wire(dtype) -> None:
    frame = _frame(_obs_header(["state", dtype, [2], 0, 8]), bytes(8))
    with pytest.raises(CodecError, match="refused"):
        codec.decode(frame)


def test_bad_magic_is_refused_naming_both() -> None:
    frame = codec.encode(Goodbye())
    with pytest.raises(CodecError, match=r"bad frame magic b'XXXX', expected b'AIFm'"):
        codec.decode(b"XXXX" + frame[4:])


def test_unknown_schema_version_names_both_versions() -> None:
    frame = _frame({"v": SCHEMA_VERSION + 1, "k": "goodbye", "f": {}, "a": []})
    with pytest.raises(SchemaVersionError) as info:
        codec.decode(frame)
    assert info.value.theirs == SCHEMA_VERSION + 1 and info.value.ours == SCHEMA_VERSION
    assert str(SCHEMA_VERSION + 1) in str(info.value) and str(SCHEMA_VERSION) in str(info.value)


@pytest.mark.parametrize(
    "header",
    [
        [1, 2, 3],
        {"k": "goodbye"},
        {"v": "1", "k": "goodbye"},
        {"v": SCHEMA_VERSION, "k": "teleport", "f": {}, "a": []},
        {"v": SCHEMA_VERSION, "k": "obs", "f": [], "a": []},
        {"v": SCHEMA_VERSION, "k": "obs", "f": {}, "a": {}},
        {"v": SCHEMA_VERSION, "k": "obs", "f": {}, "a": []},  # no state
        {"v": SCHEMA_VERSION, "k": "obs", "f": {}, "a": [["state", "<f4", [1]]]},
        {"v": SCHEMA_VERSION, "k": "obs", "f": {}, "a": [[1, "<f4", [1], 0, 4]]},
        {"v": SCHEMA_VERSION, "k": "obs", "f": {"timestep": "7"}, "a": []},
        {"v": SCHEMA_VERSION, "k": "hello", "f": {"policy": 3}, "a": []},
        {"v": SCHEMA_VERSION, "k": "hello", "f": {"policy": {}, "cameras": {"c": [1, 2]}}},
        {"v": SCHEMA_VERSION, "k": "hello", "f": {"policy": {}, "fps": "fast"}, "a": []},
        {"v": SCHEMA_VERSION, "k": "hello", "f": {"policy": {"options": 5}}, "a": []},
    ],
    ids=repr,
)
def test_garbage_headers_are_codec_errors(header) -> None:
    with pytest.raises(CodecError):
        codec.decode(_frame(header, bytes(64)))


def test_header_that_is_not_msgpack_is_a_codec_error() -> None:
    with pytest.raises(CodecError, match="malformed frame header"):
        codec.decode(codec.MAGIC + struct.pack("<I", 3) + b"\xc1\xc1\xc1")


def test_oversized_header_length_is_refused_before_reading() -> None:
    with pytest.raises(CodecError, match="header claims"):
        codec.decode(codec.MAGIC + struct.pack("<I", 2**32 - 1) + bytes(64))


@pytest.mark.parametrize("msg", [observation(), chunk(), *SCALAR_MESSAGES], ids=repr)
def test_every_truncation_of_a_valid_frame_is_a_codec_error(msg) -> None:
    frame = codec.encode(msg)
    for n in range(len(frame)):
        with pytest.raises(CodecError):
            codec.decode(frame[:n])


FIELD_NAMES = [
    "timestep",
    "capture_ns",
    "state",
    "task",
    "fps",
    "policy",
    "cameras",
    "options",
    "joint_names",
    "accepted",
    "image_shapes",
    "message",
    "code",
    "seq",
    "fatal",
    "actions_per_chunk",
    "schema_version",
    "type",
    "path",
    "device",
    "reason",
]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(["obs", "chunk", "hello", "reply", "error", "heartbeat", "goodbye"]),
    fields=st.dictionaries(
        st.sampled_from(FIELD_NAMES),
        st.recursive(
            st.none() | st.booleans() | INT64 | st.floats() | st.text(max_size=5),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(st.text(max_size=5), inner, max_size=3)
            ),
            max_leaves=6,
        ),
    ),
    policy=st.dictionaries(
        st.sampled_from(["type", "path", "device", "actions_per_chunk", "options"]),
        st.none() | INT64 | st.text(max_size=3) | st.lists(INT64, max_size=2),
    ),
)
def test_any_header_decodes_or_is_a_codec_error(kind, fields, policy) -> None:
    """Whatever a peer puts in a well-formed header: a message or CodecError, nothing else."""
    if kind == "hello" and "policy" not in fields:
        fields["policy"] = policy
    frame = _frame({"v": SCHEMA_VERSION, "k": kind, "f": fields, "a": []})
    with contextlib.suppress(CodecError):
        codec.decode(frame)


@pytest.mark.parametrize("magic", [codec.MAGIC, codec.FIXED_MAGIC])
@settings(max_examples=300)
@given(junk=st.binary(max_size=200))
def test_random_bytes_after_the_magic_are_codec_errors(magic, junk) -> None:
    with contextlib.suppress(CodecError):
        codec.decode(magic + junk)
