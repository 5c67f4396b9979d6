"""tiny_torch: a real torch forward pass on the CPU, weights seeded or loaded, image sizes."""

import subprocess
import sys
import warnings

import cv2
import numpy as np
import pytest
import torch

from asyncinf.policies.policy import make_policy
from asyncinf.policies.tiny_torch import TinyTorchPolicy
from asyncinf.robots.sim.arm import SO101_JOINTS
from asyncinf.runtime.errors import PolicyError
from asyncinf.runtime.messages import Handshake, Observation, PolicySpec

T = 10
CAMERAS = {"front": (48, 64, 3), "wrist": (60, 60, 3)}
SMALL = {"hidden": 16, "depth": 1, "image_size": 24}


def policy(
    path="", device="cpu", cameras=CAMERAS, joints=SO101_JOINTS, chunk=T, **options
) -> TinyTorchPolicy:
    spec = PolicySpec(
        type="tiny_torch", path=str(path), device=device, actions_per_chunk=chunk, options=options
    )
    features = Handshake(joint_names=list(joints), cameras=dict(cameras), policy=spec, fps=30.0)
    p = make_policy(spec, features)
    assert isinstance(p, TinyTorchPolicy)
    return p


def observe(shapes, seed=0, state=None) -> Observation:
    rng = np.random.default_rng(seed)
    images = {k: rng.integers(0, 256, s, dtype=np.uint8) for k, s in shapes.items()}
    if state is None:
        state = rng.uniform(-50, 50, len(SO101_JOINTS))
    return Observation(0, 0, np.asarray(state, np.float32), images)


def run(p, obs) -> np.ndarray:
    return p.postprocess(p.predict_chunk(p.preprocess(obs)))


def test_forward_on_cpu_shapes_and_dtype():
    p = policy(**SMALL)
    p.warmup()
    assert p.device.type == "cpu"
    inputs = p.preprocess(observe(p.image_shapes))
    assert all(isinstance(v, torch.Tensor) for v in [inputs["state"], *inputs["images"]])
    out = p.predict_chunk(inputs)
    assert isinstance(out, torch.Tensor)
    actions = p.postprocess(out)
    assert actions.shape == (T, 6) and actions.dtype == np.float32
    assert np.isfinite(actions).all()
    # A bounded move from the observed state.
    state = inputs["state"].numpy()
    assert np.abs(actions - state).max() <= 10.0


def test_image_shapes_keep_the_camera_aspect():
    p = policy(image_size=96)
    assert p.image_shapes == {"front": (96, 128, 3), "wrist": (96, 96, 3)}
    assert p.action_names == list(SO101_JOINTS)


def test_deterministic_for_a_seed():
    obs = observe({k: v for k, v in policy(**SMALL).image_shapes.items()})
    a, b = policy(**SMALL), policy(**SMALL)
    assert run(a, obs).tobytes() == run(b, obs).tobytes()
    assert run(a, obs).tobytes() == run(a, obs).tobytes()
    assert run(policy(seed=1, **SMALL), obs).tobytes() != run(a, obs).tobytes()


def test_the_output_depends_on_images_and_state():
    p = policy(**SMALL)
    base = run(p, observe(p.image_shapes, seed=0, state=np.zeros(6)))
    other_images = run(p, observe(p.image_shapes, seed=1, state=np.zeros(6)))
    other_state = run(p, observe(p.image_shapes, seed=0, state=np.ones(6)))
    assert not np.array_equal(base, other_images)
    assert not np.array_equal(base, other_state)


def test_seeding_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    policy(**SMALL)
    assert torch.equal(torch.rand(3), expected)


def test_save_load_round_trip(tmp_path):
    trained = policy(seed=7, **SMALL)
    path = tmp_path / "tiny.pt"
    trained.save(path)
    obs = observe(trained.image_shapes)
    # The architecture comes from the file; the seed option does not matter.
    loaded = policy(path=path, seed=99)
    assert loaded.options["hidden"] == 16 and loaded.image_shapes == trained.image_shapes
    assert run(loaded, obs).tobytes() == run(trained, obs).tobytes()
    assert run(policy(path=path, **SMALL), obs).tobytes() == run(trained, obs).tobytes()


def test_load_errors_are_policy_errors(tmp_path):
    path = tmp_path / "tiny.pt"
    policy(**SMALL).save(path)
    with pytest.raises(PolicyError, match=r"--policy\.hidden=32, but"):
        policy(path=path, hidden=32)
    with pytest.raises(PolicyError, match="joints"):
        policy(path=path, joints=["a.pos", "b.pos"])
    with pytest.raises(PolicyError, match="cameras"):
        policy(path=path, cameras={"front": (48, 64, 3)})
    with pytest.raises(PolicyError, match="actions_per_chunk"):
        policy(path=path, chunk=T + 1)
    with pytest.raises(PolicyError, match="no such file"):
        policy(path=tmp_path / "missing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(PolicyError, match=r"--policy\.path="):
        policy(path=garbage)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weight": torch.zeros(2)}, foreign)
    with pytest.raises(PolicyError, match="not a tiny_torch file"):
        policy(path=foreign)


@pytest.mark.parametrize(
    ("options", "flag"),
    [
        ({"hidden": 0}, "--policy.hidden=0"),
        ({"depth": "2"}, "--policy.depth='2'"),
        ({"depth": 2.0}, "--policy.depth=2.0"),
        ({"image_size": 8}, "--policy.image_size=8"),
        ({"seed": -1}, "--policy.seed=-1"),
        ({"seed": True}, "--policy.seed=True"),
        ({"width": 3}, "--policy.width"),
    ],
)
def test_bad_options_name_the_option(options, flag):
    with pytest.raises(PolicyError) as err:
        policy(**options)
    assert flag in str(err.value)


def test_bad_devices():
    with pytest.raises(PolicyError, match=r"--policy\.device='nope'"):
        policy(device="nope", **SMALL)
    if not torch.cuda.is_available():
        with pytest.raises(PolicyError, match="CUDA is not available"):
            policy(device="cuda", **SMALL)


def test_frames_of_another_size_are_resized_with_inter_area():
    p = policy(**SMALL)
    wanted = p.image_shapes  # front 24x32, wrist 24x24
    full = observe(CAMERAS, seed=3)  # as captured: 48x64 and a 60x60 frame
    resized = Observation(
        full.timestep,
        full.capture_ns,
        full.state,
        {
            k: cv2.resize(img, (wanted[k][1], wanted[k][0]), interpolation=cv2.INTER_AREA)
            for k, img in full.images.items()
        },
    )
    assert run(p, full).tobytes() == run(p, resized).tobytes()
    # Another aspect ratio: stretched, not cropped.
    odd = Observation(
        0, 0, full.state, {"front": full.images["wrist"], "wrist": full.images["front"]}
    )
    stretched = {
        k: cv2.resize(img, (wanted[k][1], wanted[k][0]), interpolation=cv2.INTER_AREA)
        for k, img in odd.images.items()
    }
    assert run(p, odd).tobytes() == run(p, Observation(0, 0, full.state, stretched)).tobytes()


def test_read_only_frames_need_no_copy_by_the_caller():
    p = policy(**SMALL)
    obs = observe(p.image_shapes)
    for img in obs.images.values():
        img.flags.writeable = False  # like a zero-copy shared-memory view
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run(p, obs)


def test_bad_observations():
    p = policy(**SMALL)
    obs = observe(p.image_shapes)
    del obs.images["wrist"]
    with pytest.raises(PolicyError, match="'wrist'"):
        p.preprocess(obs)
    obs = observe(p.image_shapes)
    obs.images["front"] = obs.images["front"].astype(np.float32)
    with pytest.raises(PolicyError, match="uint8"):
        p.preprocess(obs)
    with pytest.raises(PolicyError, match="state"):
        p.preprocess(observe(p.image_shapes, state=np.zeros(3)))


def test_state_only_robot():
    p = policy(cameras={}, **SMALL)
    p.warmup()
    assert p.image_shapes == {}
    assert run(p, Observation(0, 0, np.zeros(6, np.float32))).shape == (T, 6)


def test_robot_side_modules_do_not_import_torch():
    code = (
        "import sys\n"
        "import asyncinf.policies.policy, asyncinf.policies.scripted, asyncinf.robots.sim.robot\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
