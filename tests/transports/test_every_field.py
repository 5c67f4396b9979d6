"""Every field of every message crosses both wires: the shm codec and the gRPC conversion.

Each message is filled, field by field from its dataclass, with a value that is not the
default; a field added to runtime/messages.py is therefore tested the moment it exists, and
a field the proto (hand-written) lacks fails here.
"""

from __future__ import annotations

import dataclasses
import typing

import numpy as np
import pytest

from asyncinf.runtime import messages
from asyncinf.transports import codec
from asyncinf.transports.grpc import convert, wire

ARRAYS = {
    "state": np.arange(6, dtype=np.float32) + 0.5,
    "actions": np.linspace(-1, 1, 3 * 6, dtype=np.float32).reshape(3, 6),
    "prev_chunk_left_over": np.linspace(-2, 2, 4 * 6, dtype=np.float32).reshape(4, 6),
    "images": {"front": np.full((4, 5, 3), 7, np.uint8), "wrist": np.ones((2, 3, 3), np.uint8)},
}
# A non-default value per annotation, as written in runtime/messages.py.
VALUES = {
    "int": 987_654_321,
    "str": "not the default",
    "bool": True,
    "float": 12.5,
    "list[str]": ["shoulder_pan.pos", "gripper.pos"],
    "dict[str, tuple[int, int, int]]": {"front": (480, 640, 3), "wrist": (224, 224, 3)},
    "dict[str, Any]": {"temporal_ensemble": 0.01, "n": [1, 2]},
    "RtcSettings | None": messages.RtcSettings(7, 3.5, "EXP"),
}
MESSAGES = list(typing.get_args(messages.Message))
Observation, ActionChunk, Handshake, HandshakeReply, ErrorMessage, Heartbeat, Goodbye = (
    messages.Observation, messages.ActionChunk, messages.Handshake, messages.HandshakeReply,
    messages.ErrorMessage, messages.Heartbeat, messages.Goodbye,
)  # fmt: skip


def filled(cls: type) -> object:
    values = {}
    for f in dataclasses.fields(cls):
        if f.name in ARRAYS:
            values[f.name] = ARRAYS[f.name]
        elif f.type == "PolicySpec":
            values[f.name] = filled(messages.PolicySpec)
        else:
            assert f.type in VALUES, f"{cls.__name__}.{f.name}: add a value for {f.type}"
            values[f.name] = VALUES[f.type]
        default = f.default
        if f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        if default is not dataclasses.MISSING:
            assert _differ(values[f.name], default), f"{cls.__name__}.{f.name} is the default"
    return cls(**values)


def _differ(a: object, b: object) -> bool:
    if isinstance(a, np.ndarray):
        return not (isinstance(b, np.ndarray) and np.array_equal(a, b))
    return a != b


def assert_equal(a: object, b: object) -> None:
    assert type(a) is type(b)
    for f in dataclasses.fields(a):
        va, vb = getattr(a, f.name), getattr(b, f.name)
        if isinstance(va, np.ndarray):
            assert va.dtype == vb.dtype and np.array_equal(va, vb), f.name
        elif f.name == "images":
            assert va.keys() == vb.keys() and all(np.array_equal(va[k], vb[k]) for k in va)
        else:
            assert va == vb, f.name


def test_the_list_of_messages_is_complete():
    assert set(MESSAGES) == {
        Observation, ActionChunk, Handshake, HandshakeReply, ErrorMessage, Heartbeat, Goodbye
    }  # fmt: skip


@pytest.mark.parametrize("cls", MESSAGES, ids=lambda c: c.__name__)
def test_every_field_survives_the_shm_codec(cls):
    msg = filled(cls)
    assert_equal(codec.decode(codec.encode(msg)), msg)


LIMITS = convert.Limits(max_tensor_elements=1 << 24, max_tensor_bytes=1 << 26)


def _grpc_round_trip(msg: object) -> object:
    """Each message through the conversion functions the gRPC ends use."""
    if isinstance(msg, Observation):
        raw = convert.observation_to_up(msg)
        fast = convert.observation_at(raw, wire.observation_span(raw), LIMITS)  # the server's
        assert_equal(fast, msg)
        return convert.observation_from_proto(convert.parse_up(raw).observation, LIMITS)
    if isinstance(msg, Handshake):
        up = convert.parse_up(convert.handshake_to_up(msg, client_id="c1"))
        return convert.handshake_from_proto(up.handshake, LIMITS)
    if isinstance(msg, HandshakeReply):
        down = convert.parse_down(convert.reply_to_down(msg, session_id="s1"))
        return convert.reply_from_proto(down.reply, LIMITS)
    if isinstance(msg, ActionChunk):
        return convert.chunk_from_proto(
            convert.parse_down(convert.chunk_to_down(msg)).chunk, LIMITS
        )
    if isinstance(msg, ErrorMessage):
        return convert.error_from_proto(convert.parse_down(convert.error_to_down(msg)).error)
    if isinstance(msg, Heartbeat):  # the ends read these two straight from the proto
        pb = convert.parse_up(convert.heartbeat_up(msg.seq, msg.sent_ns)).heartbeat
        return Heartbeat(**{f.name: getattr(pb, f.name) for f in dataclasses.fields(Heartbeat)})
    assert isinstance(msg, Goodbye)
    pb = convert.parse_down(convert.goodbye_down(msg.reason)).goodbye
    return Goodbye(**{f.name: getattr(pb, f.name) for f in dataclasses.fields(Goodbye)})


@pytest.mark.parametrize("cls", MESSAGES, ids=lambda c: c.__name__)
def test_every_field_survives_the_grpc_conversion(cls):
    msg = filled(cls)
    assert_equal(_grpc_round_trip(msg), msg)
