"""Runtime messages ⇄ protobuf, in one place, with every received field checked.

Arrays travel as `Tensor` (dtype string, shape, raw little-endian C-order bytes). On receipt
the dtype must be one of the codec's plain numeric dtypes, every dim >= 0, the element count
and byte size within `Limits`, and `len(data)` exactly `count × itemsize` — all checked from
the claimed shape before an array exists, so a Tensor claiming 10¹² elements costs nothing.
Received frames are read-only zero-copy views on the message's bytes (`wire` decodes
observations without copying them); the small state and actions are copied.

Everything outgoing is serialized here to `bytes`: the gRPC methods are registered with
identity (de)serializers so that a malformed message reaches our own parser and gets a typed
answer, instead of dying inside gRPC's deserializer.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
from google.protobuf.message import DecodeError

from asyncinf.runtime.errors import CodecError, ConfigError
from asyncinf.runtime.messages import (
    ActionChunk,
    ClientReport,
    ErrorMessage,
    Handshake,
    HandshakeReply,
    Observation,
    PolicySpec,
    RtcSettings,
)
from asyncinf.transports.codec import ALLOWED_DTYPES, MAX_NDIM
from asyncinf.transports.grpc import asyncinf_pb2 as pb
from asyncinf.transports.grpc import wire
from asyncinf.transports.grpc.images import decode_jpeg, encode_jpeg

MAX_OPTIONS_JSON_BYTES = 64 * 1024


@dataclass(frozen=True)
class Limits:
    """What a received message may claim."""

    max_tensor_elements: int
    max_tensor_bytes: int

    @property
    def max_image_pixels(self) -> int:
        return self.max_tensor_elements // 3


# --- tensors -------------------------------------------------------------------------------


def tensor_to_proto(array: np.ndarray, out: pb.Tensor) -> None:
    arr = np.asarray(array)
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    if arr.dtype.str not in ALLOWED_DTYPES:
        raise CodecError(f"dtype {arr.dtype} cannot travel; allowed: bool, int, uint, float")
    out.dtype = arr.dtype.str
    out.shape.extend(arr.shape)
    out.data = np.ascontiguousarray(arr).tobytes()


def tensor_from_proto(
    t: pb.Tensor | wire.RawTensor,
    name: str,
    limits: Limits,
    *,
    dtype: np.dtype | type | None = None,
    ndim: int | None = None,
) -> np.ndarray:
    """The array `t` describes, after checking every claim (see the module docstring)."""
    if t.dtype not in ALLOWED_DTYPES:
        raise CodecError(
            f"tensor {name!r}: dtype {t.dtype[:32]!r} refused; allowed {sorted(ALLOWED_DTYPES)}"
        )
    dt = np.dtype(t.dtype)
    if dtype is not None and dt != np.dtype(dtype):
        raise CodecError(f"tensor {name!r}: dtype {dt} where {np.dtype(dtype)} is required")
    shape = list(t.shape)
    if len(shape) > MAX_NDIM or (ndim is not None and len(shape) != ndim):
        want = ndim if ndim is not None else f"at most {MAX_NDIM}"
        raise CodecError(f"tensor {name!r}: {len(shape)} dims, expected {want}")
    if any(d < 0 for d in shape):
        raise CodecError(f"tensor {name!r}: shape {shape} has a negative dim")
    count = math.prod(shape)  # Python ints: no overflow, whatever is claimed
    if count > limits.max_tensor_elements:
        raise CodecError(
            f"tensor {name!r}: shape {shape} claims {count} elements, "
            f"the limit is {limits.max_tensor_elements}"
        )
    nbytes = count * dt.itemsize
    if nbytes > limits.max_tensor_bytes:
        raise CodecError(
            f"tensor {name!r}: {nbytes} B claimed, the limit is {limits.max_tensor_bytes} B"
        )
    if len(t.data) != nbytes:
        raise CodecError(
            f"tensor {name!r}: {len(t.data)} B of data for shape {shape} of {dt.str} "
            f"({nbytes} B expected)"
        )
    return np.frombuffer(t.data, dtype=dt, count=count).reshape(shape)


def _shape3(name: str, dims: list[int] | tuple[int, ...], limits: Limits) -> tuple[int, int, int]:
    if len(dims) != 3 or not all(d > 0 for d in dims):
        raise CodecError(f"{name}: shape {list(dims)} must be [H, W, C] with every dim > 0")
    if math.prod(dims) > limits.max_tensor_elements:
        raise CodecError(f"{name}: shape {list(dims)} exceeds {limits.max_tensor_elements}")
    return (int(dims[0]), int(dims[1]), int(dims[2]))


# --- client -> server ----------------------------------------------------------------------


def parse_up(raw: bytes) -> pb.Up:
    try:
        up = pb.Up.FromString(raw)
    except DecodeError as exc:
        raise CodecError(f"malformed message ({len(raw)} B): {exc}") from None
    if up.WhichOneof("msg") is None:
        raise CodecError(f"message of {len(raw)} B carries none of {_UP_KINDS}")
    return up


_UP_KINDS = [f.name for f in pb.Up.DESCRIPTOR.oneofs_by_name["msg"].fields]


def handshake_to_up(hello: Handshake, client_id: str) -> bytes:
    try:
        options = json.dumps(hello.policy.options)
    except (TypeError, ValueError) as exc:
        raise CodecError(f"policy options must be plain JSON data: {exc}") from None
    up = pb.Up()
    h = up.handshake
    h.schema_version = hello.schema_version
    h.joint_names.extend(hello.joint_names)
    for cam, shape in hello.cameras.items():
        h.cameras[cam].dims.extend(shape)
    h.policy.type = hello.policy.type
    h.policy.path = hello.policy.path
    h.policy.device = hello.policy.device
    h.policy.actions_per_chunk = hello.policy.actions_per_chunk
    h.policy.options_json = options
    if hello.policy.rtc is not None:
        r = hello.policy.rtc
        h.policy.rtc.execution_horizon = r.execution_horizon
        h.policy.rtc.max_guidance_weight = r.max_guidance_weight
        h.policy.rtc.prefix_attention_schedule = r.prefix_attention_schedule
    h.fps = hello.fps
    h.task = hello.task
    h.robot_type = hello.robot_type
    h.client_id = client_id
    return up.SerializeToString()


def handshake_from_proto(h: pb.Handshake, limits: Limits) -> Handshake:
    if len(h.policy.options_json) > MAX_OPTIONS_JSON_BYTES:
        raise CodecError(f"policy options exceed {MAX_OPTIONS_JSON_BYTES} B of JSON")
    try:
        options = json.loads(h.policy.options_json) if h.policy.options_json else {}
    except ValueError as exc:
        raise CodecError(f"policy options are not valid JSON: {exc}") from None
    if not isinstance(options, dict):
        raise CodecError("policy options must be a JSON object")
    if not math.isfinite(h.fps):
        raise CodecError(f"handshake fps {h.fps} is not finite")
    return Handshake(
        schema_version=h.schema_version,
        joint_names=list(h.joint_names),
        cameras={
            cam: _shape3(f"camera {cam!r}", list(s.dims), limits) for cam, s in h.cameras.items()
        },
        policy=PolicySpec(
            type=h.policy.type,
            path=h.policy.path,
            device=h.policy.device,
            actions_per_chunk=h.policy.actions_per_chunk,
            options=options,
            rtc=_rtc_from_proto(h.policy) if h.policy.HasField("rtc") else None,
        ),
        fps=h.fps,
        task=h.task,
        robot_type=h.robot_type,
    )


def _rtc_from_proto(p: pb.PolicySpec) -> RtcSettings:
    r = p.rtc
    try:
        return RtcSettings(
            execution_horizon=r.execution_horizon,
            max_guidance_weight=r.max_guidance_weight,
            prefix_attention_schedule=r.prefix_attention_schedule,
        )
    except ConfigError as exc:
        raise CodecError(f"handshake: {exc}") from None


def observation_to_up(obs: Observation, image_codec: str = "raw", jpeg_quality: int = 90) -> bytes:
    """Serialize an observation whose images are already fitted to the negotiated shapes.

    Raw frames take the one-copy fast path of `wire.encode_observation`.
    """
    o = pb.Observation(
        timestep=obs.timestep,
        capture_ns=obs.capture_ns,
        task=obs.task,
        must_go=obs.must_go,
        sent_ns=obs.sent_ns,
        inference_delay=obs.inference_delay,
    )
    tensor_to_proto(obs.state, o.state)
    tensor_to_proto(obs.prev_chunk_left_over, o.prev_chunk_left_over)
    raw_images = {}
    for cam, img in obs.images.items():
        if image_codec == "jpeg":
            msg = o.images[cam]
            msg.jpeg = encode_jpeg(img, jpeg_quality)
            msg.height, msg.width = img.shape[0], img.shape[1]
        else:
            raw_images[cam] = img
    return wire.encode_observation(o, raw_images)


def observation_at(raw: bytes, span: tuple[int, int], limits: Limits) -> Observation:
    """The observation at `span` of a serialized `Up` (see `wire.observation_span`)."""
    f = wire.decode_observation(raw, span)
    images = {}
    for cam, img in f["images"].items():
        if img["raw"] is not None:
            images[cam] = tensor_from_proto(
                img["raw"], f"image {cam}", limits, dtype=np.uint8, ndim=3
            )
        elif img["jpeg"] is not None:
            images[cam] = decode_jpeg(
                img["jpeg"], img["height"], img["width"], limits.max_image_pixels
            )
        else:
            raise CodecError(f"image {cam!r} carries no data")
    state = tensor_from_proto(f["state"], "state", limits, dtype=np.float32, ndim=1)
    return Observation(
        timestep=f["timestep"],
        capture_ns=f["capture_ns"],
        state=state.copy(),  # small; aligned and writable for the policy
        images=images,
        task=f["task"],
        must_go=f["must_go"],
        sent_ns=f["sent_ns"],
        inference_delay=f["inference_delay"],
        prev_chunk_left_over=_tail(f["prev_chunk_left_over"], limits),
    )


def _tail(t: pb.Tensor | wire.RawTensor, limits: Limits) -> np.ndarray:
    """The RTC tail; a peer that sends none (no RTC) sends an empty one."""
    if not t.dtype and not t.shape:
        return np.zeros((0, 0), np.float32)
    tail = tensor_from_proto(t, "prev_chunk_left_over", limits, dtype=np.float32, ndim=2)
    return tail.copy()  # small; aligned and writable for the policy


def observation_from_proto(o: pb.Observation, limits: Limits) -> Observation:
    images = {}
    for cam, img in o.images.items():
        kind = img.WhichOneof("data")
        if kind == "raw":
            images[cam] = tensor_from_proto(img.raw, f"image {cam}", limits, dtype=np.uint8, ndim=3)
        elif kind == "jpeg":
            images[cam] = decode_jpeg(img.jpeg, img.height, img.width, limits.max_image_pixels)
        else:
            raise CodecError(f"image {cam!r} carries no data")
    return Observation(
        timestep=o.timestep,
        capture_ns=o.capture_ns,
        state=tensor_from_proto(o.state, "state", limits, dtype=np.float32, ndim=1).copy(),
        images=images,
        task=o.task,
        must_go=o.must_go,
        sent_ns=o.sent_ns,
        inference_delay=o.inference_delay,
        prev_chunk_left_over=_tail(o.prev_chunk_left_over, limits),
    )


def heartbeat_up(seq: int, sent_ns: int, report: ClientReport | None = None) -> bytes:
    beat = pb.Heartbeat(seq=seq, sent_ns=sent_ns)
    if report is not None:
        r = beat.report
        r.ticks = report.ticks
        r.idle_frames = report.idle_frames
        r.idle_frames_after_first_chunk = report.idle_frames_after_first_chunk
        r.roundtrip_ns.extend(report.roundtrip_ns)
    return pb.Up(heartbeat=beat).SerializeToString()


def report_from_proto(r: pb.ClientReport, max_samples: int = 1024) -> ClientReport:
    """A client's report; its round trips bounded (a report is told, never trusted)."""
    return ClientReport(
        ticks=r.ticks,
        idle_frames=r.idle_frames,
        idle_frames_after_first_chunk=r.idle_frames_after_first_chunk,
        roundtrip_ns=[max(0, int(v)) for v in r.roundtrip_ns[:max_samples]],
    )


def goodbye_up(reason: str) -> bytes:
    return pb.Up(goodbye=pb.Goodbye(reason=reason)).SerializeToString()


# --- server -> client ----------------------------------------------------------------------


def parse_down(raw: bytes) -> pb.Down:
    try:
        down = pb.Down.FromString(raw)
    except DecodeError as exc:
        raise CodecError(f"malformed message from the server ({len(raw)} B): {exc}") from None
    return down


def reply_to_down(reply: HandshakeReply, session_id: str = "") -> bytes:
    down = pb.Down()
    r = down.reply
    r.accepted = reply.accepted
    for cam, shape in reply.image_shapes.items():
        r.image_shapes[cam].dims.extend(shape)
    r.action_names.extend(reply.action_names)
    r.actions_per_chunk = reply.actions_per_chunk
    r.message = reply.message
    r.schema_version = reply.schema_version
    r.session_id = session_id
    return down.SerializeToString()


def reply_from_proto(r: pb.HandshakeReply, limits: Limits) -> HandshakeReply:
    return HandshakeReply(
        accepted=r.accepted,
        image_shapes={
            cam: _shape3(f"image shape {cam!r}", list(s.dims), limits)
            for cam, s in r.image_shapes.items()
        },
        action_names=list(r.action_names),
        actions_per_chunk=r.actions_per_chunk,
        message=r.message,
        schema_version=r.schema_version,
    )


def chunk_to_down(chunk: ActionChunk) -> bytes:
    down = pb.Down()
    c = down.chunk
    c.timestep = chunk.timestep
    tensor_to_proto(chunk.actions, c.actions)
    c.obs_sent_ns = chunk.obs_sent_ns
    c.queue_wait_ns = chunk.queue_wait_ns
    c.preprocess_ns = chunk.preprocess_ns
    c.inference_ns = chunk.inference_ns
    c.postprocess_ns = chunk.postprocess_ns
    c.batch_size = chunk.batch_size
    return down.SerializeToString()


def chunk_from_proto(c: pb.ActionChunk, limits: Limits) -> ActionChunk:
    actions = tensor_from_proto(c.actions, "actions", limits, dtype=np.float32, ndim=2)
    return ActionChunk(
        timestep=c.timestep,
        actions=actions.copy(),  # small, and the client's queue may want to write to it
        obs_sent_ns=c.obs_sent_ns,
        queue_wait_ns=c.queue_wait_ns,
        preprocess_ns=c.preprocess_ns,
        inference_ns=c.inference_ns,
        postprocess_ns=c.postprocess_ns,
        batch_size=c.batch_size,
    )


def error_to_down(error: ErrorMessage) -> bytes:
    e = pb.Error(code=error.code, message=error.message, timestep=error.timestep, fatal=error.fatal)
    return pb.Down(error=e).SerializeToString()


def error_from_proto(e: pb.Error) -> ErrorMessage:
    return ErrorMessage(code=e.code, message=e.message, timestep=e.timestep, fatal=e.fatal)


def heartbeat_down(seq: int, sent_ns: int) -> bytes:
    return pb.Down(heartbeat=pb.Heartbeat(seq=seq, sent_ns=sent_ns)).SerializeToString()


def goodbye_down(reason: str) -> bytes:
    return pb.Down(goodbye=pb.Goodbye(reason=reason)).SerializeToString()
