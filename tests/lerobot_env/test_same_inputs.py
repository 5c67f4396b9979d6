"""The chunk asyncinf serves equals LeRobot's synchronous path on the same frame and state.

The reference is written with LeRobot's own functions only (what `lerobot-record
--policy.path` does per frame): `build_dataset_frame(hw_to_dataset_features(...))`, then
`prepare_observation_for_inference`, the checkpoint's preprocessor, `predict_action_chunk`,
the postprocessor. asyncinf's chunk travels through a real PolicyServer over shared memory
and over gRPC on loopback. ACT in eval mode is deterministic, so the two must agree to float
rounding; with JPEG the frame itself changes, and the bound below says by how much.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
from joints import JOINTS
from lerobot.configs.policies import PreTrainedConfig
from lerobot.policies.factory import get_policy_class, make_pre_post_processors
from lerobot.policies.utils import prepare_observation_for_inference

from asyncinf.policies.lerobot import compat
from asyncinf.runtime.messages import ActionChunk, Handshake, Observation, PolicySpec
from asyncinf.runtime.server import PolicyCache, PolicyServer, ServerConfig

SHAPE = (96, 128, 3)
TASK = "pick up the cube"


def lerobot_reference(path, state: np.ndarray, frame: np.ndarray) -> np.ndarray:
    utils = (
        compat._first(
            ("lerobot.datasets.utils", "hw_to_dataset_features"),
            ("lerobot.utils.feature_utils", "hw_to_dataset_features"),
        ),
        compat._first(
            ("lerobot.datasets.utils", "build_dataset_frame"),
            ("lerobot.utils.feature_utils", "build_dataset_frame"),
        ),
    )
    hw_to_dataset_features, build_dataset_frame = utils
    cfg = PreTrainedConfig.from_pretrained(str(path))
    cfg.device = "cpu"
    policy = get_policy_class(cfg.type).from_pretrained(str(path), config=cfg)
    pre, post = make_pre_post_processors(
        policy.config,
        pretrained_path=str(path),
        preprocessor_overrides={"device_processor": {"device": "cpu"}},
    )
    features = hw_to_dataset_features(
        {**dict.fromkeys(JOINTS, float), "front": SHAPE}, "observation"
    )
    raw = {**dict(zip(JOINTS, state.tolist(), strict=True)), "front": frame}
    obs = build_dataset_frame(features, raw, "observation")
    batch = pre(prepare_observation_for_inference(obs, torch.device("cpu"), TASK, "sim"))
    policy.reset()
    with torch.no_grad():
        chunk = policy.predict_action_chunk(batch)
    return post(chunk)[0].numpy()


def shm_ends():
    from asyncinf.transports import shm

    session = shm.ShmSession.create(shm.make_run_id(), 0, shm.ShmConfig())
    client = shm.ShmClientTransport.attach(session.name)
    server = shm.ShmServerTransport.attach(session.name)
    return client, server, session.unlink


def grpc_ends(codec: str):
    from asyncinf.transports.grpc.client import GrpcClientTransport
    from asyncinf.transports.grpc.config import GrpcClientConfig, GrpcServerConfig
    from asyncinf.transports.grpc.server import GrpcServerTransport

    server = GrpcServerTransport(GrpcServerConfig(port=0))
    client = GrpcClientTransport(
        GrpcClientConfig(target=f"127.0.0.1:{server.port}", image_codec=codec, reconnect=False)
    )
    return client, server, lambda: None


def served_chunk(path, ends, state: np.ndarray, frame: np.ndarray) -> np.ndarray:
    client, server_end, cleanup = ends
    stop = threading.Event()
    server = PolicyServer(PolicyCache(), ServerConfig(poll_s=0.05))
    thread = threading.Thread(target=server.serve, args=(server_end, stop.is_set))
    thread.start()
    try:
        hello = Handshake(JOINTS, {"front": SHAPE}, PolicySpec("act", str(path)), 30.0, TASK, "sim")
        reply = client.handshake(hello, timeout_s=120)
        assert reply.accepted, reply.message
        assert reply.image_shapes == {"front": SHAPE} and reply.actions_per_chunk == 50
        client.send_observation(Observation(0, time.monotonic_ns(), state, {"front": frame}, TASK))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            msg = client.receive(0.5)
            if msg is not None:
                assert isinstance(msg, ActionChunk), msg
                assert msg.inference_ns > 0 and msg.preprocess_ns > 0 and msg.postprocess_ns > 0
                return msg.actions
        raise AssertionError("no chunk within 60 s")
    finally:
        client.close()
        stop.set()
        thread.join(30)
        server_end.close()
        cleanup()


@pytest.fixture(scope="module")
def case(checkpoints):
    rng = np.random.default_rng(7)
    state = rng.uniform(-60, 60, len(JOINTS)).astype(np.float32)
    yy, xx = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]]
    # A smooth image, like a camera's, so that JPEG's error is a camera's too.
    frame = np.stack([xx * 2, yy * 2, (xx + yy)], axis=-1).clip(0, 255).astype(np.uint8)
    path = checkpoints["act"]
    return path, state, frame, lerobot_reference(path, state, frame)


@pytest.mark.parametrize("transport", ["shm", "grpc"])
def test_raw_frames_give_lerobots_chunk(case, transport):
    path, state, frame, expected = case
    ends = shm_ends() if transport == "shm" else grpc_ends("raw")
    got = served_chunk(path, ends, state, frame)
    assert got.shape == expected.shape == (50, len(JOINTS))
    assert np.abs(got - expected).max() <= 1e-5


def test_jpeg_frames_stay_within_a_stated_bound(case):
    """JPEG at quality 90 moves pixels by a few levels; on this checkpoint the chunk moves by
    under 1 % of its range (a random network amplifies pixel noise more than a trained one)."""
    path, state, frame, expected = case
    got = served_chunk(path, grpc_ends("jpeg"), state, frame)
    span = float(expected.max() - expected.min())
    assert 0 < np.abs(got - expected).max() <= 0.01 * span
