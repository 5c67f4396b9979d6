"""Fitting camera frames to the shape the policy asked for, and JPEG.

The rule (it must match what the policy's own preprocessing does, so the client states it
instead of guessing):
- same shape: sent as captured;
- same aspect ratio (within 1 %): `cv2.resize(..., interpolation=INTER_AREA)` to H×W, the
  area-averaging resize that LeRobot/torchvision-style antialiased downscaling approximates;
- different aspect ratio: never a silent stretch. `image_fit` chooses:
  `refuse` (default) fails the handshake naming both shapes and the options;
  `center_crop` crops the largest centred region of the target aspect ratio, then resizes
  (Diffusion-Policy-style crops); `letterbox` resizes to fit inside H×W and pads with black,
  centred (openpi's `resize_with_pad`); `none` sends frames as captured and leaves resizing
  to the server's policy.

JPEG: frames are RGB; OpenCV's codec expects BGR, so channels are swapped around it, which
keeps the JPEG's luma weights right. A received JPEG's header is parsed for its size and
checked against limits before the decoder allocates anything.
"""

from __future__ import annotations

import struct
from types import ModuleType

import numpy as np

from asyncinf.runtime.errors import CodecError, ConfigError, HandshakeError

Shape = tuple[int, int, int]
ASPECT_TOLERANCE = 0.01


def _cv2() -> ModuleType:
    """OpenCV, imported on first use: a raw, unresized session does not need it."""
    try:
        import cv2  # noqa: PLC0415
    except ImportError:
        raise ConfigError(
            "resizing or JPEG-encoding camera frames needs OpenCV: "
            "pip install 'asyncinf[opencv]' (or --image_codec=raw --image_fit=none)"
        ) from None
    return cv2


def same_aspect(a: Shape, b: Shape) -> bool:
    return abs(a[0] * b[1] - b[0] * a[1]) <= ASPECT_TOLERANCE * a[0] * b[1]


def plan_fit(camera: str, captured: Shape, wanted: Shape, fit: str) -> Shape | None:
    """The shape to send `camera`'s frames at, or None to send them as captured.

    Raises HandshakeError when the shapes cannot be reconciled under `fit`.
    """
    if fit == "none" or tuple(captured) == tuple(wanted):
        return None
    if captured[2] != wanted[2]:
        raise HandshakeError(
            f"camera {camera!r}: captured with {captured[2]} channels, the policy wants "
            f"{wanted[2]}; no conversion is done silently"
        )
    if not same_aspect(captured, wanted) and fit == "refuse":
        raise HandshakeError(
            f"camera {camera!r}: captured at {captured[0]}x{captured[1]} (HxW), the policy "
            f"wants {wanted[0]}x{wanted[1]}: the aspect ratios differ and stretching is never "
            "done silently; choose --image_fit=center_crop or letterbox (whichever the policy "
            "was trained with), or none to send frames as captured"
        )
    return (wanted[0], wanted[1], wanted[2])


def fit_image(image: np.ndarray, wanted: Shape, fit: str) -> np.ndarray:
    """Fit one HxWxC uint8 frame to `wanted` under the rule above."""
    h, w = image.shape[:2]
    th, tw = wanted[0], wanted[1]
    if (h, w) == (th, tw):
        return image
    if same_aspect(image.shape, wanted):
        return _resize(image, th, tw)
    if fit == "center_crop":
        if w * th > h * tw:  # too wide: crop columns
            cw = max(1, round(h * tw / th))
            x0 = (w - cw) // 2
            image = image[:, x0 : x0 + cw]
        else:
            ch = max(1, round(w * th / tw))
            y0 = (h - ch) // 2
            image = image[y0 : y0 + ch]
        return _resize(image, th, tw)
    if fit == "letterbox":
        scale = min(th / h, tw / w)
        rh, rw = max(1, round(h * scale)), max(1, round(w * scale))
        out = np.zeros((th, tw, *image.shape[2:]), np.uint8)
        y0, x0 = (th - rh) // 2, (tw - rw) // 2
        out[y0 : y0 + rh, x0 : x0 + rw] = _resize(image, rh, rw)
        return out
    raise ValueError(f"image_fit {fit!r} cannot fit {image.shape} to {wanted}")


def _resize(image: np.ndarray, h: int, w: int) -> np.ndarray:
    cv2 = _cv2()
    out = cv2.resize(np.ascontiguousarray(image), (w, h), interpolation=cv2.INTER_AREA)
    return out.reshape(h, w, *image.shape[2:])  # cv2 drops a trailing channel axis of 1


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    """JPEG bytes of an HxWx3 RGB uint8 frame."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise CodecError(f"JPEG needs HxWx3 uint8 frames, got {image.dtype} {image.shape}")
    cv2 = _cv2()
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
    cv2 = _cv2()
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None or bgr.shape != (height, width, 3):
        raise CodecError(f"JPEG of {len(data)} B did not decode to {height}x{width}x3")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
