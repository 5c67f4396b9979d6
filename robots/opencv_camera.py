"""USB cameras and video files through OpenCV, read by a background thread.

The capture thread reads frames as the device delivers them (a video file is paced at the
configured fps and starts again at its end), converts them to RGB, and keeps only the
newest one with its capture time (monotonic ns, taken when `VideoCapture.read` returned).
`read()` never waits for the device: it returns the newest frame, so a slow camera can
delay an observation's image but never the control loop.

Width, height and fps are requested from the device and then checked against what it
reports and against the first frame; a mismatch is an error naming what the device gives.
A failed read reopens the device, at most `max_reconnects` times in a row, after which
`read()` raises. OpenCV (the `opencv` extra) is imported here only, when a camera connects.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from asyncinf.robots.camera import Camera, CameraConfig
from asyncinf.runtime.errors import ConfigError, RobotError
from asyncinf.runtime.rate import Rate

log = logging.getLogger(__name__)

_ROTATIONS = (0, 90, 180, 270)


@dataclass
class OpenCVCameraConfig(CameraConfig):
    """LeRobot's `OpenCVCameraConfig` fields, plus reconnect and timing bounds.

    `width` and `height` are those of the frames `read()` returns, after `rotation`.
    """

    index_or_path: int | str = 0  # /dev/video index, device path, or video file
    color_mode: str = "rgb"  # "rgb" or "bgr"
    rotation: int = 0  # degrees clockwise: 0, 90, 180, 270 (-90 means 270)
    fourcc: str | None = None  # e.g. "MJPG": many USB cameras reach 30 fps at 640x480 only so
    fps_tolerance: float = 0.05  # relative difference allowed between asked and reported fps
    open_timeout_s: float = 5.0  # for the device to open and deliver its first frame
    max_reconnects: int = 3  # reopen attempts in a row after failed reads, then give up
    reconnect_delay_s: float = 0.2
    loop: bool = True  # video files: start again at the end

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.index_or_path, str) and self.index_or_path.strip().isdigit():
            self.index_or_path = int(self.index_or_path)
        if isinstance(self.index_or_path, int) and self.index_or_path < 0:
            raise ConfigError(f"index_or_path={self.index_or_path}: a camera index is >= 0")
        if self.color_mode not in ("rgb", "bgr"):
            raise ConfigError(f"color_mode={self.color_mode!r}: use 'rgb' or 'bgr'")
        if self.rotation == -90:
            self.rotation = 270
        if self.rotation not in _ROTATIONS:
            raise ConfigError(f"rotation={self.rotation!r}: use one of {_ROTATIONS}")
        if self.fourcc is not None and len(self.fourcc) != 4:
            raise ConfigError(f"fourcc={self.fourcc!r}: a 4-character code such as 'MJPG'")
        if self.fps_tolerance < 0 or self.open_timeout_s <= 0 or self.reconnect_delay_s < 0:
            raise ConfigError("fps_tolerance, open_timeout_s and reconnect_delay_s must be >= 0")
        if self.max_reconnects < 0:
            raise ConfigError(f"max_reconnects={self.max_reconnects}: must be >= 0")


class OpenCVCamera(Camera):
    config_class = OpenCVCameraConfig

    def __init__(self, config: OpenCVCameraConfig) -> None:
        super().__init__(config)
        self.config: OpenCVCameraConfig = config
        src = config.index_or_path
        self.is_file = isinstance(src, str) and os.path.isfile(src)  # noqa: PTH113
        self.name = f"camera {src!r}" if isinstance(src, str) else f"camera index {src}"
        self._cv2: Any = None
        self._cap: Any = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._frame: np.ndarray | None = None
        self._frame_ns = 0
        self._frames = 0
        self._interval_ns = 0.0  # smoothed time between frames
        self._reconnects = 0
        self._error: str | None = None

    # -- Camera interface --------------------------------------------------------------------

    def connect(self) -> None:
        """Open and check the device, start capturing, wait for the first frame."""
        if self._thread is not None:
            return
        try:
            import cv2  # noqa: PLC0415  (optional extra: asyncinf[opencv])
        except ImportError:
            raise RobotError("OpenCV cameras need opencv: pip install 'asyncinf[opencv]'") from None
        self._cv2 = cv2
        self._cap = self._open()
        self._stop.clear()
        self._error = None
        self._thread = threading.Thread(target=self._run, name=f"capture {self.name}", daemon=True)
        self._thread.start()
        try:
            self.wait_for_frame(0, self.config.open_timeout_s)
        except RobotError:
            self.disconnect()
            raise

    def read(self) -> tuple[np.ndarray, int]:
        """The newest frame (HxWx3 uint8, RGB unless `color_mode="bgr"`) and its capture time.

        Returns at once; only before the first frame does it wait (up to `open_timeout_s`).
        Raises RobotError once the capture thread has given up.
        """
        with self._cond:
            if self._error is not None:
                raise RobotError(f"{self.name}: {self._error}")
            if self._frame is not None:
                return self._frame, self._frame_ns
        return self.wait_for_frame(0, self.config.open_timeout_s)

    def wait_for_frame(self, after_ns: int, timeout_s: float) -> tuple[np.ndarray, int]:
        """Wait for a frame captured after `after_ns` (monotonic ns)."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._error is None and (self._frame is None or self._frame_ns <= after_ns):
                if self._thread is None:
                    raise RobotError(f"{self.name} is not connected")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise RobotError(f"{self.name}: no new frame within {timeout_s:g} s")
                self._cond.wait(remaining)
            if self._error is not None:
                raise RobotError(f"{self.name}: {self._error}")
            assert self._frame is not None
            return self._frame, self._frame_ns

    def disconnect(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            thread.join(timeout=max(2.0, self.config.open_timeout_s))
            if thread.is_alive():
                log.warning("%s: capture thread still blocked in the driver", self.name)
        cap, self._cap = self._cap, None
        if cap is not None and (thread is None or not thread.is_alive()):
            cap.release()
        with self._cond:
            self._frame = None
            self._cond.notify_all()

    # -- reporting ---------------------------------------------------------------------------

    @property
    def frame_age_ms(self) -> float | None:
        """How old the newest frame is, or None before the first one."""
        with self._cond:
            if self._frame is None:
                return None
            return (time.monotonic_ns() - self._frame_ns) / 1e6

    def stats(self) -> dict[str, Any]:
        with self._cond:
            fps = 1e9 / self._interval_ns if self._interval_ns else None
            return {
                "frames": self._frames,
                "fps": fps,
                "frame_age_ms": None
                if self._frame is None
                else (time.monotonic_ns() - self._frame_ns) / 1e6,
                "reconnects": self._reconnects,
                "error": self._error,
            }

    # -- device ------------------------------------------------------------------------------

    def _capture_size(self) -> tuple[int, int]:
        """(width, height) the device must deliver, before rotation."""
        w, h = self.config.width, self.config.height
        return (h, w) if self.config.rotation in (90, 270) else (w, h)

    def _open(self) -> Any:
        cv2, c = self._cv2, self.config
        src = c.index_or_path
        if isinstance(src, str) and not self.is_file and not os.path.exists(src):  # noqa: PTH110
            raise RobotError(f"{self.name}: no such device or file")
        cap = cv2.VideoCapture(src)
        # Bound every blocking read where the backend allows it (V4L2 gives up after 10 s).
        if hasattr(cv2, "CAP_PROP_READ_TIMEOUT_MSEC"):
            cap.set(cv2.CAP_PROP_READ_TIMEOUT_MSEC, c.open_timeout_s * 1e3)
        if not cap.isOpened():
            cap.release()
            raise RobotError(
                f"{self.name}: cannot open it (wrong index or path, no permission to "
                "/dev/video*, or in use by another program)"
            )
        want_w, want_h = self._capture_size()
        if not self.is_file:
            if c.fourcc:
                cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*c.fourcc))
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, want_w)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, want_h)
            cap.set(cv2.CAP_PROP_FPS, c.fps)
        got_w = round(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        got_h = round(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        got_fps = cap.get(cv2.CAP_PROP_FPS)
        problem = None
        if (got_w, got_h) != (want_w, want_h):
            problem = (
                f"asked for {want_w}x{want_h}, it gives {got_w}x{got_h}; set width: {got_w}, "
                f"height: {got_h} (rotation swaps them), or pick a size the camera supports "
                "(v4l2-ctl --list-formats-ext)"
            )
        elif got_fps > 0 and abs(got_fps - c.fps) > c.fps_tolerance * c.fps:
            problem = (
                f"asked for {c.fps:g} fps, it reports {got_fps:g} fps; set fps: {got_fps:g} "
                "(or try fourcc: MJPG for higher rates)"
            )
        if problem is not None:
            cap.release()
            raise RobotError(f"{self.name}: {problem}")
        if got_fps <= 0:
            log.warning("%s does not report its frame rate; it is measured instead", self.name)
        return cap

    def _convert(self, frame: np.ndarray) -> np.ndarray:
        cv2, c = self._cv2, self.config
        if c.color_mode == "rgb":
            frame = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        if c.rotation == 90:
            frame = cv2.rotate(frame, cv2.ROTATE_90_CLOCKWISE)
        elif c.rotation == 180:
            frame = cv2.rotate(frame, cv2.ROTATE_180)
        elif c.rotation == 270:
            frame = cv2.rotate(frame, cv2.ROTATE_90_COUNTERCLOCKWISE)
        return frame

    def _fail(self, message: str) -> None:
        log.error("%s: %s", self.name, message)
        with self._cond:
            self._error = message
            self._cond.notify_all()

    def _run(self) -> None:
        """Capture loop: newest frame wins; bounded reconnects."""
        c = self.config
        # A file decodes as fast as the CPU allows: pace it like the camera it stands for.
        rate = Rate(c.fps, sleep=self._stop.wait) if self.is_file else None
        failures = 0
        since_rewind = 0
        while not self._stop.is_set():
            if rate is not None:
                rate.sleep()
                if self._stop.is_set():
                    break
            ok, frame = self._cap.read()
            now_ns = time.monotonic_ns()
            if ok and frame is not None:
                failures = 0
                since_rewind += 1
                frame = self._convert(frame)
                if frame.shape != self.shape:
                    self._fail(f"frames are {frame.shape}, expected {self.shape}")
                    return
                self._publish(frame, now_ns)
                continue
            if self.is_file and c.loop and since_rewind:
                since_rewind = 0
                self._cap.set(self._cv2.CAP_PROP_POS_FRAMES, 0)
                continue
            # A device that stopped delivering (unplugged, driver hiccup), or the end of a
            # file that does not loop: reopen it, a bounded number of times in a row.
            failures += 1
            if failures > c.max_reconnects:
                self._fail(f"reading failed {failures} times in a row; gave up reconnecting")
                return
            log.warning("%s: read failed; reconnecting (%d of %d)", self.name, failures,
                        c.max_reconnects)  # fmt: skip
            self._cap.release()
            self._reconnects += 1
            if self._stop.wait(c.reconnect_delay_s):
                return
            try:
                self._cap = self._open()
            except RobotError as exc:
                log.warning("%s", exc)
                self._cap = _ClosedCapture()

    def _publish(self, frame: np.ndarray, now_ns: int) -> None:
        with self._cond:
            if self._frame_ns:
                dt = now_ns - self._frame_ns
                self._interval_ns = (
                    dt if not self._interval_ns else 0.9 * self._interval_ns + 0.1 * dt
                )
            self._frame, self._frame_ns = frame, now_ns
            self._frames += 1
            self._cond.notify_all()


class _ClosedCapture:
    """Stands in for a device that failed to reopen: every read fails."""

    def read(self) -> tuple[bool, None]:
        return False, None

    def release(self) -> None:
        pass

    def set(self, *args: object) -> bool:
        return False
