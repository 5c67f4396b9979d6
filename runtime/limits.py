"""What a server accepts from a client: handshake limits and the shape of each observation.

Every size in a handshake is the client's choice, and each one sizes something on the server
(a policy built for 10**7 actions per chunk took 1.4 GB), so each has a limit, generous for
any real robot and stated in the README. An observation must then be what the handshake
announced: finite state of one value per joint, exactly the cameras agreed, each frame of the
agreed shape and dtype. Anything else is refused before it reaches the policy.
"""

from __future__ import annotations

import math

import numpy as np

from asyncinf.runtime.errors import ConfigError
from asyncinf.runtime.messages import NO_RTC, Handshake, Observation

MAX_JOINTS = 256  # a humanoid with hands has ~60
MAX_CAMERAS = 16
MAX_IMAGE_SIDE = 4096  # pixels, height and width
MAX_ACTIONS_PER_CHUNK = 1000  # LeRobot's policies use 8 to 100
MAX_FPS = 1000.0
MAX_NAME_CHARS = 128  # a joint's, a camera's, the robot type
MAX_TASK_CHARS = 4096  # the language instruction

LIMITS = {
    "joints": MAX_JOINTS,
    "cameras": MAX_CAMERAS,
    "image height and width (pixels)": MAX_IMAGE_SIDE,
    "actions_per_chunk": MAX_ACTIONS_PER_CHUNK,
    "fps": MAX_FPS,
    "characters in a name (joint, camera, robot type)": MAX_NAME_CHARS,
    "characters in the task": MAX_TASK_CHARS,
}


def _at_most(what: str, value: float, limit: float) -> None:
    if value > limit:
        raise ConfigError(f"handshake refused: {value:g} {what}, the limit is {limit:g}")


def _name(what: str, name: object) -> None:
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_CHARS:
        shown = repr(name) if len(repr(name)) <= 40 else f"{repr(name)[:37]}..."
        raise ConfigError(
            f"handshake refused: {what} name {shown} must be 1 to {MAX_NAME_CHARS} characters"
        )


def check_handshake(hello: Handshake) -> None:
    """Raise ConfigError, in one line naming the limit, for a handshake beyond any limit."""
    _at_most("joints", len(hello.joint_names), MAX_JOINTS)
    if not hello.joint_names:
        raise ConfigError("handshake refused: no joints")
    for joint in hello.joint_names:
        _name("joint", joint)
    _at_most("cameras", len(hello.cameras), MAX_CAMERAS)
    for cam, shape in hello.cameras.items():
        _name("camera", cam)
        if len(shape) != 3 or not (
            0 < shape[0] <= MAX_IMAGE_SIDE and 0 < shape[1] <= MAX_IMAGE_SIDE and shape[2] == 3
        ):
            raise ConfigError(
                f"handshake refused: camera {cam!r} of shape {tuple(shape)}; frames are "
                f"(H, W, 3) with H and W from 1 to {MAX_IMAGE_SIDE}"
            )
    _at_most("actions_per_chunk", hello.policy.actions_per_chunk, MAX_ACTIONS_PER_CHUNK)
    if not 0 < hello.fps <= MAX_FPS or not math.isfinite(hello.fps):
        raise ConfigError(f"handshake refused: fps {hello.fps:g}, must be in (0, {MAX_FPS:g}]")
    if hello.robot_type:
        _name("robot type", hello.robot_type)
    _at_most("characters in the task", len(hello.task), MAX_TASK_CHARS)


def check_observation(
    obs: Observation,
    joints: int,
    images: dict[str, tuple[int, int, int]],
    rtc_chunk: int | None = None,
) -> str | None:
    """None for an observation the handshake announced; else why not, in one line.

    `images`: camera -> (H, W, 3) expected, exactly the cameras the client agreed to send.
    `rtc_chunk`: the session's actions per chunk when it runs with real-time chunking (the
    delay and the tail are then bounded by it); None: the session has none, and the
    observation must carry none.
    """
    state = obs.state
    if state.dtype != np.float32 or state.shape != (joints,):
        return f"state of {state.dtype} {state.shape}, the handshake agreed float32 ({joints},)"
    if not np.isfinite(state).all():
        bad = int(np.flatnonzero(~np.isfinite(state))[0])
        return f"state has {state[bad]} at joint {bad}: not inferred"
    if obs.images.keys() != images.keys():
        missing, extra = sorted(images.keys() - obs.images), sorted(obs.images.keys() - images)
        return f"cameras {sorted(obs.images)}: missing {missing}, extra {extra}"
    for cam, frame in obs.images.items():
        if frame.dtype != np.uint8 or frame.shape != tuple(images[cam]):
            return (
                f"camera {cam!r} frame of {frame.dtype} {frame.shape}, "
                f"the handshake agreed uint8 {tuple(images[cam])}"
            )
    if len(obs.task) > MAX_TASK_CHARS:
        return f"task of {len(obs.task)} characters, the limit is {MAX_TASK_CHARS}"
    return _check_rtc(obs, joints, rtc_chunk)


def _check_rtc(obs: Observation, joints: int, chunk: int | None) -> str | None:
    delay, tail = obs.inference_delay, obs.prev_chunk_left_over
    if chunk is None:
        if delay != NO_RTC or tail.size:
            return (
                f"inference_delay {delay} and a tail of {tail.shape[0]} actions, but the session "
                "was started without --rtc: not inferred"
            )
        return None
    if not 0 <= delay <= chunk:
        return f"inference_delay {delay}: must be 0 to {chunk} ticks (the chunk's length)"
    if tail.dtype != np.float32 or tail.ndim != 2 or tail.shape[1:] != (joints,):
        return (
            f"prev_chunk_left_over of {tail.dtype} {tail.shape}, the handshake agreed "
            f"float32 (K, {joints})"
        )
    if len(tail) > chunk:
        return f"prev_chunk_left_over of {len(tail)} actions, more than a chunk ({chunk})"
    if not np.isfinite(tail).all():
        k, j = np.argwhere(~np.isfinite(tail))[0]
        return f"prev_chunk_left_over has {tail[k, j]} at action {k}, joint {j}: not inferred"
    return None
