"""Fitting camera frames to the shape the policy asked for: one rule for every transport.

The client fits each frame before handing it to the transport, to the (H, W, 3) the server's
handshake reply names (a LeRobot checkpoint's input size, say). The rule:
- same shape: sent as captured;
- same aspect ratio (within 1 %): `cv2.resize(..., interpolation=INTER_AREA)` to H×W, the
  area-averaging resize that LeRobot/torchvision-style antialiased downscaling approximates;
- different aspect ratio: never a silent stretch (LeRobot's async server stretches, and a
  SmolVLA trained on unstretched frames then fails: LeRobot #2980). `--image_fit` chooses:
  `refuse` (default) fails the handshake naming both shapes and the options;
  `center_crop` crops the largest centred region of the target aspect ratio, then resizes
  (Diffusion-Policy-style crops); `letterbox` resizes to fit inside H×W and pads with black,
  centred (openpi's `resize_with_pad`); `none` sends frames as captured and leaves resizing
  to the server's policy.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np

from asyncinf.runtime.errors import ConfigError, HandshakeError

Shape = tuple[int, int, int]
ASPECT_TOLERANCE = 0.01
IMAGE_FITS = ("refuse", "center_crop", "letterbox", "none")


def import_cv2() -> ModuleType:
    """OpenCV, imported on first use: a session that sends frames as captured does not need it."""
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
    cv2 = import_cv2()
    out = cv2.resize(np.ascontiguousarray(image), (w, h), interpolation=cv2.INTER_AREA)
    return out.reshape(h, w, *image.shape[2:])  # cv2 drops a trailing channel axis of 1
