"""JPEG for camera frames on the gRPC wire (frames are fitted before: runtime/images.py).

Frames are RGB; OpenCV's codec expects BGR, so channels are swapped around it, which keeps
the JPEG's luma weights right. A received JPEG's header is parsed for its size and checked
against limits before the decoder allocates anything.
"""

from __future__ import annotations

import struct

import numpy as np

from asyncinf.runtime.errors import CodecError
from asyncinf.runtime.images import import_cv2


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    """JPEG bytes of an HxWx3 RGB uint8 frame."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise CodecError(f"JPEG needs HxWx3 uint8 frames, got {image.dtype} {image.shape}")
    cv2 = import_cv2()
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise CodecError(f"JPEG encoding failed for a frame of shape {image.shape}")
    return buf.tobytes()


# Start-of-frame markers carry the size; C4 (DHT), C8 (JPG) and CC (DAC) share the range.
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_STANDALONE = frozenset((0x01, *range(0xD0, 0xD8)))  # TEM, RSTn: no length field


def jpeg_size(data: bytes) -> tuple[int, int]:
    """(height, width) from a JPEG's start-of-frame header, without decoding pixels."""
    if data[:2] != b"\xff\xd8":
        raise CodecError("image is not a JPEG (no start-of-image marker)")
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            raise CodecError(f"malformed JPEG: expected a marker at byte {i}")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _STANDALONE:
            i += 2
            continue
        (length,) = struct.unpack_from(">H", data, i + 2)
        if marker in _SOF:
            if i + 9 > n:
                break
            h, w = struct.unpack_from(">HH", data, i + 5)
            return h, w
        if marker == 0xDA or length < 2:  # start of scan before any frame header
            break
        i += 2 + length
    raise CodecError("malformed JPEG: no frame header with the image size")


def decode_jpeg(data: bytes, height: int, width: int, max_pixels: int) -> np.ndarray:
    """Decode to HxWx3 RGB uint8, refusing before allocation what the header says is too big
    or what does not match the declared size."""
    if not 0 < height * width <= max_pixels:
        raise CodecError(
            f"JPEG declared {height}x{width}: must be > 0 and at most {max_pixels} pixels"
        )
    got = jpeg_size(data)
    if got != (height, width):
        raise CodecError(f"JPEG header says {got[0]}x{got[1]}, message declared {height}x{width}")
    cv2 = import_cv2()
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None or bgr.shape != (height, width, 3):
        raise CodecError(f"JPEG of {len(data)} B did not decode to {height}x{width}x3")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
