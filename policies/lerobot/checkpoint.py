"""From `--policy.path` to a loaded LeRobot policy and its processors, as LeRobot loads them.

The order is LeRobot's: the config (its `type` picks the class), the policy class's
`from_pretrained`, then the checkpoint's own pre/post processors with the device and
`rename_map` overridden. What commonly goes wrong is checked first and reported in one line
naming the file and the fix: a directory that is no checkpoint, one saved by a newer LeRobot,
a truncated `model.safetensors`, processor files missing (checkpoints from before LeRobot 0.4).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asyncinf.policies.lerobot.compat import LeRobot
from asyncinf.runtime.errors import PolicyError

log = logging.getLogger(__name__)

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
PREPROCESSOR = "policy_preprocessor.json"
POSTPROCESSOR = "policy_postprocessor.json"
HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
LAYOUT_HINT = (
    "lerobot-train writes them to outputs/train/<run>/checkpoints/<step>/pretrained_model/"
)


@dataclass
class Found:
    """A checkpoint directory whose files are all there (checked before LeRobot imports)."""

    directory: Path
    steps: dict[str, list[str]]  # processor file -> its step names


@dataclass
class Loaded:
    directory: Path
    config: Any  # the policy's PreTrainedConfig subclass
    policy: Any  # PreTrainedPolicy, on the device, in eval mode
    preprocessor: Any
    postprocessor: Any


def resolve(path: str) -> Path:
    """The local checkpoint directory: `path` itself, or a hub id from the Hugging Face cache."""
    if not path:
        raise PolicyError(
            "LeRobot policies need --policy.path=DIR or a hub id (ORG/NAME); " + LAYOUT_HINT
        )
    local = Path(path).expanduser()
    if local.is_dir():
        for candidate in (local, local / "pretrained_model"):  # a training step's folder
            if (candidate / CONFIG).is_file():
                return candidate
        raise PolicyError(
            f"--policy.path={path}: no {CONFIG} here, so no LeRobot checkpoint; {LAYOUT_HINT}"
        )
    if local.exists():
        raise PolicyError(f"--policy.path={path}: a file; give the checkpoint's directory")
    if not HUB_ID.match(path):
        raise PolicyError(f"--policy.path={path}: no such directory, and not a hub id (ORG/NAME)")
    from huggingface_hub import snapshot_download  # noqa: PLC0415  (a LeRobot dependency)

    try:
        return Path(snapshot_download(repo_id=path))
    except Exception as exc:  # noqa: BLE001  (offline and not cached, unknown repo, no network)
        raise PolicyError(
            f"--policy.path={path}: no such directory, and the hub id could not be resolved "
            f"({type(exc).__name__}); with HF_HUB_OFFLINE=1 it must be in the Hugging Face "
            "cache: download it once where the hub is reachable"
        ) from None


def _processor_files(directory: Path) -> dict[str, list[str]]:
    """Each processor file's step names, after checking that every file it names is there."""
    steps = {}
    for name in (PREPROCESSOR, POSTPROCESSOR):
        file = directory / name
        if not file.is_file():
            raise PolicyError(
                f"{file}: missing. Checkpoints from LeRobot < 0.4 keep normalization inside the "
                "model; convert them with LeRobot's "
                "`python -m lerobot.processor.migrate_policy_normalization`"
            )
        try:
            pipeline = json.loads(file.read_text())
            entries = pipeline["steps"]
        except (ValueError, KeyError, TypeError) as exc:
            raise PolicyError(f"{file}: not a LeRobot processor file ({exc})") from None
        for step in entries:
            state = step.get("state_file")
            if state and not (directory / state).is_file():
                raise PolicyError(
                    f"{directory / state}: missing (the normalization statistics "
                    f"{name} names); copy the whole checkpoint directory again"
                )
        steps[name] = [s.get("registry_name", "") for s in entries]
    return steps


def _config(lr: LeRobot, directory: Path, policy_type: str, overrides: dict[str, Any]) -> Any:
    file = directory / CONFIG
    try:
        saved_type = json.loads(file.read_text()).get("type")
    except (ValueError, AttributeError) as exc:
        raise PolicyError(f"{file}: not valid JSON ({exc})") from None
    known = lr.PreTrainedConfig.get_known_choices()
    if saved_type not in known:
        raise PolicyError(
            f"{file}: policy type {saved_type!r} is not known to LeRobot {lr.version} "
            f"({sorted(known)}); a plugin's policy needs its lerobot_policy_* package installed"
        )
    if saved_type != policy_type:
        raise PolicyError(
            f"{file} is a {saved_type!r} checkpoint; --policy.type={policy_type} asks for "
            f"another: use --policy.type={saved_type}"
        )
    config_class = lr.PreTrainedConfig.get_choice_class(saved_type)
    fields = {f.name for f in dataclasses.fields(config_class)}
    for name in overrides:
        if name not in fields:
            raise PolicyError(
                f"--policy.{name} is neither an asyncinf option (rename_map) nor a field of "
                f"{config_class.__name__} (the fields are those in {file})"
            )
    args = [f"--{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in overrides.items()]
    try:
        return lr.PreTrainedConfig.from_pretrained(str(directory), cli_overrides=args)
    except Exception as exc:  # noqa: BLE001  (draccus's DecodingError and others name the field)
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "are not valid for" in text or "is not a valid" in text:
            fields = text.split("The fields", 1)[-1].split("are not valid", 1)[0].strip()
            raise PolicyError(
                f"{file}: fields {fields} are unknown to LeRobot {lr.version}: the checkpoint "
                "was saved by a newer LeRobot; upgrade LeRobot on the server (or delete those "
                "fields from config.json if they are at their defaults)"
            ) from None
        raise PolicyError(f"{file}: {text}") from None


def find(path: str) -> Found:
    """The checkpoint `path` names, with every file it needs present; raises PolicyError."""
    directory = resolve(path)
    steps = _processor_files(directory)
    weights = directory / WEIGHTS
    if not weights.is_file():
        raise PolicyError(f"{weights}: missing; copy the whole checkpoint directory again")
    return Found(directory, steps)


def load(
    lr: LeRobot,
    found: Found,
    *,
    policy_type: str,
    device: str,
    rename_map: dict[str, str],
    overrides: dict[str, Any],
) -> Loaded:
    directory, steps = found.directory, found.steps
    weights = directory / WEIGHTS
    t0 = time.monotonic()
    cfg = _config(lr, directory, policy_type, overrides)
    cfg.device = device
    try:
        policy = lr.get_policy_class(cfg.type).from_pretrained(str(directory), config=cfg)
    except Exception as exc:  # noqa: BLE001  (safetensors, torch, shape errors: the file is bad)
        raise PolicyError(
            f"{weights}: cannot be loaded ({type(exc).__name__}: {str(exc)[:200]}); the file is "
            "corrupted, truncated or from another model: copy the checkpoint again"
        ) from None
    policy.eval()
    log.info("loaded %s (%s) in %.1f s", directory, cfg.type, time.monotonic() - t0)
    # Overrides may name only steps the checkpoint has (LeRobot raises KeyError otherwise).
    pre_overrides: dict[str, Any] = {"device_processor": {"device": device}}
    if "rename_observations_processor" in steps[PREPROCESSOR]:
        pre_overrides["rename_observations_processor"] = {"rename_map": rename_map}
    elif rename_map:
        raise PolicyError(f"{directory / PREPROCESSOR} has no rename step for --policy.rename_map")
    post_overrides = {}
    if "device_processor" in steps[POSTPROCESSOR]:
        post_overrides["device_processor"] = {"device": "cpu"}
    try:
        pre, post = lr.make_pre_post_processors(
            policy.config,
            pretrained_path=str(directory),
            preprocessor_overrides={
                k: v for k, v in pre_overrides.items() if k in steps[PREPROCESSOR]
            },
            postprocessor_overrides=post_overrides,
        )
    except Exception as exc:  # noqa: BLE001  (a step that does not load: statistics, tokenizer)
        raise PolicyError(
            f"{directory}: the processors do not load ({type(exc).__name__}: {str(exc)[:200]})"
        ) from None
    return Loaded(directory, policy.config, policy, pre, post)
