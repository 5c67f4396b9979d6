"""LeRobot checkpoints through the Policy interface: loading, the handshake checks, bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from installed import VERSION, WRITES_PRETRAINED_REVISION
from joints import JOINTS

from asyncinf.policies.lerobot.tiny import make_tiny_checkpoint
from asyncinf.policies.policy import make_policy
from asyncinf.runtime.batching import Batcher
from asyncinf.runtime.errors import PolicyError
from asyncinf.runtime.messages import Handshake, Observation, PolicySpec
from asyncinf.runtime.server import PolicyCache

VGA = (480, 640, 3)


def hello(path, policy_type="act", *, joints=JOINTS, cameras=None, chunk=0, **options):
    return Handshake(
        joint_names=list(joints),
        cameras={"front": VGA} if cameras is None else cameras,
        policy=PolicySpec(policy_type, str(path), "cpu", chunk, options),
        fps=30.0,
        robot_type="sim",
    )


def load(h: Handshake):
    policy = make_policy(h.policy, h)
    policy.warmup()
    return policy


def observation(t=0, shape=(96, 128, 3)):
    rng = np.random.default_rng(t)
    return Observation(
        timestep=t,
        capture_ns=0,
        state=rng.uniform(-50, 50, len(JOINTS)).astype(np.float32),
        images={"front": rng.integers(0, 256, shape, dtype=np.uint8)},
        task="pick up the cube",
    )


def infer(policy, obs):
    return policy.postprocess(policy.predict_chunk(policy.preprocess(obs)))


@pytest.mark.parametrize(("kind", "returns"), [("act", 50), ("diffusion", 8), ("smolvla", 50)])
def test_each_kind_loads_warms_up_and_answers_at_its_own_length(checkpoints, kind, returns):
    policy = load(hello(checkpoints[kind], kind))
    assert policy.image_shapes == {"front": (96, 128, 3)}  # the checkpoint's, HWC
    assert policy.chunk_size == returns  # --actions_per_chunk left out: all the call gives
    assert policy.info["lerobot"] == VERSION
    actions = infer(policy, observation())
    assert actions.shape == (returns, len(JOINTS)) and actions.dtype == np.float32
    assert np.isfinite(actions).all()


@pytest.mark.parametrize(("kind", "returns"), [("vqbet", 4), ("tdmpc", 1)])
def test_history_policies_lerobots_async_server_cannot_run(tmp_path, kind, returns):
    """VQ-BeT and TDMPC keep observation queues too; TDMPC reads its one camera as
    `observation.image`, which the rename map provides."""
    path = make_tiny_checkpoint(kind, tmp_path / kind, cameras={"front": (64, 64)})
    options = {"rename_map": {"observation.images.front": "observation.image"}}
    policy = load(hello(path, kind, **(options if kind == "tdmpc" else {})))
    assert policy.chunk_size == returns
    for t in range(3):
        assert infer(policy, observation(t, (64, 64, 3))).shape == (returns, len(JOINTS))


def test_a_shorter_chunk_is_the_first_actions_of_the_call(checkpoints):
    full = load(hello(checkpoints["act"]))
    short = load(hello(checkpoints["act"], chunk=20))
    assert short.chunk_size == 20
    obs = observation(3)
    np.testing.assert_allclose(infer(short, obs), infer(full, obs)[:20], atol=1e-6)


def test_more_actions_than_the_checkpoint_returns_are_refused(checkpoints):
    with pytest.raises(PolicyError, match=r"--actions_per_chunk=50: the checkpoint returns 8"):
        load(hello(checkpoints["diffusion"], "diffusion", chunk=50))


def test_diffusion_history_is_reset_per_session_and_runs_from_one_frame(checkpoints):
    """LeRobot's own async server fails here: 'stack expects a non-empty TensorList'."""
    cache = PolicyCache()
    h = hello(checkpoints["diffusion"], "diffusion")
    policy = cache.get(h)
    infer(policy, observation(1))
    infer(policy, observation(2))
    assert len(policy.model._queues["observation.state"]) == 2
    assert cache.get(h) is policy  # a new session: the same model, its history forgotten
    assert len(policy.model._queues["observation.state"]) == 0
    assert infer(policy, observation(3)).shape == (8, len(JOINTS))


def _chunks(policy, batcher, session, steps):
    """Each (seed, observation) of `steps` through `batcher` in `session`, torch seeded per
    call (diffusion samples noise)."""
    out = []
    for seed, obs in steps:
        torch.manual_seed(seed)
        done = batcher.predict(policy.preprocess(obs), None, session)
        out.append(policy.postprocess(done.outputs))
    return out


def test_diffusion_sessions_interleaved_on_one_model_answer_as_each_alone(checkpoints):
    """Two robots on one loaded Diffusion, their observations interleaved: each gets the
    chunks it gets alone on a fresh model, so neither history saw the other's frames."""
    h = hello(checkpoints["diffusion"], "diffusion")
    left = [(10 + t, observation(t)) for t in range(3)]
    right = [(20 + t, observation(100 + t)) for t in range(3)]
    shared = load(h)
    batcher = Batcher(shared, max_size=2, max_wait_ms=0)
    assert batcher.max_size == 1  # one history in the model: never batched across sessions
    a, b = batcher.join(), batcher.join()
    together: dict[int, list] = {a: [], b: []}
    for mine, theirs in zip(left, right, strict=True):
        together[a] += _chunks(shared, batcher, a, [mine])
        together[b] += _chunks(shared, batcher, b, [theirs])
    assert len(shared.model._queues["observation.state"]) == 2
    for steps, key in ((left, a), (right, b)):
        alone = load(h)
        solo = Batcher(alone, max_size=1, max_wait_ms=0)
        want = _chunks(alone, solo, solo.join(), steps)
        for got, expected in zip(together[key], want, strict=True):
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    # The histories matter: the second chunks differ from the first session's own answer to
    # the same frame without its history (a fresh session).
    c = batcher.join()
    fresh = _chunks(shared, batcher, c, [left[1]])[0]
    assert not np.allclose(fresh, together[a][1], atol=1e-4)
    for key in (a, b, c):
        batcher.leave(key)
    assert not batcher._states


@pytest.mark.parametrize("kind", ["vqbet", "tdmpc"])
def test_other_history_policies_keep_each_sessions_state(tmp_path, kind):
    """VQ-BeT's queues and TDMPC's (with its planner's warm start, `_prev_mean`) per session
    too: interleaved, each session answers as it does alone."""
    path = make_tiny_checkpoint(kind, tmp_path / kind, cameras={"front": (64, 64)})
    options = {"rename_map": {"observation.images.front": "observation.image"}}
    h = hello(path, kind, **(options if kind == "tdmpc" else {}))
    steps = {s: [(s + t, observation(s + t, (64, 64, 3))) for t in range(3)] for s in (10, 20)}
    shared = load(h)
    batcher = Batcher(shared, max_size=2, max_wait_ms=0)
    keys = {s: batcher.join() for s in steps}
    together: dict[int, list] = {s: [] for s in steps}
    for t in range(3):
        for s in steps:
            together[s] += _chunks(shared, batcher, keys[s], [steps[s][t]])
    for s, mine in steps.items():
        alone = load(h)
        solo = Batcher(alone, max_size=1, max_wait_ms=0)
        want = _chunks(alone, solo, solo.join(), mine)
        for got, expected in zip(together[s], want, strict=True):
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_joint_count_mismatch_names_both_sides(checkpoints):
    with pytest.raises(PolicyError, match=r"6 state values, the robot has 5 joints"):
        load(hello(checkpoints["act"], joints=JOINTS[:5]))


def test_missing_camera_suggests_the_rename_map_and_the_rename_map_fixes_it(checkpoints):
    cams = {"top": VGA}
    with pytest.raises(PolicyError, match=r"needs camera\(s\) \['observation.images.front'\]") as e:
        load(hello(checkpoints["act"], cameras=cams))
    assert 'rename_map=\'{"observation.images.top": "observation.images.front"}\'' in str(e.value)
    assert "the robot's cameras give ['observation.images.top']" in str(e.value)
    policy = load(
        hello(
            checkpoints["act"],
            cameras=cams,
            rename_map={"observation.images.top": "observation.images.front"},
        )
    )
    assert policy.image_shapes == {"top": (96, 128, 3)}
    obs = observation()
    obs.images = {"top": obs.images["front"]}
    assert infer(policy, obs).shape == (50, len(JOINTS))


def test_a_device_that_is_not_there_is_refused_at_load(checkpoints):
    with pytest.raises(PolicyError, match=r"--policy.device=cuda: CUDA is not available"):
        make_policy(PolicySpec("act", str(checkpoints["act"]), "cuda"), hello(checkpoints["act"]))


def test_config_options_override_the_checkpoint(checkpoints):
    policy = load(hello(checkpoints["diffusion"], "diffusion", num_inference_steps=2))
    assert policy.config.num_inference_steps == 2
    with pytest.raises(
        PolicyError, match=r"--policy.no_such_field is neither .* nor a field of ACT"
    ):
        load(hello(checkpoints["act"], no_such_field=3))
    with pytest.raises(PolicyError, match=r"config.json: `chunk_size`: Couldn't parse 'many'"):
        load(hello(checkpoints["act"], chunk_size="many"))


def test_unknown_type_lists_the_builtins_and_lerobots(checkpoints):
    with pytest.raises(
        PolicyError, match=r"neither a built-in policy .*scripted.* nor one LeRobot"
    ):
        load(hello(checkpoints["act"], "no_such_policy"))


def test_type_must_match_the_checkpoint(checkpoints):
    with pytest.raises(PolicyError, match=r"is a 'act' checkpoint; .*use --policy.type=act"):
        load(hello(checkpoints["act"], "diffusion"))


# -- bad checkpoints: each one line naming the file and the fix -----------------------------


@pytest.fixture
def broken(checkpoints, tmp_path):
    """A fresh copy of the ACT checkpoint to break."""
    return shutil.copytree(checkpoints["act"], tmp_path / "act")


def _refused(path, match, policy_type="act"):
    with pytest.raises(PolicyError, match=match) as info:
        load(hello(path, policy_type))
    assert "\n" not in str(info.value)
    return str(info.value)


def test_a_directory_without_config_json(tmp_path):
    _refused(tmp_path, r"no config.json here, so no LeRobot checkpoint; lerobot-train writes")


def test_a_training_step_folder_is_accepted(checkpoints, tmp_path):
    step = tmp_path / "checkpoints" / "last"
    shutil.copytree(checkpoints["act"], step / "pretrained_model")
    assert load(hello(step)).chunk_size == 50


def test_an_unknown_type_in_config_json(broken):
    cfg = json.loads((broken / "config.json").read_text())
    cfg["type"] = "warp_drive"
    (broken / "config.json").write_text(json.dumps(cfg))
    _refused(broken, rf"config.json: policy type 'warp_drive' is not known to LeRobot {VERSION}")


def test_a_checkpoint_from_a_newer_lerobot(broken):
    cfg = json.loads((broken / "config.json").read_text())
    # A field no release has yet; on 0.4.x also the one every config from LeRobot >= 0.5 has.
    newer = {"action_horizon_from_a_later_lerobot": 8}
    if not WRITES_PRETRAINED_REVISION:
        newer["pretrained_revision"] = "main"
    (broken / "config.json").write_text(json.dumps({**cfg, **newer}))
    msg = _refused(broken, rf"fields .* unknown to LeRobot {VERSION}: .*newer LeRobot")
    assert all(name in msg for name in newer), msg


def test_a_corrupted_model_file(broken):
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    _refused(broken, r"model.safetensors: cannot be loaded .* corrupted, truncated")


def test_missing_processor_files(broken):
    (broken / "policy_preprocessor.json").unlink()
    _refused(broken, r"policy_preprocessor.json: missing. .*migrate_policy_normalization")


def test_missing_normalization_statistics(broken):
    for stats in broken.glob("policy_postprocessor_step_*.safetensors"):
        stats.unlink()
    _refused(broken, r"unnormalizer_processor.safetensors: missing \(the normalization statistics")


def test_neither_a_directory_nor_a_cached_hub_id(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    _refused("someone/no-such-policy", r"the hub id could not be resolved .*HF_HUB_OFFLINE=1")
    _refused(str(tmp_path / "missing"), r"no such directory, and not a hub id")


def test_a_hub_id_in_the_cache_loads_offline(checkpoints, tmp_path, monkeypatch):
    """The Hugging Face cache layout: models--ORG--NAME/{refs/main, snapshots/REV/...}."""
    cache = tmp_path / "hub"
    repo = cache / "models--lab--tiny-act"
    revision = "0" * 40
    shutil.copytree(checkpoints["act"], repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    import huggingface_hub.constants as hub  # the cache path is read at import: point it here

    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(cache))
    assert load(hello("lab/tiny-act")).chunk_size == 50
