"""JPEG with checked headers, and what resizing plus JPEG saves on the wire."""

import numpy as np
import pytest

from asyncinf.runtime.errors import CodecError
from asyncinf.runtime.images import fit_image
from asyncinf.transports.grpc import images
from asyncinf.transports.testing import synthetic_frame


def test_jpeg_round_trip_keeps_rgb_order() -> None:
    frame = np.zeros((64, 64, 3), np.uint8)
    frame[..., 0] = 200  # red
    data = images.encode_jpeg(frame, 90)
    assert images.jpeg_size(data) == (64, 64)
    got = images.decode_jpeg(data, 64, 64, 1 << 20)
    assert got[..., 0].mean() > 180 and got[..., 2].mean() < 20


def test_jpeg_header_is_checked_before_decoding() -> None:
    data = images.encode_jpeg(synthetic_frame(64, 48), 90)
    with pytest.raises(CodecError, match="declared"):
        images.decode_jpeg(data, 64, 64, 1 << 20)  # the header says 64x48
    with pytest.raises(CodecError, match="at most"):
        images.decode_jpeg(data, 64, 48, 100)
    with pytest.raises(CodecError, match="at most"):
        images.decode_jpeg(data, 0, 48, 1 << 20)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x89PNG\r\n\x1a\n" + bytes(100),
        b"\xff\xd8",
        b"\xff\xd8\xff\xe0\x00\x10JFIF",
        b"\xff\xd8\x00\x00\x00",
    ],
)
def test_not_a_jpeg_is_refused(data) -> None:
    with pytest.raises(CodecError):
        images.decode_jpeg(data, 8, 8, 1 << 20)


def test_truncated_jpeg_body_is_refused_or_decoded_to_the_declared_size() -> None:
    data = images.encode_jpeg(synthetic_frame(64, 64), 90)
    try:
        got = images.decode_jpeg(data[: len(data) // 2], 64, 64, 1 << 20)
    except CodecError:
        return
    assert got.shape == (64, 64, 3)  # libjpeg pads a truncated scan; the size still holds


def test_resize_and_jpeg_make_a_vga_frame_ten_times_smaller() -> None:
    frame = synthetic_frame(480, 640)
    fitted = fit_image(frame, (224, 224, 3), "center_crop")
    data = images.encode_jpeg(fitted, 90)
    assert frame.nbytes / len(data) >= 10
