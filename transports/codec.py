"""Frames: a small header followed by the raw bytes of each array.

Why this format: arrays travel as dtype + shape + raw bytes, so decoding is a view on the
received buffer: no copy, no parse of pixel data. Pickle is never used — a frame from a peer
is data, never code — and object, void, string and datetime dtypes are refused because their
bytes are not self-describing values.

Two headers, one prefix. msgpack carries the handshakes, errors and other rare messages
(nested maps, lists, any field added later) portably and safely, and every kind decodes from
it. Observations and chunks, sent on every control tick, have only plain scalar fields, so
they are encoded with a fixed header instead: their fields are one struct call, and their
array table, the same for every frame of one layout, is packed once per layout by the sender
and checked once per distinct table by the receiver, as are the header's first 16 bytes (equal
bytes pass the same checks, so a cached verdict is as strict as a fresh one; the bounds and
str fields, which depend on the frame, are checked on every frame).

Frame layout (little-endian):

    offset  size  field
    0       4     magic: b"AIFm" (a msgpack header) or b"AIFf" (a fixed header)
    4       4     header length H (u32)
    8       H     msgpack: a map {"v": schema version, "k": kind, "f": {field: scalar},
                                  "a": [[name, dtype str, shape, offset, nbytes], ...]}
                  fixed:
                  8       2  schema version (u16)
                  10      1  kind (u8): 1 observation, 2 action chunk
                  11      1  0
                  12      4  array table length T (u32)
                  16      S  the kind's scalar fields in dataclass order, struct-packed:
                             int i64, float f64, bool u8, str its UTF-8 byte count (u32)
                  16+S    T  the array table, msgpack, as "a" above
                  16+S+T     each str field's UTF-8 bytes in order, up to 8 + H
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
from typing import Any, NoReturn

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

MAGIC = b"AIFm"  # a msgpack header
FIXED_MAGIC = b"AIFf"  # a fixed header
_PREFIX = struct.Struct("<4sI")
_FIXED_HEAD = struct.Struct("<HBBI")  # version, kind, 0, table length
_FIXED_AT = _PREFIX.size + _FIXED_HEAD.size  # where a fixed header's scalar fields start
_unpack_prefix, _unpack_fixed_head = _PREFIX.unpack_from, _FIXED_HEAD.unpack_from  # hot
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
        arrays.append((f"{IMAGE}{k}", v))
    return arrays


def _no_arrays(_m: Any) -> Arrays:
    return []


IMAGE = "image/"  # an observation's array "image/<camera>" is its images[camera]


@dataclasses.dataclass(frozen=True)
class _Kind:
    """What one message kind is on the wire."""

    cls: type
    arrays: Callable[[Any], Arrays]  # a message's arrays in frame order
    # table name -> (field, dtype, ndim) of each array the kind must carry
    fields: dict[str, tuple[str, np.dtype, int]] = dataclasses.field(default_factory=dict)
    images: bool = False  # whether "image/<camera>" arrays fill an `images` map
    fixed: int = 0  # its code in a fixed header; 0: msgpack only

    @property
    def array_fields(self) -> tuple[str, ...]:
        """The fields a checked table's `arrays()` fills, in its order."""
        return (*(field for field, _, _ in self.fields.values()), *(("images",) * self.images))


_KINDS: dict[str, _Kind] = {
    "obs": _Kind(
        Observation, _obs_arrays,
        {"state": ("state", _F32, 1), "prev_chunk_left_over": ("prev_chunk_left_over", _F32, 2)},
        images=True, fixed=1,
    ),
    "chunk": _Kind(
        ActionChunk, lambda m: [("actions", m.actions)], {"actions": ("actions", _F32, 2)},
        fixed=2,
    ),
    "hello": _Kind(Handshake, _no_arrays),
    "reply": _Kind(HandshakeReply, _no_arrays),
    "error": _Kind(ErrorMessage, _no_arrays),
    "heartbeat": _Kind(Heartbeat, _no_arrays),
    "goodbye": _Kind(Goodbye, _no_arrays),
}  # fmt: skip
_KIND_OF = {k.cls: name for name, k in _KINDS.items()}


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


# --- the fixed header's scalar fields ------------------------------------------------------
#
# Read from the dataclass like the msgpack fields, so a plain field added to an observation
# or a chunk travels without a change here (a field of another type fails at import).

_STRUCT_CODES = {"int": "q", "float": "d", "bool": "?", "str": "I"}


class _Fixed:
    """How the scalar fields of one kind are struct-packed in a fixed header."""

    __slots__ = (
        "arrays", "cls", "code", "get", "kind", "names", "order", "plans", "scalars", "texts",
    )  # fmt: skip

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.cls, self.code, self.arrays = _KINDS[kind].cls, _KINDS[kind].fixed, _KINDS[kind].arrays
        hints = {f.name: str(f.type) for f in dataclasses.fields(self.cls)}
        self.names = tuple(name for name, _ in _READERS_OF[self.cls])
        codes = [_STRUCT_CODES.get(hints[n]) for n in self.names]
        for n, code in zip(self.names, codes):  # noqa: B905  (one each)
            if code is None:
                raise TypeError(f"codec: a fixed header cannot carry {kind}.{n}: {hints[n]}")
        self.scalars = struct.Struct("<" + "".join(codes))
        self.texts = tuple(i for i, c in enumerate(codes) if c == "I")  # the str fields
        self.get = _SCALARS_OF[self.cls][1]
        # (scalar fields..., array fields...) -> the dataclass's positional arguments
        given = (*self.names, *_KINDS[kind].array_fields)
        self.order = operator.itemgetter(
            *(given.index(f.name) for f in dataclasses.fields(self.cls))
        )
        self.plans: dict[bytes, _Table] = {}  # checked array tables, by their bytes

    def values(self, msg: Any) -> tuple[Any, bytes]:
        """(the scalar fields' values to pack, each str as its UTF-8 byte count; those bytes)."""
        values = self.get(msg)
        if not self.texts:
            return values, b""
        values, parts = list(values), []
        for i in self.texts:
            v = values[i]
            if not isinstance(v, str):
                raise CodecError(f"field {self.names[i]!r} must be a string, got {v!r}")
            if v:
                parts.append(v.encode())
                values[i] = len(parts[-1])
            else:
                values[i] = 0  # the usual empty task: nothing to encode
        return values, b"".join(parts)

    def refuse(self, values: Any) -> NoReturn:
        """Raise the CodecError naming the first of `values` that its struct code refuses."""
        for name, v, code in zip(self.names, values, self.scalars.format[1:]):  # noqa: B905
            try:
                struct.pack("<" + code, v)
            except struct.error as exc:
                raise CodecError(f"field {name!r} = {v!r} cannot be encoded: {exc}") from None
        raise AssertionError("unreachable: every field packs alone")


_FIXED = {k.cls: _Fixed(name) for name, k in _KINDS.items() if k.fixed}
_FIXED_BY_CODE = {f.code: f for f in _FIXED.values()}


# --- array tables ----------------------------------------------------------------------------


class _Table:
    """A frame's array table, checked against its kind: which field each array fills and
    where its bytes are. Everything but the bounds is a property of the table alone."""

    __slots__ = ("ends", "fields", "images", "need")

    def __init__(self, kind: _Kind, table: Any, frame: tuple[int, int] | None = None) -> None:
        """`frame`: (data start, total bytes) of the frame it is read from, to check each
        array's bounds before the kind's needs; None for a table cached for many frames."""
        if type(table) is not list:
            raise CodecError("malformed frame header: the array table must be a list")
        rows = {}
        ends = []
        for entry in table:
            name, dt, shape, offset, nbytes = _entry(entry)
            rows[name] = (dt, shape, offset)
            ends.append((name, offset, offset + nbytes))
        self.ends = tuple(ends)
        self.need = max((end for _, _, end in ends), default=0)
        if frame is not None and frame[0] + self.need > frame[1]:
            self._truncated(*frame)
        fields = []
        for name, (field, dtype, ndim) in kind.fields.items():
            if name not in rows:
                raise CodecError(f"array {name!r} is missing")
            fields.append((field, *_checked(name, *rows[name], ndim=ndim, dtype=dtype)))
        self.fields = tuple(fields)
        self.images = None
        if kind.images:
            self.images = tuple(
                (name[len(IMAGE) :], *_checked(name, *row, ndim=3, dtype=_U8))
                for name, row in rows.items()
                if name.startswith(IMAGE)
            )

    def _truncated(self, data_start: int, total: int) -> NoReturn:
        """Name the first array past the end of a frame of `total` bytes."""
        for name, offset, end in self.ends:
            if data_start + end > total:
                raise CodecError(
                    f"truncated frame: array {name!r} needs bytes {data_start + offset}.."
                    f"{data_start + end}, frame has {total}"
                )
        raise AssertionError("unreachable: `need` is the largest end")

    def arrays(self, buf: Any, data_start: int, total: int) -> tuple[Any, ...]:
        """The kind's `array_fields`: views on `buf`, whose data starts at `data_start`."""
        if data_start + self.need > total:
            self._truncated(data_start, total)
        # As frombuffer, at a third of its cost; the bounds are checked above. Loops, not
        # comprehensions: each of those is one more function call (Python 3.11).
        out = []
        for _, dt, shape, off in self.fields:
            out.append(np.ndarray(shape, dt, buf, data_start + off))
        if self.images is not None:
            images = {}
            for cam, dt, shape, off in self.images:
                images[cam] = np.ndarray(shape, dt, buf, data_start + off)
            out.append(images)
        return tuple(out)


def _checked(
    name: str, dt: np.dtype, shape: tuple[int, ...], offset: int, *, ndim: int, dtype: np.dtype
) -> tuple[np.dtype, tuple[int, ...], int]:
    if len(shape) != ndim or dt != dtype:
        raise CodecError(
            f"array {name!r} must be {dtype} with {ndim} dims, got {dt} with shape {shape}"
        )
    return dt, shape, offset


def _table(fixed: _Fixed, raw: bytes) -> _Table:
    """The checked table of a fixed header, from its bytes (cached: equal bytes check alike)."""
    plan = fixed.plans.get(raw)
    if plan is None:
        try:
            table = msgpack.unpackb(raw, raw=False, strict_map_key=True)
        except Exception as exc:  # noqa: BLE001  (msgpack raises several unrelated types)
            raise CodecError(f"malformed array table: {exc}") from None
        plan = _Table(_KINDS[fixed.kind], table)  # raises before anything is cached
        if len(fixed.plans) >= PLAN_CACHE_SIZE:
            fixed.plans.pop(next(iter(fixed.plans)), None)
        fixed.plans[raw] = plan
    return plan


# --- encode --------------------------------------------------------------------------------
#
# Everything an observation's or a chunk's frame layout depends on but its scalar values,
# that is the message type and each array's name, dtype and shape, is worked out once into a
# plan and reused: the fixed header's version, kind and array table, each array's offset and
# how it is copied. Per message only the scalar fields are packed and the bytes copied. An
# array of another shape or dtype makes (and checks) another plan. The other kinds carry no
# arrays: their msgpack header is the same map packing it whole would give.

PLAN_CACHE_SIZE = 64  # distinct (type, array layouts) kept; past it the oldest is dropped
SMALL_BYTES = 64 * 1024  # arrays up to this size are copied through a bytes object
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

    __slots__ = (
        "copies", "data_bytes", "head", "header_bytes", "joined", "lead_bytes", "pack",
        "pack_padded", "start", "table",
    )  # fmt: skip

    def __init__(self, fixed: _Fixed, layout: tuple[tuple[str, np.dtype, tuple[int, ...]], ...]):
        table, copies, offset = [], [], 0
        for name, dtype, shape in layout:
            dt = dtype.newbyteorder("<") if dtype.byteorder == ">" else dtype
            if dt.str not in ALLOWED_DTYPES:
                raise CodecError(
                    f"array {name!r} has dtype {dtype}; allowed: bool, int, uint, float"
                )
            nbytes = math.prod(shape) * dt.itemsize
            table.append([name, dt.str, list(shape), offset, nbytes])
            # (offset, wire dtype, whether the array's own bytes are the wire's, whether it
            # is small); None: an empty array (no RTC tail), nothing to copy
            copies.append((offset, dt, dt == dtype, nbytes <= SMALL_BYTES) if nbytes else None)
            offset = _align(offset + nbytes)
        self.table = msgpack.packb(table, use_bin_type=True)
        # The header's length without str bytes, and its first 16 bytes for that length.
        self.header_bytes = _FIXED_HEAD.size + fixed.scalars.size + len(self.table)
        self.head = _PREFIX.pack(FIXED_MAGIC, self.header_bytes) + _FIXED_HEAD.pack(
            SCHEMA_VERSION, fixed.code, 0, len(self.table)
        )
        # The whole header in one call: its first 16 bytes, the scalar fields, the table;
        # without str bytes, zeros up to the data start too.
        fmt = f"<16s{fixed.scalars.format[1:]}{len(self.table)}s"
        self.pack = struct.Struct(fmt).pack
        self.start = _align(_PREFIX.size + self.header_bytes)  # data start without str bytes
        self.pack_padded = struct.Struct(f"{fmt}{self.start - 8 - self.header_bytes}x").pack
        self.copies = tuple(copies)
        # One small native array right at the data start (a chunk): the frame is the padded
        # header and that array's bytes, joined.
        self.joined = len(copies) == 1 and copies[0] is not None and copies[0][2:] == (True, True)
        self.data_bytes = table[-1][3] + table[-1][4] if table else 0
        # Up to the end of the last array that is not an image: an observation's header,
        # state and RTC tail, or all of a chunk.
        lead = [row for row in table if not row[0].startswith(IMAGE)]
        self.lead_bytes = lead[-1][3] + lead[-1][4] if lead else 0


def _plan(fixed: _Fixed, layout: tuple[Any, ...]) -> _Plan:
    plan = _PLANS.get(layout)
    if plan is None:
        plan = _Plan(fixed, layout[1:])
        if len(_PLANS) >= PLAN_CACHE_SIZE:
            _PLANS.pop(next(iter(_PLANS)), None)  # another thread may have dropped it
        _PLANS[layout] = plan
    return plan


def _msgpack_head(kind: str) -> tuple[bytes, bytes]:
    """The bytes of a msgpack header before and after its "f" map (a kind without arrays)."""
    pack = msgpack.Packer(use_bin_type=True).pack
    # A fixmap of four: v, k, f (packed per message), a.
    before = b"\x84" + pack("v") + pack(SCHEMA_VERSION) + pack("k") + pack(kind) + pack("f")
    return before, pack("a") + pack([])


_MSGPACK_HEADS = {k.cls: _msgpack_head(name) for name, k in _KINDS.items() if not k.fixed}


class FrameWriter:
    """An encoded frame prefix and header, and where each array goes: sized before anything
    is written."""

    __slots__ = ("_copies", "_joined", "arrays", "data_start", "header", "lead_bytes", "nbytes")

    def __init__(self, msg: Message) -> None:
        cls = type(msg)
        fixed = _FIXED.get(cls)
        if fixed is None:
            heads = _MSGPACK_HEADS.get(cls)
            if heads is None:
                raise CodecError(f"cannot encode {type(msg).__name__}: not a message")
            header = heads[0] + _packer().pack(_scalars(msg)) + heads[1]
            self.header = _PREFIX.pack(MAGIC, len(header)) + header
            self.data_start = self.nbytes = self.lead_bytes = _align(len(self.header))
            self.arrays = self._copies = ()
            self._joined = False
            return
        arrays, layout = [], [cls]
        for name, given in fixed.arrays(msg):
            arr = given if type(given) is np.ndarray else np.asarray(given)
            arrays.append(arr)
            layout.append((name, arr.dtype, arr.shape))
        layout = tuple(layout)
        plan = _PLANS.get(layout) or _plan(fixed, layout)
        values, texts = fixed.values(msg)
        try:
            if texts:
                head = _PREFIX.pack(FIXED_MAGIC, plan.header_bytes + len(texts)) + plan.head[8:]
                self.header = plan.pack(head, *values, plan.table) + texts
                start = _align(len(self.header))
            else:
                self.header = plan.pack_padded(plan.head, *values, plan.table)
                start = plan.start
        except struct.error:
            fixed.refuse(values)
        self._joined = plan.joined and not texts
        self.data_start = start
        self.arrays, self._copies = arrays, plan.copies
        self.nbytes = start + plan.data_bytes
        self.lead_bytes = start + plan.lead_bytes

    def write(self, buf: memoryview | bytearray) -> int:
        """Write the frame at the start of `buf`; returns its length."""
        if len(buf) < self.nbytes:
            raise PayloadTooLarge(f"frame of {self.nbytes} B does not fit {len(buf)} B")
        header, start = self.header, self.data_start
        buf[: len(header)] = header
        for copy, arr in zip(self._copies, self.arrays):  # noqa: B905  (one each)
            if copy is None:
                continue
            # A native array is one plain byte copy, of its bytes when it is small (bytes
            # copy in faster than a cast view, ~1 µs less per array), else of a byte view
            # when it is C-contiguous; others go through numpy.
            offset, dt, native, small = copy
            at = start + offset
            if native:
                try:
                    flat = arr.tobytes() if small else arr.data.cast("B")
                except TypeError:  # not C-contiguous
                    pass
                else:
                    buf[at : at + len(flat)] = flat
                    continue
            dst = np.frombuffer(buf, dtype=dt, count=arr.size, offset=at)
            np.copyto(dst.reshape(arr.shape), arr, casting="equiv")
        return self.nbytes

    def tobytes(self) -> bytes:
        """The frame as a new bytes object."""
        if self._joined:
            return self.header + self.arrays[0].tobytes()
        out = bytearray(self.nbytes)
        self.write(out)
        return bytes(out)


def encode(msg: Message) -> bytes:
    """Encode `msg` into a new bytes object."""
    return FrameWriter(msg).tobytes()


# --- decode --------------------------------------------------------------------------------


# The first 16 bytes of fixed headers that passed their checks -> (kind, header end, data
# start, table start, table end): all that those checks depend on, so equal bytes pass them
# alike. A frame whose head is here skips them; its bounds, str fields and table are checked
# anyway.
_HEADS: dict[bytes, tuple[_Fixed, int, int, int, int]] = {}
_unpack_head = struct.Struct(f"{_FIXED_AT}s").unpack_from


def decode(buf: bytes | bytearray | memoryview) -> Message:
    """Decode one frame. Arrays are zero-copy views on `buf`: keep `buf` alive while used."""
    total = len(buf)
    if total >= _FIXED_AT:
        known = _HEADS.get(_unpack_head(buf)[0])
        if known is not None and known[2] <= total:  # its data start within the frame
            return _fixed_body(buf, known, total)
    if total < _PREFIX.size:
        raise CodecError(f"truncated frame: {total} B, a frame needs at least {_PREFIX.size} B")
    magic, hlen = _unpack_prefix(buf, 0)
    if magic != MAGIC and magic != FIXED_MAGIC:  # noqa: PLR1714  (bytes: no set lookup)
        raise CodecError(f"bad frame magic {magic!r}, expected {MAGIC!r} or {FIXED_MAGIC!r}")
    end = _PREFIX.size + hlen
    if hlen > MAX_HEADER_BYTES or end > total:
        raise CodecError(f"truncated frame: header claims {hlen} B, frame has {total} B")
    data_start = (end + ALIGN - 1) // ALIGN * ALIGN  # _align(end), without its call
    if magic == FIXED_MAGIC:
        return _decode_fixed(buf, end, data_start, total)
    try:
        header = msgpack.unpackb(
            memoryview(buf)[_PREFIX.size : end], raw=False, strict_map_key=True
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
    if data_start > total:  # a frame always includes the padding after its header
        raise CodecError(f"truncated frame: {total} B, its data starts at {data_start} B")
    arrays = _Table(spec, table, (data_start, total)).arrays(buf, data_start, total)
    arrays = dict(zip(spec.array_fields, arrays))  # noqa: B905  (one each)
    try:
        return _build(spec.cls, fields, arrays)
    except CodecError:
        raise
    except (TypeError, ValueError, AttributeError) as exc:  # e.g. float("fast"), dict(5)
        raise CodecError(f"malformed {kind!r} message: {exc}") from None


def _decode_fixed(buf: Any, end: int, data_start: int, total: int) -> Message:
    """An observation or a chunk from a fixed header ending at `end`."""
    if end < _FIXED_AT:
        raise CodecError(f"truncated frame: a fixed header needs at least 8 B, has {end - 8}")
    version, code, zero, table_bytes = _unpack_fixed_head(buf, 8)
    if version != SCHEMA_VERSION:
        raise SchemaVersionError(version, SCHEMA_VERSION)
    fixed = _FIXED_BY_CODE.get(code)
    if fixed is None or zero:
        known = {f.code: f.kind for f in _FIXED_BY_CODE.values()}
        raise CodecError(f"unknown fixed header kind {code} (byte 11: {zero}); known: {known}")
    table_at = _FIXED_AT + fixed.scalars.size
    if table_at + table_bytes > end:
        raise CodecError(
            f"truncated frame: a fixed {fixed.kind!r} header needs {table_at + table_bytes - 8} B "
            f"with its {table_bytes} B table, has {end - 8}"
        )
    if len(_HEADS) >= PLAN_CACHE_SIZE:
        _HEADS.pop(next(iter(_HEADS)), None)  # another thread may have dropped it
    head = (fixed, end, data_start, table_at, table_at + table_bytes)
    _HEADS[_unpack_head(buf)[0]] = head
    return _fixed_body(buf, head, total)


def _fixed_body(buf: Any, head: tuple[_Fixed, int, int, int, int], total: int) -> Message:
    """The message of a fixed header whose first 16 bytes are checked, `head` their verdict
    (as in _HEADS): its scalar and str fields, its table, its arrays."""
    fixed, end, data_start, table_at, at = head
    table_end = at
    values = fixed.scalars.unpack_from(buf, _FIXED_AT)
    if fixed.texts:
        values = list(values)
        for i in fixed.texts:
            n = values[i]
            if not n:
                values[i] = ""  # the usual empty task: no slice to decode
                continue
            if at + n > end:
                raise CodecError(
                    f"truncated frame: field {fixed.names[i]!r} needs bytes {at}..{at + n}, "
                    f"its header ends at {end}"
                )
            try:
                values[i] = str(buf[at : at + n], "utf-8")
            except UnicodeDecodeError as exc:
                raise CodecError(f"field {fixed.names[i]!r} is not UTF-8: {exc}") from None
            at += n
    if at != end:
        raise CodecError(f"malformed frame header: {end - at} B after its last field")
    if data_start > total:  # a frame always includes the padding after its header
        raise CodecError(f"truncated frame: {total} B, its data starts at {data_start} B")
    raw = bytes(buf[table_at:table_end])
    table = fixed.plans.get(raw) or _table(fixed, raw)
    return fixed.cls(*fixed.order((*values, *table.arrays(buf, data_start, total))))


def _dims_ok(shape: Any) -> bool:
    """A list of up to MAX_NDIM integers >= 0 (exact ints: msgpack's bools and floats are
    refused)."""
    if type(shape) is not list or len(shape) > MAX_NDIM:
        return False
    for d in shape:  # noqa: SIM110  (a loop: all() over a generator costs twice as much)
        if type(d) is not int or d < 0:
            return False
    return True


def _entry(entry: Any) -> tuple[str, np.dtype, tuple[int, ...], int, int]:
    """One array table entry, checked: (name, dtype, shape, offset, nbytes)."""
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
    expected = math.prod(shape) * dt.itemsize
    if nbytes != expected:
        raise CodecError(
            f"array {name!r}: {nbytes} B does not match shape {shape} of {dtype} ({expected} B)"
        )
    return name, dt, tuple(shape), offset, nbytes
