"""Reading a codec frame's fixed header in tests, as the codec's docstring lays it out."""

from __future__ import annotations

import msgpack

from asyncinf.transports import codec


def fixed_header(frame: bytes) -> tuple[dict, list]:
    """(scalar fields by name, array table) of a frame with a fixed header."""
    assert frame[:4] == codec.FIXED_MAGIC
    fixed = codec._FIXED_BY_CODE[frame[10]]
    table_bytes = int.from_bytes(frame[12:16], "little")
    fields = dict(zip(fixed.names, fixed.scalars.unpack_from(frame, 16), strict=True))
    at = 16 + fixed.scalars.size
    return fields, msgpack.unpackb(frame[at : at + table_bytes])
