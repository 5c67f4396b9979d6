"""Fitting frames to the negotiated shape (never a silent stretch) and JPEG with checked
headers."""

import cv2
import numpy as np
import pytest

from asyncinf.runtime.errors import CodecError, HandshakeError
from asyncinf.transports.grpc import images
from asyncinf.transports.grpc.bench import synthetic_frame


def test_same_shape_is_untouched() -> None:
    assert images.plan_fit("c", (480, 640, 3), (480, 640, 3), "refuse") is None
    frame = np.zeros((480, 640, 3), np.uint8)
    assert images.fit_image(frame, (480, 640, 3), "refuse") is frame


def test_same_aspect_is_a_plain_inter_area_resize() -> None:
    frame = synthetic_frame(480, 640)
    assert images.plan_fit("c", (480, 640, 3), (240, 320, 3), "refuse") == (240, 320, 3)
    got = images.fit_image(frame, (240, 320, 3), "refuse")
    np.testing.assert_array_equal(got, cv2.resize(frame, (320, 240), interpolation=cv2.INTER_AREA))


def test_different_aspect_is_refused_by_default_naming_the_options() -> None:
    with pytest.raises(HandshakeError, match="center_crop or letterbox") as info:
        images.plan_fit("front", (480, 640, 3), (224, 224, 3), "refuse")
    assert "480x640" in str(info.value) and "224x224" in str(info.value)


def test_channel_mismatch_is_refused() -> None:
    with pytest.raises(HandshakeError, match="channels"):
        images.plan_fit("depth", (480, 640, 1), (480, 640, 3), "center_crop")


def test_none_sends_as_captured() -> None:
    assert images.plan_fit("c", (480, 640, 3), (224, 224, 3), "none") is None


def test_center_crop_keeps_the_middle() -> None:
    frame = np.zeros((480, 640, 3), np.uint8)
    frame[:, 80:560] = 255  # the centred 480x480 square is white, the sides black
    got = images.fit_image(frame, (224, 224, 3), "center_crop")
    assert got.shape == (224, 224, 3)
    assert got.min() == 255


def test_letterbox_pads_with_black_and_keeps_everything() -> None:
    frame = np.full((480, 640, 3), 255, np.uint8)
    got = images.fit_image(frame, (224, 224, 3), "letterbox")
    assert got.shape == (224, 224, 3)
    # 640x480 scaled to 224x168, centred: 28 black rows above and below.
    assert got[:27].max() == 0 and got[-27:].max() == 0
    assert got[29:-29].min() == 255


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
    fitted = images.fit_image(frame, (224, 224, 3), "center_crop")
    data = images.encode_jpeg(fitted, 90)
    assert frame.nbytes / len(data) >= 10
