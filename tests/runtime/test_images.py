"""Fitting frames to the shape the policy asked for: one rule for every transport, never a
silent stretch."""

import cv2
import numpy as np
import pytest

from asyncinf.runtime.errors import HandshakeError
from asyncinf.runtime.images import fit_image, plan_fit
from asyncinf.transports.testing import synthetic_frame


def test_same_shape_is_untouched() -> None:
    assert plan_fit("c", (480, 640, 3), (480, 640, 3), "refuse") is None
    frame = np.zeros((480, 640, 3), np.uint8)
    assert fit_image(frame, (480, 640, 3), "refuse") is frame


def test_same_aspect_is_a_plain_inter_area_resize() -> None:
    frame = synthetic_frame(480, 640)
    assert plan_fit("c", (480, 640, 3), (240, 320, 3), "refuse") == (240, 320, 3)
    got = fit_image(frame, (240, 320, 3), "refuse")
    np.testing.assert_array_equal(got, cv2.resize(frame, (320, 240), interpolation=cv2.INTER_AREA))


def test_different_aspect_is_refused_by_default_naming_the_options() -> None:
    with pytest.raises(HandshakeError, match="center_crop or letterbox") as info:
        plan_fit("front", (480, 640, 3), (224, 224, 3), "refuse")
    assert "480x640" in str(info.value) and "224x224" in str(info.value)


def test_channel_mismatch_is_refused() -> None:
    with pytest.raises(HandshakeError, match="channels"):
        plan_fit("depth", (480, 640, 1), (480, 640, 3), "center_crop")


def test_none_sends_as_captured() -> None:
    assert plan_fit("c", (480, 640, 3), (224, 224, 3), "none") is None


def test_center_crop_keeps_the_middle() -> None:
    frame = np.zeros((480, 640, 3), np.uint8)
    frame[:, 80:560] = 255  # the centred 480x480 square is white, the sides black
    got = fit_image(frame, (224, 224, 3), "center_crop")
    assert got.shape == (224, 224, 3)
    assert got.min() == 255


def test_letterbox_pads_with_black_and_keeps_everything() -> None:
    frame = np.full((480, 640, 3), 255, np.uint8)
    got = fit_image(frame, (224, 224, 3), "letterbox")
    assert got.shape == (224, 224, 3)
    # 640x480 scaled to 224x168, centred: 28 black rows above and below.
    assert got[:27].max() == 0 and got[-27:].max() == 0
    assert got[29:-29].min() == 255
