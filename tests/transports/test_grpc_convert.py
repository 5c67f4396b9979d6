"""Runtime messages ⇄ protobuf: round trips, the one-copy wire path, and every received
claim checked before anything is allocated."""

import contextlib
import math
import tracemalloc

import grpc  # noqa: F401  (the extra under test must be installed)
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asyncinf.runtime.errors import CodecError
from asyncinf.runtime.messages import (
    ActionChunk,
    ErrorMessage,
    Handshake,
    HandshakeReply,
    Observation,
    PolicySpec,
)
from asyncinf.transports.grpc import asyncinf_pb2 as pb
from asyncinf.transports.grpc import convert, wire

LIMITS = convert.Limits(max_tensor_elements=1 << 26, max_tensor_bytes=64 << 20)


def observation_from_up(raw: bytes, limits: convert.Limits) -> Observation | None:
    """The server's fast path: the observation in a serialized `Up`, frames not copied;
    None when `raw` holds something else."""
    span = wire.observation_span(raw)
    return None if span is None else convert.observation_at(raw, span, limits)


def _obs(images=None, **kw):
    defaults = dict(
        timestep=7,
        capture_ns=123,
        state=np.arange(6, dtype=np.float32),
        images=images if images is not None else {},
        task="pick the cube",
        must_go=True,
        sent_ns=456,
    )
    return Observation(**{**defaults, **kw})


def _same_obs(a: Observation, b: Observation) -> None:
    assert (a.timestep, a.capture_ns, a.task, a.must_go, a.sent_ns) == (
        b.timestep,
        b.capture_ns,
        b.task,
        b.must_go,
        b.sent_ns,
    )
    np.testing.assert_array_equal(a.state, b.state)
    assert a.state.dtype == b.state.dtype
    assert a.images.keys() == b.images.keys()
    for k in a.images:
        np.testing.assert_array_equal(a.images[k], b.images[k])


def test_handshake_round_trip() -> None:
    hello = Handshake(
        joint_names=["shoulder_pan", "gripper"],
        cameras={"front": (480, 640, 3), "wrist": (240, 320, 3)},
        policy=PolicySpec("act", "/ckpt", "cuda", 40, {"temporal_ensemble": 0.01, "n": [1, 2]}),
        fps=30.0,
        task="stack",
    )
    up = convert.parse_up(convert.handshake_to_up(hello, "client-1"))
    assert up.handshake.client_id == "client-1"
    assert convert.handshake_from_proto(up.handshake, LIMITS) == hello


def test_handshake_refuses_non_json_options() -> None:
    hello = Handshake(["a"], {}, PolicySpec(options={"f": object()}), 30.0)
    with pytest.raises(CodecError, match="JSON"):
        convert.handshake_to_up(hello, "c")


@pytest.mark.parametrize(
    ("dims", "match"), [([480, 640], "H, W, C"), ([0, 640, 3], "> 0"), ([-1, 2, 3], "> 0")]
)
def test_handshake_camera_shapes_checked(dims, match) -> None:
    h = pb.Handshake()
    h.cameras["front"].dims.extend(dims)
    with pytest.raises(CodecError, match=match):
        convert.handshake_from_proto(h, LIMITS)


def test_reply_chunk_error_round_trips() -> None:
    reply = HandshakeReply(True, {"front": (224, 224, 3)}, ["a", "b"], 50, "ok")
    down = convert.parse_down(convert.reply_to_down(reply, "s1"))
    assert convert.reply_from_proto(down.reply, LIMITS) == reply
    assert down.reply.session_id == "s1"

    chunk = ActionChunk(5, np.random.default_rng(0).random((50, 14), np.float32), 1, 2, 3, 4, 5)
    got = convert.chunk_from_proto(convert.parse_down(convert.chunk_to_down(chunk)).chunk, LIMITS)
    np.testing.assert_array_equal(got.actions, chunk.actions)
    assert got.actions.flags.writeable
    assert (got.timestep, got.obs_sent_ns, got.compute_ns) == (5, 1, 3 + 4 + 5)

    err = ErrorMessage("inference", "CUDA OOM", 9, fatal=True)
    assert convert.error_from_proto(convert.parse_down(convert.error_to_down(err)).error) == err


def test_raw_observation_fast_path_is_standard_protobuf() -> None:
    rng = np.random.default_rng(1)
    obs = _obs(
        {
            "front": rng.integers(0, 255, (48, 64, 3), np.uint8),
            "wrist": rng.integers(0, 255, (24, 32, 3), np.uint8),
        },
        timestep=-3,
        capture_ns=2**62,
    )
    raw = convert.observation_to_up(obs)
    # What we wrote, upb reads ...
    via_upb = convert.observation_from_proto(pb.Up.FromString(raw).observation, LIMITS)
    _same_obs(obs, via_upb)
    # ... and what upb writes, we read, without copying the frames.
    up = pb.Up()
    up.observation.CopyFrom(pb.Up.FromString(raw).observation)
    upb_raw = up.SerializeToString()
    fast = observation_from_up(upb_raw, LIMITS)
    _same_obs(obs, fast)
    assert not fast.images["front"].flags.writeable  # a view on the received bytes
    assert fast.images["front"].base is not None


def test_jpeg_observation_round_trip() -> None:
    from asyncinf.transports.testing import synthetic_frame

    frame = synthetic_frame(96, 128)
    raw = convert.observation_to_up(_obs({"front": frame}), image_codec="jpeg", jpeg_quality=90)
    assert len(raw) < frame.nbytes / 3
    got = observation_from_up(raw, LIMITS)
    assert got.images["front"].shape == frame.shape
    # Lossy, but close: JPEG q90 of a smooth frame.
    err = np.abs(got.images["front"].astype(int) - frame.astype(int)).mean()
    assert err < 4


def test_non_observation_up_is_left_to_the_generic_parser() -> None:
    raw = convert.heartbeat_up(1, 2)
    assert observation_from_up(raw, LIMITS) is None
    assert convert.parse_up(raw).WhichOneof("msg") == "heartbeat"


def _tensor(dtype="<f4", shape=(2, 3), data=None) -> pb.Tensor:
    t = pb.Tensor(dtype=dtype, shape=list(shape))
    t.data = bytes(4 * math.prod(shape)) if data is None else data
    return t


@pytest.mark.parametrize(
    ("tensor", "match"),
    [
        (_tensor(dtype="|O"), "dtype"),
        (_tensor(dtype="<c8"), "dtype"),
        (_tensor(dtype="float32"), "dtype"),
        (_tensor(dtype="|V4"), "dtype"),
        (_tensor(dtype=""), "dtype"),
        (_tensor(shape=(2, -3), data=b""), "negative"),
        (_tensor(data=bytes(23)), "24 B expected"),
        (_tensor(data=bytes(25)), "24 B expected"),
        (_tensor(shape=(1,) * 9, data=bytes(4)), "dims"),
        (_tensor(shape=(10**6, 10**6), data=b""), "claims 1000000000000 elements"),
        (_tensor(dtype="<f8", shape=(1 << 25,), data=b""), "limit is"),
    ],
)
def test_tensor_claims_are_checked(tensor, match) -> None:
    with pytest.raises(CodecError, match=match):
        convert.tensor_from_proto(tensor, "x", LIMITS)


def test_huge_claim_is_refused_without_allocating() -> None:
    t = _tensor(dtype="<f8", shape=(10**6, 10**6), data=b"")
    tracemalloc.start()
    try:
        with pytest.raises(CodecError):
            convert.tensor_from_proto(t, "x", LIMITS)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_expected_dtype_and_ndim() -> None:
    with pytest.raises(CodecError, match="float32 is required"):
        t = _tensor(dtype="<f8", data=bytes(48))
        convert.tensor_from_proto(t, "s", LIMITS, dtype=np.float32)
    with pytest.raises(CodecError, match="expected 1"):
        convert.tensor_from_proto(_tensor(), "s", LIMITS, ndim=1)


def test_object_arrays_cannot_be_sent() -> None:
    with pytest.raises(CodecError, match="cannot travel"):
        convert.observation_to_up(_obs(state=np.array([object()])))


def test_big_endian_is_sent_little_endian() -> None:
    obs = _obs(state=np.arange(3, dtype=">f4"))
    got = observation_from_up(convert.observation_to_up(_obs(state=obs.state)), LIMITS)
    np.testing.assert_array_equal(got.state, np.arange(3, dtype=np.float32))


@pytest.mark.parametrize(
    "mutate",
    [
        lambda raw: raw[: len(raw) // 2],  # truncated inside the frame
        lambda raw: raw[:-1],
        lambda raw: raw[:3],
        lambda raw: b"\x12\xff\xff\xff\xff\x0f" + raw[6:],  # length beyond the end
        lambda raw: b"\x12" + b"\xff" * 11,  # varint too long
        lambda raw: b"\x17" + raw[1:],  # wire type 7
    ],
)
def test_malformed_observation_bytes_raise_codec_error(mutate) -> None:
    raw = convert.observation_to_up(_obs({"front": np.zeros((8, 8, 3), np.uint8)}))
    with pytest.raises(CodecError):
        observation_from_up(mutate(raw), LIMITS)


_names = st.text(min_size=0, max_size=8)
_i64 = st.integers(-(2**63), 2**63 - 1)


@st.composite
def observations(draw):
    sizes = st.tuples(st.integers(1, 6), st.integers(1, 6))
    cams = draw(st.dictionaries(_names, sizes, max_size=3))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return Observation(
        timestep=draw(_i64),
        capture_ns=draw(_i64),
        state=rng.random(draw(st.integers(0, 8))).astype(np.float32),
        images={k: rng.integers(0, 255, (h, w, 3), np.uint8) for k, (h, w) in cams.items()},
        task=draw(st.text(max_size=20)),
        must_go=draw(st.booleans()),
        sent_ns=draw(_i64),
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(observations())
def test_fast_path_agrees_with_upb(obs) -> None:
    raw = convert.observation_to_up(obs)
    _same_obs(obs, observation_from_up(raw, LIMITS))
    _same_obs(obs, convert.observation_from_proto(pb.Up.FromString(raw).observation, LIMITS))
    assert pb.Up.FromString(raw).SerializeToString(deterministic=True) == pb.Up.FromString(
        pb.Up.FromString(raw).SerializeToString()
    ).SerializeToString(deterministic=True)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_gets_codec_error_or_parses(data) -> None:
    with contextlib.suppress(CodecError):
        observation_from_up(data, LIMITS)
    with contextlib.suppress(CodecError):
        convert.parse_up(data)


_VALID = convert.observation_to_up(_obs({"front": np.zeros((4, 4, 3), np.uint8)}))


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(_VALID) - 1), st.integers(0, 255)), max_size=4))
def test_corrupted_observations_get_codec_error_or_parse(edits) -> None:
    raw = bytearray(_VALID)
    for pos, value in edits:
        raw[pos] = value
    with contextlib.suppress(CodecError):
        observation_from_up(bytes(raw), LIMITS)
