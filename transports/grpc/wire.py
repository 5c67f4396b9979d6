"""A hand-written protobuf fast path for the one big message: `Up{observation}`.

Why: the generic path copies a raw frame five times (`tobytes`, into upb's arena, out to a
serialized string; on receipt into the arena, out to a `bytes` field). Each copy of a fresh
megabyte-sized buffer costs page faults as well as the copy, and that tripled the round
trip of a 640×480 frame. Here the sender joins small headers and the frames' own memory into
the message in one copy, and the receiver walks the wire format and views each frame in the
received bytes without copying.

The bytes are standard protobuf (`asyncinf.v1.Up`, see asyncinf.proto): any protobuf
library reads what `encode_observation` writes, and `decode_observation` reads what any
library writes for an `Up` holding only an observation (fields in any order, packed or
unpacked shapes, unknown fields skipped). It is stricter than protobuf in two ways, both
answered with `CodecError`: a known field with the wrong wire type, and a repeated
occurrence of a sub-message is not merged (the last one wins). Every length is checked
against the buffer before use; tensors then go through the same checks as the generic path.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from asyncinf.runtime.errors import CodecError
from asyncinf.transports.grpc import asyncinf_pb2 as pb

VARINT, I64, LEN, I32 = 0, 1, 2, 5
_MASK64 = (1 << 64) - 1


def _varint_bytes(value: int) -> bytes:
    value &= _MASK64  # negative int64 -> two's complement, ten bytes on the wire
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
    return _varint_bytes(field << 3 | wire_type)


def _len_field(field: int, size: int) -> bytes:
    return _key(field, LEN) + _varint_bytes(size)


# --- encode --------------------------------------------------------------------------------


def encode_observation(head: pb.Observation, raw_images: dict[str, np.ndarray]) -> bytes:
    """`Up{observation}` bytes: `head` (serialized by upb: scalars, state, JPEG images) plus
    raw frames appended as `images` map entries straight from their memory (one copy)."""
    head_bytes = head.SerializeToString()
    parts: list[Any] = [b"", head_bytes]
    size = len(head_bytes)
    for cam, img in raw_images.items():
        arr = np.ascontiguousarray(img)
        if arr.dtype != np.uint8:
            raise CodecError(f"image {cam!r} has dtype {arr.dtype}; camera frames are uint8")
        tensor_head = pb.Tensor(dtype=arr.dtype.str, shape=arr.shape).SerializeToString()
        tensor_head += _len_field(3, arr.nbytes)
        tensor_size = len(tensor_head) + arr.nbytes
        image_head = _len_field(1, tensor_size)  # Image.raw
        image_size = len(image_head) + tensor_size
        key = cam.encode()
        entry_head = _len_field(1, len(key)) + key + _len_field(2, image_size)
        entry_size = len(entry_head) + image_size
        field_head = _len_field(4, entry_size)  # Observation.images
        parts += [field_head, entry_head, image_head, tensor_head, memoryview(arr).cast("B")]
        size += len(field_head) + entry_size
    parts[0] = _len_field(2, size)  # Up.observation
    return b"".join(parts)


# --- decode --------------------------------------------------------------------------------


def _read_varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end:
            raise CodecError("truncated message: a varint runs past its end")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result & _MASK64, pos
        shift += 7
        if shift >= 70:
            raise CodecError("malformed message: varint longer than 10 bytes")


def _fields(buf: memoryview, pos: int, end: int) -> Any:
    """Yield (field, wire type, value): an int for varints, (start, end) for LEN fields."""
    while pos < end:
        key, pos = _read_varint(buf, pos, end)
        field, wire_type = key >> 3, key & 7
        if field == 0:
            raise CodecError("malformed message: field number 0")
        if wire_type == VARINT:
            value, pos = _read_varint(buf, pos, end)
            yield field, wire_type, value
            continue
        if wire_type == LEN:
            size, pos = _read_varint(buf, pos, end)
            if size > end - pos:
                raise CodecError(
                    f"truncated message: field {field} claims {size} B, {end - pos} B remain"
                )
            yield field, wire_type, (pos, pos + size)
            pos += size
            continue
        width = {I64: 8, I32: 4}.get(wire_type)
        if width is None:
            raise CodecError(f"malformed message: wire type {wire_type} (field {field})")
        if width > end - pos:
            raise CodecError(f"truncated message: fixed field {field} past the end")
        yield field, wire_type, None
        pos += width


def _signed(v: int) -> int:
    return v - (1 << 64) if v >> 63 else v


def _expect(field: int, wire_type: int, want: int, what: str) -> None:
    if wire_type != want:
        raise CodecError(f"{what}: field {field} has wire type {wire_type}, expected {want}")


def _text(buf: memoryview, span: tuple[int, int], what: str) -> str:
    try:
        return bytes(buf[span[0] : span[1]]).decode("utf-8")
    except UnicodeDecodeError:
        raise CodecError(f"{what} is not valid UTF-8") from None


def observation_span(raw: bytes) -> tuple[int, int] | None:
    """Where the observation lies if `raw` is an `Up` holding only one; else None."""
    buf = memoryview(raw)
    span = None
    for field, wire_type, value in _fields(buf, 0, len(buf)):
        if field != 2 or wire_type != LEN:
            return None
        span = value
    return span


class RawTensor:
    """A received tensor's claims and the span of its data, not yet an array."""

    __slots__ = ("data", "dtype", "shape")

    def __init__(self, dtype: str, shape: list[int], data: memoryview) -> None:
        self.dtype, self.shape, self.data = dtype, shape, data


def _tensor(buf: memoryview, start: int, end: int, what: str) -> RawTensor:
    dtype, shape, data = "", [], buf[start:start]
    for field, wire_type, value in _fields(buf, start, end):
        if field == 1:
            _expect(field, wire_type, LEN, what)
            dtype = _text(buf, value, f"{what} dtype")
        elif field == 2:
            if wire_type == VARINT:
                shape.append(_signed(value))
            else:
                _expect(field, wire_type, LEN, what)
                pos, stop = value
                while pos < stop:
                    dim, pos = _read_varint(buf, pos, stop)
                    shape.append(_signed(dim))
        elif field == 3:
            _expect(field, wire_type, LEN, what)
            data = buf[value[0] : value[1]]
    return RawTensor(dtype, shape, data)


def _image(buf: memoryview, start: int, end: int, what: str) -> dict[str, Any]:
    out: dict[str, Any] = {"raw": None, "jpeg": None, "height": 0, "width": 0}
    for field, wire_type, value in _fields(buf, start, end):
        if field == 1:
            _expect(field, wire_type, LEN, what)
            out["raw"], out["jpeg"] = _tensor(buf, *value, what), None  # oneof: last wins
        elif field == 2:
            _expect(field, wire_type, LEN, what)
            out["jpeg"], out["raw"] = bytes(buf[value[0] : value[1]]), None
        elif field in (3, 4):
            _expect(field, wire_type, VARINT, what)
            out["height" if field == 3 else "width"] = value & 0xFFFFFFFF
    return out


def decode_observation(raw: bytes, span: tuple[int, int]) -> dict[str, Any]:
    """The fields of the observation at `span` of `raw`: scalars decoded, tensors as
    `RawTensor` views, images as dicts (see `_image`). Checks are left to `convert`."""
    buf = memoryview(raw)
    obs: dict[str, Any] = {
        "timestep": 0,
        "capture_ns": 0,
        "state": RawTensor("", [], buf[0:0]),
        "images": {},
        "task": "",
        "must_go": False,
        "sent_ns": 0,
        "inference_delay": 0,
        "prev_chunk_left_over": RawTensor("", [], buf[0:0]),
    }
    ints = {1: "timestep", 2: "capture_ns", 7: "sent_ns", 8: "inference_delay"}
    for field, wire_type, value in _fields(buf, *span):
        if field in ints:
            _expect(field, wire_type, VARINT, "observation")
            obs[ints[field]] = _signed(value)
        elif field == 6:
            _expect(field, wire_type, VARINT, "observation")
            obs["must_go"] = value != 0
        elif field in (3, 9):
            _expect(field, wire_type, LEN, "observation")
            name = "state" if field == 3 else "prev_chunk_left_over"
            obs[name] = _tensor(buf, *value, name)
        elif field == 5:
            _expect(field, wire_type, LEN, "observation")
            obs["task"] = _text(buf, value, "task")
        elif field == 4:
            _expect(field, wire_type, LEN, "observation")
            cam, image = "", None
            for f, wt, v in _fields(buf, *value):
                if f == 1:
                    _expect(f, wt, LEN, "image map entry")
                    cam = _text(buf, v, "camera name")
                elif f == 2:
                    _expect(f, wt, LEN, "image map entry")
                    image = v
            obs["images"][cam] = (
                _image(buf, *image, f"image {cam!r}")
                if image is not None
                else {"raw": None, "jpeg": None, "height": 0, "width": 0}
            )
    return obs
