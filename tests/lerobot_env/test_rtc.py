"""Real-time chunking through LeRobot's own RTC processor, on a tiny SmolVLA built here."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from joints import JOINTS

from asyncinf.policies.policy import make_policy
from asyncinf.runtime.errors import ConfigError, PolicyError
from asyncinf.runtime.messages import (
    RTC_SCHEDULES,
    Handshake,
    Observation,
    PolicySpec,
    RtcInput,
    RtcSettings,
)

DELAY = 4  # ticks the client runs the old chunk before the new one lands
T = 50  # the tiny SmolVLA's chunk


def loaded(path, policy_type):
    hello = Handshake(
        joint_names=list(JOINTS),
        cameras={"front": (96, 128, 3)},
        policy=PolicySpec(policy_type, str(path), "cpu"),
        fps=30.0,
        robot_type="sim",
    )
    policy = make_policy(hello.policy, hello)
    policy.warmup()
    return policy


@pytest.fixture(scope="module")
def smolvla(checkpoints):
    return loaded(checkpoints["smolvla"], "smolvla")


OBS = Observation(
    timestep=0,
    capture_ns=0,
    state=np.linspace(-40, 40, len(JOINTS), dtype=np.float32),
    images={"front": np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)},
    task="pick up the cube",
)


def chunk(policy, rtc=None, *, seed=1):
    """The chunk for OBS from the noise of `seed`: the same seed, the same starting noise."""
    torch.manual_seed(seed)
    return policy.postprocess(policy.predict_chunk(policy.preprocess(OBS), rtc=rtc))


def guided(tail, delay=DELAY, **settings):
    return RtcInput(delay, np.asarray(tail, np.float32), RtcSettings(**settings))


@pytest.fixture(scope="module")
def tail(smolvla):
    """What a previous chunk left queued: the model's answer from other noise, which disagrees
    with a fresh chunk as much as two of its samples do."""
    return chunk(smolvla, seed=7)


def start_error(actions, tail, n=DELAY):
    return float(np.abs(actions[:n] - tail[:n]).mean())


def test_rtc_only_for_the_types_that_do_it(checkpoints, smolvla):
    assert smolvla.supports_rtc is True
    act = loaded(checkpoints["act"], "act")
    assert act.supports_rtc is False
    with pytest.raises(PolicyError, match="act does no real-time chunking"):
        act.predict_chunk(act.preprocess(OBS), rtc=guided(np.zeros((T, len(JOINTS)))))


def test_with_rtc_the_new_chunk_starts_on_the_tail(smolvla, tail):
    plain, rtc = chunk(smolvla), chunk(smolvla, guided(tail))
    assert start_error(rtc, tail) < 0.2 * start_error(plain, tail)
    # Past the execution horizon (10) the tail guides nothing: the chunk is the model's own.
    assert np.abs(rtc[20:] - tail[20:]).mean() > 10 * start_error(rtc, tail)


def test_without_rtc_a_policy_whose_processor_is_on_runs_plain(smolvla, tail):
    chunk(smolvla, guided(tail))  # the processor is enabled (warm-up did so already)
    config = smolvla.model.config.rtc_config
    config.enabled = False  # LeRobot's path without RTC, for reference
    try:
        reference = chunk(smolvla)
    finally:
        config.enabled = True
    np.testing.assert_array_equal(chunk(smolvla), reference)


def test_tails_of_any_length(smolvla, tail):
    plain = chunk(smolvla)
    # K = 0, a cold start: nothing to agree with, so the plain chunk.
    np.testing.assert_array_equal(chunk(smolvla, guided(tail[:0])), plain)
    # K < d: guided as far as the tail goes (LeRobot pads the rest and weighs it 0).
    short = chunk(smolvla, guided(tail[:2]))
    assert start_error(short, tail, 2) < 0.2 * start_error(plain, tail, 2)
    # K > T: what lies beyond the chunk is cut off; the same chunk as the tail cut to T.
    longer = np.concatenate([tail, tail + 5.0])
    np.testing.assert_allclose(chunk(smolvla, guided(longer)), chunk(smolvla, guided(tail)))


def test_the_tail_reaches_the_model_normalized_and_round_trips(smolvla, tail):
    normalized = smolvla.guidance.to_model(tail)
    # The tiny checkpoint's action statistics: mean 0, std 30 for every joint.
    np.testing.assert_allclose(normalized.numpy(), tail / 30.0, rtol=1e-5, atol=1e-6)
    back = smolvla.post(normalized)  # the checkpoint's postprocessor: the unnormalizer
    np.testing.assert_allclose(back.numpy(), tail, rtol=1e-5, atol=1e-4)


def test_settings_rebuild_the_processor_only_when_they_change(smolvla, tail):
    chunk(smolvla, guided(tail))
    processor = smolvla.model.rtc_processor
    chunk(smolvla, guided(tail))
    assert smolvla.model.rtc_processor is processor
    chunk(smolvla, guided(tail, execution_horizon=20, prefix_attention_schedule="EXP"))
    config = smolvla.model.rtc_processor.rtc_config
    assert smolvla.model.rtc_processor is not processor
    assert (config.execution_horizon, config.prefix_attention_schedule.value) == (20, "EXP")
    assert config.enabled and smolvla.model.model.rtc_processor is smolvla.model.rtc_processor


@pytest.mark.parametrize(
    "settings",
    [
        {"prefix_attention_schedule": "COSINE"},
        {"execution_horizon": 0},
        {"max_guidance_weight": 0.0},
    ],
)
def test_bad_settings_never_reach_the_policy(smolvla, settings):
    # RtcSettings checks its own ranges and takes only LeRobot's schedule names.
    with pytest.raises(ConfigError) as refused:
        RtcSettings(**settings)
    assert "--rtc." in str(refused.value) and "\n" not in str(refused.value)
    assert set(smolvla.guidance.lr.RTCAttentionSchedule.__members__) == set(RTC_SCHEDULES)


@pytest.mark.parametrize(
    ("rtc", "says"),
    [
        (guided(np.zeros((5, 3))), r"RTC tail of shape \(5, 3\), expected \[K, 6\]"),
        (guided(np.zeros((5, 6)), delay=-1), "inference_delay=-1: must be 0 or more"),
    ],
)
def test_a_malformed_rtc_input_is_refused(smolvla, rtc, says):
    with pytest.raises(PolicyError, match=says):
        chunk(smolvla, rtc)
