"""Drawing the simulated arm: a 2-D side view of its chain over a seeded background.

The same joint positions and seed give the same bytes. OpenCV (the `opencv` extra) is
imported when a renderer is made (a camera connects), never at import.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from asyncinf.robots.sim.arm import Chain
from asyncinf.runtime.errors import RobotError


def _cv2() -> Any:
    try:
        import cv2  # noqa: PLC0415  (optional extra: asyncinf[opencv])
    except ImportError:
        raise RobotError(
            "sim cameras draw with OpenCV: pip install 'asyncinf[opencv]' "
            "(or run the sim robot without cameras: --robot.cameras=null)"
        ) from None
    return cv2


class Renderer:
    """Draws one camera's frames: a side view of the arm over a seeded background.

    The background is generated once; a frame is a copy of it with the chain drawn on top,
    with sub-pixel coordinates (cv2's `shift`) so that any change of a joint shows.
    """

    _SHIFT = 4  # fractional bits of drawing coordinates
    _LINK_COLORS = ((230, 120, 40), (60, 170, 230), (120, 200, 80), (200, 80, 180))

    def __init__(self, height: int, width: int, seed: int, chain: Chain) -> None:
        self.cv2 = _cv2()
        self.height, self.width, self.chain = height, width, chain
        self.scale = min(height, width)
        self.base = (0.5 * width, 0.85 * height)
        self.thickness = max(2, round(self.scale / 40))
        self.background = self._background(seed)

    def _background(self, seed: int) -> np.ndarray:
        cv2, h, w = self.cv2, self.height, self.width
        rng = np.random.default_rng(seed)
        coarse = rng.integers(70, 200, size=(6, 8, 3), dtype=np.uint8)
        img = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
        for _ in range(10):  # seeded shapes on the wall: features a vision model can latch onto
            color = tuple(int(c) for c in rng.integers(0, 256, 3))
            x, y = int(rng.integers(0, w)), int(rng.integers(0, int(0.8 * h)))
            r = int(rng.integers(self.scale // 30 + 1, self.scale // 8 + 2))
            if rng.random() < 0.5:
                cv2.circle(img, (x, y), r, color, -1, cv2.LINE_AA)
            else:
                cv2.rectangle(img, (x - r, y - r // 2), (x + r, y + r // 2), color, -1)
        floor = int(0.88 * h)
        tile = max(4, self.scale // 16)
        yy, xx = np.mgrid[floor:h, 0:w]
        checker = ((yy // tile + xx // tile) % 2).astype(bool)
        light, dark = rng.integers(150, 230, 3), rng.integers(40, 110, 3)
        img[floor:h] = np.where(checker[..., None], light, dark).astype(np.uint8)
        grain = rng.integers(-10, 11, size=(h, w, 1), dtype=np.int16)
        return np.clip(img.astype(np.int16) + grain, 0, 255).astype(np.uint8)

    def _pt(self, x: float, y: float) -> tuple[int, int]:
        return (self._len(x), self._len(y))

    def _len(self, v: float) -> int:
        return round(v * (1 << self._SHIFT))

    def render(self, q: np.ndarray, label: str | None = None) -> np.ndarray:
        """One RGB frame of the arm at joint values `q` (a new array)."""
        cv2, chain, s, t = self.cv2, self.chain, self.scale, self.thickness
        aa, sh = cv2.LINE_AA, self._SHIFT
        img = self.background.copy()
        x, y = self.base
        # Pan turns the arm about the vertical axis: the side view sees it foreshortened.
        pan = math.radians(float(q[chain.pan])) if chain.pan is not None else 0.0
        fore = math.cos(pan)
        bw = 0.09 * s
        cv2.ellipse(
            img, self._pt(x, y), self._pt(bw, 0.3 * bw), 0, 0, 360, (70, 70, 80), -1, aa, sh
        )
        cv2.line(
            img,
            self._pt(x, y),
            self._pt(x + bw * math.sin(pan), y + 0.3 * bw * math.cos(pan)),
            (240, 240, 240),
            max(1, t // 2),
            aa,
            sh,
        )
        joints = [(x, y)]
        theta_deg = chain.absolute_deg(q)
        for k, (theta, length) in enumerate(zip(theta_deg, chain.lengths, strict=True)):
            a = math.radians(theta)
            nx, ny = x + length * s * math.sin(a) * fore, y - length * s * math.cos(a)
            color = self._LINK_COLORS[k % len(self._LINK_COLORS)]
            cv2.line(img, self._pt(x, y), self._pt(nx, ny), color, t, aa, sh)
            x, y = nx, ny
            joints.append((x, y))
        for jx, jy in joints[:-1]:
            cv2.circle(img, self._pt(jx, jy), self._len(0.8 * t), (235, 235, 225), -1, aa, sh)
            cv2.circle(img, self._pt(jx, jy), self._len(0.8 * t), (40, 40, 40), 1, aa, sh)
        a = math.radians(theta_deg[-1])
        if chain.roll is not None:  # a dial at the wrist shows the roll
            roll = math.radians(float(q[chain.roll]))
            wx, wy = joints[-2]
            r = 1.6 * t
            cv2.line(
                img,
                self._pt(wx, wy),
                self._pt(wx + r * math.sin(roll), wy - r * math.cos(roll)),
                (20, 20, 20),
                max(1, t // 2),
                aa,
                sh,
            )
        if chain.gripper is not None:
            opening = 5.0 + 55.0 * float(np.clip(q[chain.gripper], 0.0, 100.0)) / 100.0
            roll = math.radians(float(q[chain.roll])) if chain.roll is not None else 0.0
            half = math.radians(opening / 2) * (0.3 + 0.7 * abs(math.cos(roll)))
            jaw = 0.07 * s
            for side in (-1.0, 1.0):
                b = a + side * half
                tip = (x + jaw * math.sin(b) * fore, y - jaw * math.cos(b))
                cv2.line(
                    img, self._pt(x, y), self._pt(*tip), (50, 50, 60), max(1, t // 2 + 1), aa, sh
                )
        else:
            cv2.circle(img, self._pt(x, y), self._len(0.9 * t), (40, 40, 200), -1, aa, sh)
        if label:
            cv2.putText(
                img,
                label,
                (8, 8 + max(12, s // 24)),
                cv2.FONT_HERSHEY_SIMPLEX,
                max(0.4, s / 960),
                (255, 255, 255),
                1,
                aa,
            )
        return img
