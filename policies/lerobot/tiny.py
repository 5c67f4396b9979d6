"""Tiny random-initialised LeRobot checkpoints (ACT, Diffusion, SmolVLA), built on demand.

Tests and benchmarks need real LeRobot checkpoints that load through LeRobot's own code, but
the repository ships no binaries and CI has no Hugging Face hub. `make_tiny_checkpoint` builds
one in about a second with LeRobot's own `save_pretrained`, in the layout `lerobot-train`
writes (`config.json`, `model.safetensors`, the pre- and postprocessor pipelines with their
normalization statistics). It ships in the package so that users can check their setup
(LeRobot install, server, robot link) before they have a trained policy. The weights are
random: the actions mean nothing, but the statistics keep them within about ±100 joint
units.

SmolVLA needs a VLM config, tokenizer and processor even when it loads no VLM weights; a tiny
SmolVLM is written to `<directory>/vlm/` and the checkpoint points at it by absolute path, so
the checkpoint must not be moved after it is built.

LeRobot (and, for SmolVLA, transformers and num2words) are imported only when a checkpoint is
built: asyncinf's base install has no torch.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from asyncinf.runtime.errors import PolicyError

DEFAULT_CAMERAS = {"front": (96, 128)}
# Joint units: random MEAN_STD actions stay within about ±100 (3 std), MIN_MAX ones are clipped
# to ±100.
_JOINT_STATS = {"mean": 0.0, "std": 30.0, "min": -100.0, "max": 100.0}
_IMAGE_STATS = {"mean": 0.5, "std": 0.25, "min": 0.0, "max": 1.0}
_VLM_IMAGE_SIZE = 64
_VLM_PATCH_SIZE = 16
_VLM_SCALE_FACTOR = 2  # pixel shuffle: (64/16)² patches become 4 image tokens
_VLM_TEXT_LAYERS = 2
_UNK, _PAD = "<unk>", "<pad>"


def _act(directory: Path) -> dict[str, Any]:
    return {
        "chunk_size": 50,
        "n_action_steps": 50,
        "use_vae": False,
        "dim_model": 64,
        "n_heads": 2,
        "dim_feedforward": 128,
        "n_encoder_layers": 1,
        "n_decoder_layers": 1,
        "vision_backbone": "resnet18",
        "pretrained_backbone_weights": None,  # the default downloads ImageNet weights
    }


def _diffusion(directory: Path) -> dict[str, Any]:
    return {
        "n_obs_steps": 2,
        "horizon": 16,  # a multiple of 2 ** len(down_dims), which the config checks
        "n_action_steps": 8,
        "down_dims": (64, 128),
        "kernel_size": 3,
        "n_groups": 8,  # divides every entry of down_dims
        "diffusion_step_embed_dim": 32,
        "spatial_softmax_num_keypoints": 16,
        "num_inference_steps": 10,
        "vision_backbone": "resnet18",
        # Group norm is only allowed without pretrained weights, which is the case here.
        "pretrained_backbone_weights": None,
        "use_group_norm": True,
        # Older LeRobot defaulted to an 84×84 crop; None lets any image size through.
        "crop_shape": None,
    }


def _smolvla(directory: Path) -> dict[str, Any]:
    vlm_dir = _write_tiny_vlm(directory / "vlm")
    return {
        # The model and the preprocessor's tokenizer step both load from this name.
        "vlm_model_name": str(vlm_dir.resolve()),
        "load_vlm_weights": False,
        "resize_imgs_with_padding": (_VLM_IMAGE_SIZE, _VLM_IMAGE_SIZE),
        "num_vlm_layers": _VLM_TEXT_LAYERS,
        "chunk_size": 50,
        "n_action_steps": 50,
    }


def _vqbet(directory: Path) -> dict[str, Any]:
    return {
        "n_obs_steps": 3,
        "n_action_pred_token": 3,
        "action_chunk_size": 4,  # actions per call
        "vision_backbone": "resnet18",
        "pretrained_backbone_weights": None,
        "use_group_norm": True,
        "crop_shape": None,
        "spatial_softmax_num_keypoints": 16,
        "vqvae_n_embed": 8,
        "vqvae_embedding_dim": 32,
        "vqvae_enc_hidden_dim": 32,
        "gpt_n_layer": 1,
        "gpt_n_head": 2,
        "gpt_hidden_dim": 64,
        "gpt_input_dim": 64,
        "gpt_output_dim": 64,
    }


def _tdmpc(directory: Path) -> dict[str, Any]:
    return {}  # small already; one action per call (n_action_steps = 1)


_POLICIES: dict[str, Callable[[Path], dict[str, Any]]] = {
    "act": _act,
    "diffusion": _diffusion,
    "smolvla": _smolvla,
    "vqbet": _vqbet,
    "tdmpc": _tdmpc,
}
# TDMPC reads one camera under this key, not observation.images.<name>: a robot's camera
# reaches it through --policy.rename_map.
_SINGLE_IMAGE_KEY = {"tdmpc": "observation.image"}


def make_tiny_checkpoint(
    policy_type: str,
    directory: str | Path,
    *,
    joints: int = 6,
    cameras: dict[str, tuple[int, int]] | None = None,
    seed: int = 0,
    **config_overrides: Any,
) -> Path:
    """Write a random-initialised `policy_type` checkpoint to `directory` and return it.

    Features: `observation.state` and `action` of width `joints`, and one
    `observation.images.<cam>` of shape (3, H, W) per entry of `cameras` (camera → (H, W),
    default `{"front": (96, 128)}`). `config_overrides` are fields of the policy's config
    class (`n_action_steps=8`, `chunk_size=20`, ...). The weights are seeded
    with `seed` without touching the caller's random state.
    """
    defaults = _POLICIES.get(policy_type)
    if defaults is None:
        raise PolicyError(
            f"no tiny checkpoint for policy_type {policy_type!r}; choose one of {sorted(_POLICIES)}"
        )
    import lerobot.policies  # noqa: F401, PLC0415  (registers the config classes by type name)
    import torch  # noqa: PLC0415  (optional: the policy-side extras)
    from lerobot.configs.policies import PreTrainedConfig  # noqa: PLC0415
    from lerobot.policies.factory import (  # noqa: PLC0415
        get_policy_class,
        make_pre_post_processors,
    )

    from asyncinf.policies.lerobot.compat import feature_classes  # noqa: PLC0415

    FeatureType, PolicyFeature = feature_classes()  # noqa: N806  (LeRobot's classes)

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cameras = DEFAULT_CAMERAS if cameras is None else cameras
    joint_feature = PolicyFeature(type=FeatureType.STATE, shape=(joints,))
    input_features = {"observation.state": joint_feature}
    image_keys = {name: f"observation.images.{name}" for name in cameras}
    if policy_type in _SINGLE_IMAGE_KEY:
        if len(cameras) != 1:
            raise PolicyError(f"a tiny {policy_type} takes exactly one camera, not {cameras}")
        image_keys = dict.fromkeys(cameras, _SINGLE_IMAGE_KEY[policy_type])
    for name, (height, width) in cameras.items():
        input_features[image_keys[name]] = PolicyFeature(
            type=FeatureType.VISUAL, shape=(3, height, width)
        )
    output_features = {"action": PolicyFeature(type=FeatureType.ACTION, shape=(joints,))}

    config_class = PreTrainedConfig.get_choice_class(policy_type)
    config = config_class(
        **{**defaults(directory), **config_overrides},
        input_features=input_features,
        output_features=output_features,
        # Built and saved on CPU so the checkpoint loads anywhere; loaders set their device.
        device="cpu",
    )

    def stats(values: dict[str, float], shape: tuple[int, ...]) -> dict[str, Any]:
        return {key: torch.full(shape, value) for key, value in values.items()}

    dataset_stats = {key: stats(_JOINT_STATS, (joints,)) for key in ("observation.state", "action")}
    for name in cameras:
        dataset_stats[image_keys[name]] = stats(_IMAGE_STATS, (3, 1, 1))

    # The model is built on CPU: seeding only the CPU generator (torch.manual_seed would also
    # reseed CUDA's) inside a CPU-only fork leaves every caller's generator as it was.
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        policy = get_policy_class(policy_type)(config)
    preprocessor, postprocessor = make_pre_post_processors(config, dataset_stats=dataset_stats)
    policy.save_pretrained(directory)
    preprocessor.save_pretrained(directory)
    postprocessor.save_pretrained(directory)
    return directory


def _write_tiny_vlm(vlm_dir: Path) -> Path:
    """Write a tiny SmolVLM config, tokenizer and processor that `from_pretrained` can read."""
    from tokenizers import Tokenizer, models, pre_tokenizers  # noqa: PLC0415
    from transformers import PreTrainedTokenizerFast, SmolVLMConfig  # noqa: PLC0415
    from transformers.models.smolvlm import (  # noqa: PLC0415
        SmolVLMImageProcessor,
        SmolVLMProcessor,
        SmolVLMVideoProcessor,
    )

    # SmolVLM2's own special tokens: SmolVLA reads `fake_image_token_id` and
    # `global_image_token_id` off the tokenizer, and the processor looks up `<image>` when built.
    # Every ordinary word maps to <unk>, so the task text does not change the (random) output.
    image_tokens = {
        "fake_image_token": "<fake_token_around_image>",
        "global_image_token": "<global-img>",
        "image_token": "<image>",
        "end_of_utterance_token": "<end_of_utterance>",
    }
    vocab = {token: i for i, token in enumerate([_UNK, _PAD, *image_tokens.values()])}
    word_level = Tokenizer(models.WordLevel(vocab=vocab, unk_token=_UNK))
    word_level.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=word_level,
        unk_token=_UNK,
        pad_token=_PAD,  # the tokenizer step pads to the longest task
        # Saved to tokenizer_config.json; loading it back defines `<name>` and `<name>_id`.
        extra_special_tokens=image_tokens,
    )

    SmolVLMConfig(
        text_config={
            "model_type": "llama",
            "vocab_size": len(vocab),
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": _VLM_TEXT_LAYERS,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "pad_token_id": vocab[_PAD],
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": _VLM_IMAGE_SIZE,
            "patch_size": _VLM_PATCH_SIZE,
        },
        scale_factor=_VLM_SCALE_FACTOR,
        image_token_id=vocab["<image>"],
        pad_token_id=vocab[_PAD],
    ).save_pretrained(vlm_dir)

    # SmolVLA resizes and normalizes images itself; the processor only has to load.
    size = {"longest_edge": _VLM_IMAGE_SIZE}
    SmolVLMProcessor(
        image_processor=SmolVLMImageProcessor(
            do_image_splitting=False, size=size, max_image_size=size
        ),
        tokenizer=tokenizer,
        video_processor=SmolVLMVideoProcessor(size=size, max_image_size=size),
        image_seq_len=(_VLM_IMAGE_SIZE // _VLM_PATCH_SIZE // _VLM_SCALE_FACTOR) ** 2,
    ).save_pretrained(vlm_dir)
    return vlm_dir
