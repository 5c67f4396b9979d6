"""Frames: a msgpack header followed by the raw bytes of each array.

Why this format: msgpack carries the small typed fields (ints, strings, names) portably and
safely, and arrays travel as dtype + shape + raw bytes, so decoding is a `numpy.frombuffer`
view on the received buffer: no copy, no parse of pixel data. Pickle is never used — a frame
from a peer is data, never code — and object, void, string and datetime dtypes are refused
because their bytes are not self-describing values.

Frame layout (little-endian):

    offset  size  field
    0       4     magic  b"AIFm"
    4       4     header length H (u32)
    8       H     msgpack map {"v": schema version, "k": kind,
                               "f": {field: scalar},
                               "a": [[name, dtype str, shape, offset, nbytes], ...]}
    D             start of data, D = align64(8 + H); each array at D + offset, 64-aligned

Decoding checks every count against the buffer before touching it and raises `CodecError`
(or `SchemaVersionError`) naming what was expected.
"""

from __future__ import annotations

import dataclasses
import math
import operator
import struct
import threading
from collections.abc import Callable
from typing import Any

import msgpack
import numpy as np

from asyncinf.runtime import messages as _messages
from asyncinf.runtime.errors import CodecError, PayloadTooLarge, SchemaVersionError
from asyncinf.runtime.messages import (
    SCHEMA_VERSION,
    ActionChunk,
    ErrorMessage,
    Goodbye,
    Handshake,
    HandshakeReply,
    Heartbeat,
    Message,
    Observation,
    PolicySpec,
    RtcSettings,
)

MAGIC = b"AIFm"
_PREFIX = struct.Struct("<4sI")
ALIGN = 64
MAX_HEADER_BYTES = 1 << 20
MAX_NDIM = 8

# Plain numeric dtypes only, always little-endian on the wire.
ALLOWED_DTYPES = frozenset(
    np.dtype(t).str
    for t in (
        "bool",
        "<i1", "<i2", "<i4", "<i8",
        "<u1", "<u2", "<u4", "<u8",
        "<f2", "<f4", "<f8",
    )
)  # fmt: skip

_DTYPES = {name: np.dtype(name) for name in ALLOWED_DTYPES}  # built once: decode is hot
_F32, _U8 = np.dtype(np.float32), np.dtype(np.uint8)

Arrays = list[tuple[str, np.ndarray]]


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


# --- per-message mapping: message <-> (kind, scalar fields, arrays) ------------------------
#
# The scalar fields of every message are read from its dataclass, so a field added to a
# message travels without a change here; each field's annotation picks its reader below (a
# type without one fails at import). Only the arrays are named here: they travel outside the
# msgpack header.

ARRAY_FIELDS: dict[type, tuple[str, ...]] = {
    Observation: ("state", "prev_chunk_left_over", "images"),
    ActionChunk: ("actions",),
}


def _scalars(m: Any) -> dict[str, Any]:
    """A message's scalar fields as msgpack data (nested dataclasses as maps)."""
    names, get, nested = _SCALARS_OF[type(m)]
    out = dict(zip(names, get(m)))  # noqa: B905  (get returns one value per name)
    for name in nested:
        if out[name] is not None:
            out[name] = dataclasses.asdict(out[name])
    return out


def _build(cls: type, f: dict[str, Any], arrays: dict[str, Any] | None = None) -> Any:
    """`cls` from its received scalar fields (each checked by its reader) and `arrays`."""
    names, zeros, types = _EXACT_OF[cls]
    if types is not None:
        # All plain fields: fetched and type-checked at once (in C); any other type, a
        # missing nested map or a value the reader would convert goes to the readers.
        values = tuple(map(f.get, names, zeros))
        if tuple(map(type, values)) == types:
            return cls(**dict(zip(names, values)), **(arrays or {}))  # noqa: B905
    values = {name: read(f, name) for name, read in _READERS_OF[cls]}
    return cls(**values, **(arrays or {}))


def _obs_arrays(m: Observation) -> Arrays:
    # The images last: the arrays before them are the frame's `lead_bytes`.
    arrays = [("state", m.state), ("prev_chunk_left_over", m.prev_chunk_left_over)]
    for k, v in m.images.items():
        arrays.append((f"image/{k}", v))
    return arrays


def _obs_build(f: dict[str, Any], a: dict[str, np.ndarray]) -> Observation:
    state = _array(a, "state", ndim=1, dtype=_F32)
    tail = _array(a, "prev_chunk_left_over", ndim=2, dtype=_F32)
    images = {}
    for name, arr in a.items():
        if name.startswith("image/"):
            images[name[6:]] = _check_array(name, arr, ndim=3, dtype=_U8)
    return _build(Observation, f, {"state": state, "prev_chunk_left_over": tail, "images": images})


def _chunk_build(f: dict[str, Any], a: dict[str, np.ndarray]) -> ActionChunk:
    return _build(ActionChunk, f, {"actions": _array(a, "actions", ndim=2, dtype=_F32)})


def _no_arrays(_m: Any) -> Arrays:
    return []


def _scalar_kind(cls: type) -> tuple[type, Callable[..., Any], Callable[..., Any]]:
    return (cls, _no_arrays, lambda f, _a: _build(cls, f))


# kind -> (message type, its arrays in frame order, its builder from (fields, arrays))
_KINDS: dict[str, tuple[type, Callable[..., Any], Callable[..., Any]]] = {
    "obs": (Observation, _obs_arrays, _obs_build),
    "chunk": (ActionChunk, lambda m: [("actions", m.actions)], _chunk_build),
    "hello": _scalar_kind(Handshake),
    "reply": _scalar_kind(HandshakeReply),
    "error": _scalar_kind(ErrorMessage),
    "heartbeat": _scalar_kind(Heartbeat),
    "goodbye": _scalar_kind(Goodbye),
}
_KIND_OF = {cls: kind for kind, (cls, _, _) in _KINDS.items()}


# --- field validation helpers --------------------------------------------------------------


def _int(f: dict[str, Any], name: str) -> int:
    v = f.get(name, 0)
    if type(v) is not int:  # msgpack gives exact ints; this also refuses bool
        raise CodecError(f"field {name!r} must be an integer, got {type(v).__name__}")
    return v


def _str(f: dict[str, Any], name: str) -> str:
    v = f.get(name, "")
    if not isinstance(v, str):
        raise CodecError(f"field {name!r} must be a string, got {type(v).__name__}")
    return v


def _str_list(f: dict[str, Any], name: str) -> list[str]:
    v = f.get(name, [])
    if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
        raise CodecError(f"field {name!r} must be a list of strings")
    return v


def _shapes(f: dict[str, Any], name: str) -> dict[str, tuple[int, int, int]]:
    v = f.get(name, {})
    if not isinstance(v, dict):
        raise CodecError(f"field {name!r} must be a map of camera -> [H, W, C]")
    out = {}
    for cam, shape in v.items():
        ok = isinstance(shape, list) and len(shape) == 3
        if not ok or not all(isinstance(d, int) and d > 0 for d in shape):
            raise CodecError(f"field {name!r}: camera {cam!r} shape must be [H, W, C] > 0")
        out[cam] = (shape[0], shape[1], shape[2])
    return out


def _check_array(name: str, arr: np.ndarray, *, ndim: int, dtype: np.dtype) -> np.ndarray:
    if arr.ndim != ndim or arr.dtype != dtype:
        raise CodecError(
            f"array {name!r} must be {dtype} with {ndim} dims, "
            f"got {arr.dtype} with shape {arr.shape}"
        )
    return arr


def _array(a: dict[str, np.ndarray], name: str, *, ndim: int, dtype: np.dtype) -> np.ndarray:
    if name not in a:
        raise CodecError(f"array {name!r} is missing")
    return _check_array(name, a[name], ndim=ndim, dtype=dtype)


def _bool(f: dict[str, Any], name: str) -> bool:
    return bool(f.get(name, False))


def _float(f: dict[str, Any], name: str) -> float:
    return float(f.get(name, 0.0))


def _map(f: dict[str, Any], name: str) -> dict[str, Any]:
    v = f.get(name)
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise CodecError(f"field {name!r} must be a map")
    return dict(v)


def _policy(f: dict[str, Any], name: str) -> PolicySpec:
    p = f.get(name)
    if not isinstance(p, dict):
        raise CodecError(f"handshake field {name!r} must be a map")
    return _build(PolicySpec, p)


def _rtc(f: dict[str, Any], name: str) -> RtcSettings | None:
    r = f.get(name)
    if r is None:
        return None
    if not isinstance(r, dict):
        raise CodecError(f"field {name!r} must be a map or nil")
    return _build(RtcSettings, r)


# Each field's annotation, as written in runtime/messages.py -> its reader. A field a peer
# leaves out reads as its type's zero (0, "", False, empty), as in proto3.
_READERS: dict[str, Callable[..., Any]] = {
    "int": _int,
    "str": _str,
    "bool": _bool,
    "float": _float,
    "list[str]": _str_list,
    "dict[str, tuple[int, int, int]]": _shapes,
    "dict[str, Any]": _map,
    "PolicySpec": _policy,
    "RtcSettings | None": _rtc,
}


def _readers(cls: type) -> tuple[tuple[str, Callable[..., Any]], ...]:
    """(name, reader) per scalar field of `cls`."""
    out = []
    for f in dataclasses.fields(cls):
        if f.name in ARRAY_FIELDS.get(cls, ()):
            continue
        read = _READERS.get(str(f.type))
        if read is None:
            raise TypeError(f"codec: no reader for {cls.__name__}.{f.name}: {f.type}")
        out.append((f.name, read))
    return tuple(out)


_READERS_OF = {cls: _readers(cls) for cls in (*_KIND_OF, PolicySpec, RtcSettings)}

# Annotations whose reader accepts exactly one msgpack type as is -> (that type, the reader's
# value for a missing field). A message of only these is decoded without calling readers.
EXACT_TYPES: dict[str, tuple[type, Any]] = {
    "int": (int, 0),
    "str": (str, ""),
    "bool": (bool, False),
    "float": (float, 0.0),
}


def _exact(cls: type) -> tuple[tuple[str, ...], tuple[Any, ...], tuple[type, ...] | None]:
    """(field names, their zeros, their exact types or None when one is not plain)."""
    hints = {f.name: str(f.type) for f in dataclasses.fields(cls)}
    names = tuple(name for name, _ in _READERS_OF[cls])
    plain = [EXACT_TYPES.get(hints[n]) for n in names]
    if None in plain:
        return names, (), None
    return names, tuple(z for _, z in plain), tuple(t for t, _ in plain)


_EXACT_OF = {cls: _exact(cls) for cls in _READERS_OF}


def _field_getter(cls: type) -> tuple[tuple[str, ...], Callable[[Any], tuple], frozenset[str]]:
    """(names, a getter of their values as one tuple, the nested dataclass fields) of the
    scalar fields of `cls`, known per type: asking `is_dataclass` of every field of every
    message cost ~0.5 µs a field on the hot path."""
    names = tuple(name for name, _ in _READERS_OF[cls])
    get = operator.attrgetter(*names) if len(names) > 1 else lambda m: (getattr(m, names[0]),)
    hints = {f.name: str(f.type) for f in dataclasses.fields(cls)}
    nested = frozenset(
        n
        for n in names
        if dataclasses.is_dataclass(getattr(_messages, hints[n].removesuffix(" | None"), None))
    )
    return names, get, nested


_SCALARS_OF = {cls: _field_getter(cls) for cls in _READERS_OF}


# --- encode --------------------------------------------------------------------------------
#
# Everything a frame's layout depends on but its scalar values, that is the message type and
# each array's name, dtype and shape, is worked out once into a plan and reused: the header's
# fixed bytes (version, kind, the array table), each array's offset and how it is copied.
# Per message only the scalar fields are packed and the bytes copied. An array of another
# shape or dtype makes (and checks) another plan; the header is byte for byte what packing
# the whole map at once would give.

PLAN_CACHE_SIZE = 64  # distinct (type, array layouts) kept; past it the oldest is dropped
_PLANS: dict[tuple[Any, ...], _Plan] = {}
_packers = threading.local()  # msgpack.Packer keeps a buffer: one per thread


def _packer() -> msgpack.Packer:
    try:
        return _packers.packer
    except AttributeError:
        _packers.packer = msgpack.Packer(use_bin_type=True)
        return _packers.packer


class _Plan:
    """The fixed parts of frames of one message type and array layout."""

    __slots__ = ("copies", "data_bytes", "lead_bytes", "prefix", "suffix")

    def __init__(self, kind: str, layout: tuple[tuple[str, np.dtype, tuple[int, ...]], ...]):
        table, copies, offset = [], [], 0
        for name, dtype, shape in layout:
            dt = dtype.newbyteorder("<") if dtype.byteorder == ">" else dtype
            if dt.str not in ALLOWED_DTYPES:
                raise CodecError(
                    f"array {name!r} has dtype {dtype}; allowed: bool, int, uint, float"
                )
            nbytes = math.prod(shape) * dt.itemsize
            table.append([name, dt.str, list(shape), offset, nbytes])
            # (offset, wire dtype, whether the array's own bytes are the wire's)
            copies.append((offset, dt, dt == dtype))
            offset = _align(offset + nbytes)
        pack = msgpack.Packer(use_bin_type=True).pack
        # A fixmap of four: v, k, f (packed per message), a.
        self.prefix = b"\x84" + pack("v") + pack(SCHEMA_VERSION) + pack("k") + pack(kind)
        self.prefix += pack("f")
        self.suffix = pack("a") + pack(table)
        self.copies = tuple(copies)
        self.data_bytes = table[-1][3] + table[-1][4] if table else 0
        # Up to the end of the last array that is not an image: an observation's header,
        # state and RTC tail, or all of a chunk.
        lead = [row for row in table if not row[0].startswith("image/")]
        self.lead_bytes = lead[-1][3] + lead[-1][4] if lead else 0


def _plan(kind: str, layout: tuple[Any, ...]) -> _Plan:
    plan = _PLANS.get(layout)
    if plan is None:
        plan = _Plan(kind, layout[1:])
        if len(_PLANS) >= PLAN_CACHE_SIZE:
            _PLANS.pop(next(iter(_PLANS)), None)  # another thread may have dropped it
        _PLANS[layout] = plan
    return plan


class FrameWriter:
    """An encoded header and where each array goes: sized before anything is written."""

    __slots__ = ("arrays", "data_start", "header", "lead_bytes", "nbytes")

    def __init__(self, msg: Message) -> None:
        cls = type(msg)
        try:
            kind = _KIND_OF[cls]
        except KeyError:
            raise CodecError(f"cannot encode {type(msg).__name__}: not a message") from None
        arrays, layout = [], [cls]
        for name, given in _KINDS[kind][1](msg):
            arr = given if type(given) is np.ndarray else np.asarray(given)
            arrays.append(arr)
            layout.append((name, arr.dtype, arr.shape))
        plan = _plan(kind, tuple(layout))
        self.header = plan.prefix + _packer().pack(_scalars(msg)) + plan.suffix
        self.data_start = start = _align(_PREFIX.size + len(self.header))
        placed = []
        for (offset, dt, native), arr in zip(plan.copies, arrays):  # noqa: B905  (one each)
            # A native C-contiguous array is one plain byte copy; others go through numpy.
            plain = native and arr.flags.c_contiguous and arr.size
            placed.append((offset, dt, arr, arr.data.cast("B") if plain else None))
        self.arrays = placed
        self.nbytes = start + plan.data_bytes
        self.lead_bytes = start + plan.lead_bytes

    def write(self, buf: memoryview | bytearray) -> int:
        """Write the frame at the start of `buf`; returns its length."""
        if len(buf) < self.nbytes:
            raise PayloadTooLarge(f"frame of {self.nbytes} B does not fit {len(buf)} B")
        header = self.header
        _PREFIX.pack_into(buf, 0, MAGIC, len(header))
        buf[_PREFIX.size : _PREFIX.size + len(header)] = header
        for offset, dt, arr, flat in self.arrays:
            start = self.data_start + offset
            if flat is not None:
                buf[start : start + len(flat)] = flat
                continue
            dst = np.frombuffer(buf, dtype=dt, count=arr.size, offset=start)
            np.copyto(dst.reshape(arr.shape), arr, casting="equiv")
        return self.nbytes


def encode(msg: Message) -> bytes:
    """Encode `msg` into a new bytes object."""
    writer = FrameWriter(msg)
    out = bytearray(writer.nbytes)
    writer.write(out)
    return bytes(out)


# --- decode --------------------------------------------------------------------------------


def decode(buf: bytes | bytearray | memoryview) -> Message:
    """Decode one frame. Arrays are zero-copy views on `buf`: keep `buf` alive while used."""
    total = len(buf)
    if total < _PREFIX.size:
        raise CodecError(f"truncated frame: {total} B, a frame needs at least {_PREFIX.size} B")
    magic, hlen = _PREFIX.unpack_from(buf, 0)
    if magic != MAGIC:
        raise CodecError(f"bad frame magic {magic!r}, expected {MAGIC!r}")
    if hlen > MAX_HEADER_BYTES or _PREFIX.size + hlen > total:
        raise CodecError(f"truncated frame: header claims {hlen} B, frame has {total} B")
    try:
        header = msgpack.unpackb(
            memoryview(buf)[_PREFIX.size : _PREFIX.size + hlen], raw=False, strict_map_key=True
        )
    except Exception as exc:  # noqa: BLE001  (msgpack raises several unrelated types on garbage)
        raise CodecError(f"malformed frame header: {exc}") from None
    if type(header) is not dict:
        raise CodecError("malformed frame header: not a map")
    version = header.get("v")
    if version != SCHEMA_VERSION:
        if not isinstance(version, int):
            raise CodecError(f"frame header has no schema version (got {version!r})")
        raise SchemaVersionError(version, SCHEMA_VERSION)
    kind = header.get("k")
    spec = _KINDS.get(kind) if type(kind) is str else None
    if spec is None:
        raise CodecError(f"unknown message kind {kind!r}; known: {sorted(_KINDS)}")
    fields, table = header.get("f"), header.get("a")
    if type(fields) is not dict or type(table) is not list:
        raise CodecError("malformed frame header: 'f' must be a map and 'a' a list")
    data_start = _align(_PREFIX.size + hlen)
    if data_start > total:  # a frame always includes the padding after its header
        raise CodecError(f"truncated frame: {total} B, its data starts at {data_start} B")
    arrays = {}
    for entry in table:
        name, arr = _view(buf, entry, data_start, total)
        arrays[name] = arr
    try:
        return spec[2](fields, arrays)
    except CodecError:
        raise
    except (TypeError, ValueError, AttributeError) as exc:  # e.g. float("fast"), dict(5)
        raise CodecError(f"malformed {kind!r} message: {exc}") from None


def _dims_ok(shape: Any) -> bool:
    """A list of up to MAX_NDIM integers >= 0 (exact ints: msgpack's bools and floats are
    refused)."""
    if type(shape) is not list or len(shape) > MAX_NDIM:
        return False
    for d in shape:  # noqa: SIM110  (a loop: all() over a generator costs twice as much)
        if type(d) is not int or d < 0:
            return False
    return True


def _view(buf: Any, entry: Any, data_start: int, total: int) -> tuple[str, np.ndarray]:
    if type(entry) is not list or len(entry) != 5:
        raise CodecError(f"array entry must be [name, dtype, shape, offset, nbytes], got {entry!r}")
    name, dtype, shape, offset, nbytes = entry
    if type(name) is not str:
        raise CodecError(f"array name must be a string, got {name!r}")
    dt = _DTYPES.get(dtype) if type(dtype) is str else None
    if dt is None:
        raise CodecError(
            f"array {name!r}: dtype {dtype!r} refused; allowed {sorted(ALLOWED_DTYPES)}"
        )
    if not _dims_ok(shape):
        raise CodecError(f"array {name!r}: shape {shape!r} must be up to {MAX_NDIM} dims >= 0")
    if type(offset) is not int or type(nbytes) is not int or offset < 0 or nbytes < 0:
        raise CodecError(f"array {name!r}: offset and nbytes must be integers >= 0")
    count = math.prod(shape)
    expected = count * dt.itemsize
    if nbytes != expected:
        raise CodecError(
            f"array {name!r}: {nbytes} B does not match shape {shape} of {dtype} ({expected} B)"
        )
    start = data_start + offset
    if start + nbytes > total:
        raise CodecError(
            f"truncated frame: array {name!r} needs bytes {start}..{start + nbytes}, "
            f"frame has {total}"
        )
    # A view on `buf` (as frombuffer, at a third of its cost); the bounds are checked above.
    return name, np.ndarray(shape, dt, buf, start)
