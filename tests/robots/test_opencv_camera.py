"""OpenCVCamera on video files the tests write with cv2.VideoWriter (MJPG in .avi)."""

import contextlib
import time

import cv2
import numpy as np
import pytest

from asyncinf.robots.camera import make_camera
from asyncinf.robots.opencv_camera import OpenCVCamera, OpenCVCameraConfig
from asyncinf.runtime.errors import ConfigError, RobotError

W, H, FPS = 64, 48, 200  # a fast file keeps the tests short
BGR_BLUE = (255, 0, 0)


def write_video(path, frames=10, fps=FPS, size=(W, H), color=BGR_BLUE):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    assert writer.isOpened()
    for i in range(frames):
        frame = np.zeros((size[1], size[0], 3), np.uint8)
        frame[:] = color
        frame[0, 0] = (i, i, i)  # differs per frame
        writer.write(frame)
    writer.release()
    return str(path)


@pytest.fixture
def video(tmp_path):
    return write_video(tmp_path / "front.avi")


def camera(path, **kw):
    return OpenCVCamera(
        OpenCVCameraConfig(index_or_path=path, **{"width": W, "height": H, "fps": FPS, **kw})
    )


@contextlib.contextmanager
def connected(path, **kw):
    cam = camera(path, **kw)
    cam.connect()
    try:
        yield cam
    finally:
        cam.disconnect()


def test_frames_are_rgb_with_capture_times(video):
    with connected(video) as cam:
        frame, t_ns = cam.read()
        assert frame.shape == (H, W, 3) and frame.dtype == np.uint8
        # BGR blue written, RGB blue read (MJPG is lossy: compare loosely).
        r, g, b = frame[H // 2, W // 2].astype(int)
        assert b > 200 and r < 40 and g < 40
        assert 0 < t_ns <= time.monotonic_ns()


def test_bgr_mode_keeps_opencv_order(video):
    with connected(video, color_mode="bgr") as cam:
        b, _, r = cam.read()[0][H // 2, W // 2].astype(int)
        assert b > 200 and r < 40


def test_newest_frame_semantics(video):
    with connected(video) as cam:
        first, t1 = cam.read()
        _, t2 = cam.wait_for_frame(t1, timeout_s=5)
        assert t2 > t1
        _, t3 = cam.read()
        assert t3 >= t2  # read() returns the newest, never an older one
        # A frame handed out is never written to again.
        copy = first.copy()
        cam.wait_for_frame(t3, timeout_s=5)
        assert np.array_equal(first, copy)
        assert cam.frame_age_ms is not None and cam.frame_age_ms >= 0


def test_a_file_is_paced_and_loops(video):
    with connected(video) as cam:
        _, t = cam.read()
        for _ in range(25):  # more than the file's 10 frames: it started again
            _, t = cam.wait_for_frame(t, timeout_s=5)
        stats = cam.stats()
        assert stats["frames"] >= 25 and stats["error"] is None
        assert 0 < stats["fps"] < 2 * FPS  # paced, not decoded as fast as possible


def test_size_mismatch_names_what_the_device_gives(video):
    with pytest.raises(RobotError, match="asked for 640x480, it gives 64x48"):
        camera(video, width=640, height=480).connect()


def test_fps_mismatch_names_what_the_device_reports(video):
    with pytest.raises(RobotError, match="asked for 30 fps, it reports 200 fps"):
        camera(video, fps=30).connect()


def test_rotation_swaps_width_and_height(video):
    with connected(video, width=H, height=W, rotation=90) as cam:
        assert cam.read()[0].shape == (W, H, 3) == cam.shape


def test_missing_device_or_file(tmp_path):
    with pytest.raises(RobotError, match="no such device or file"):
        camera(str(tmp_path / "nope.avi")).connect()


def test_reconnects_are_bounded_then_read_raises(tmp_path):
    path = tmp_path / "short.avi"
    write_video(path, frames=3)
    cam = camera(str(path), loop=False, max_reconnects=2, reconnect_delay_s=0.01)
    cam.connect()
    path.unlink()  # the "device" is gone: every reopen fails
    try:
        deadline = time.monotonic() + 10
        with pytest.raises(RobotError, match="gave up"):
            _, t = cam.read()
            while time.monotonic() < deadline:
                _, t = cam.wait_for_frame(t, timeout_s=5)
        assert cam.stats()["reconnects"] == 2
        with pytest.raises(RobotError, match="gave up"):
            cam.read()
    finally:
        cam.disconnect()


def test_config_validation_and_the_registry(video):
    with pytest.raises(ConfigError, match="color_mode"):
        OpenCVCameraConfig(index_or_path=0, color_mode="yuv")
    with pytest.raises(ConfigError, match="rotation"):
        OpenCVCameraConfig(index_or_path=0, rotation=45)
    assert OpenCVCameraConfig(index_or_path="2").index_or_path == 2
    assert OpenCVCameraConfig(rotation=-90).rotation == 270
    cam = make_camera(
        {"type": "opencv", "index_or_path": video, "width": W, "height": H, "fps": FPS}
    )
    assert isinstance(cam, OpenCVCamera) and cam.shape == (H, W, 3)
    with pytest.raises(ConfigError, match=r"--camera\.bogus"):
        make_camera({"type": "opencv", "bogus": 1})
