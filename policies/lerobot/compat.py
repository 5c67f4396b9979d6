"""Where LeRobot keeps what we use, in 0.4.x (Python 3.10/3.11) and 0.5+/0.6.x (Python ≥ 3.12).

Everything asyncinf takes from LeRobot is imported here, once, so a name that moves between
versions is resolved in one place. `import lerobot.policies` comes first: it registers the
config classes, without which a checkpoint's `"type": "act"` does not parse. Never import
`lerobot.async_inference`: it configures the root logger and writes `./logs/` on import.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import logging
import time
from dataclasses import dataclass
from functools import cache
from typing import Any

from asyncinf.runtime import lerobot as installation
from asyncinf.runtime.errors import PolicyError, PolicyOptionError

log = logging.getLogger(__name__)

# Types whose LeRobot implementation does real-time chunking in 0.4.x; 0.6.x adds more, each
# telling by its policy class's supports_rtc().
RTC_TYPES = ("smolvla", "pi0", "pi05")

INSTALL_HINT = "see the README's 'Serving a LeRobot checkpoint' (scripts/lerobot_env.sh builds one)"


@dataclass(frozen=True)
class LeRobot:
    """The LeRobot functions and classes the adapter uses."""

    version: str
    PreTrainedConfig: Any
    get_policy_class: Any
    make_pre_post_processors: Any
    prepare_observation_for_inference: Any
    populate_queues: Any
    OBS_IMAGES: str


def _first(*candidates: tuple[str, str]) -> Any:
    """The first `module:name` of `candidates` that imports (names that moved)."""
    for module, name in candidates:
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
    raise PolicyError(f"this LeRobot has none of {candidates}: an unsupported version")


@cache
def load() -> LeRobot:
    """Import LeRobot's policy stack (6–9 s the first time) and its plugins."""
    if not installation.installed():
        raise PolicyError(
            "LeRobot policy types need LeRobot installed in the server's environment; "
            + INSTALL_HINT
        )
    version = installation.version()
    log.info("importing LeRobot %s (the first import takes several seconds)", version)
    t0 = time.monotonic()
    try:
        importlib.import_module("lerobot.policies")  # registers the config classes
        from lerobot.configs.policies import PreTrainedConfig  # noqa: PLC0415
        from lerobot.policies import factory  # noqa: PLC0415
        from lerobot.policies import utils as policy_utils  # noqa: PLC0415
        from lerobot.utils.constants import OBS_IMAGES  # noqa: PLC0415
    except ImportError as exc:
        raise PolicyError(f"LeRobot {version} does not import: {exc}; " + INSTALL_HINT) from None
    installation.register_plugins()  # lerobot_policy_* plugins register their config classes
    log.info("LeRobot %s imported in %.1f s", version, time.monotonic() - t0)
    return LeRobot(
        version=version,
        PreTrainedConfig=PreTrainedConfig,
        get_policy_class=factory.get_policy_class,
        make_pre_post_processors=factory.make_pre_post_processors,
        prepare_observation_for_inference=policy_utils.prepare_observation_for_inference,
        populate_queues=policy_utils.populate_queues,
        OBS_IMAGES=OBS_IMAGES,
    )


def known_types() -> list[str]:
    return sorted(load().PreTrainedConfig.get_known_choices())


def _builtins() -> list[str]:
    from asyncinf.policies.policy import POLICIES  # noqa: PLC0415

    return POLICIES.names()


def require(name: str) -> None:
    """Raise PolicyOptionError, without importing it, where LeRobot is not installed."""
    if not installation.installed():
        raise PolicyOptionError(
            f"--policy.type={name!r} is not a built-in policy ({_builtins()}); LeRobot "
            "types (act, diffusion, smolvla, pi0, pi05, …) need LeRobot installed in the "
            "server's environment; " + INSTALL_HINT
        )


def check_type(name: str) -> None:
    """Raise PolicyOptionError unless LeRobot knows policy type `name` (imports LeRobot)."""
    known = known_types()
    if name not in known:
        raise PolicyOptionError(
            f"--policy.type={name!r} is neither a built-in policy ({_builtins()}) nor "
            f"one LeRobot {load().version} knows ({known})"
        )


@dataclass(frozen=True)
class Rtc:
    """LeRobot's real-time chunking pieces (same modules in 0.4.x and 0.6.x)."""

    RTCConfig: Any
    RTCAttentionSchedule: Any  # a str Enum: ZEROS, ONES, LINEAR, EXP
    NormalizerProcessorStep: Any
    TransitionKey: Any
    create_transition: Any


@cache
def rtc() -> Rtc:
    load()
    from lerobot.configs.types import RTCAttentionSchedule  # noqa: PLC0415
    from lerobot.policies.rtc.configuration_rtc import RTCConfig  # noqa: PLC0415
    from lerobot.processor import (  # noqa: PLC0415
        NormalizerProcessorStep,
        TransitionKey,
        create_transition,
    )

    return Rtc(
        RTCConfig, RTCAttentionSchedule, NormalizerProcessorStep, TransitionKey, create_transition
    )


def supports_rtc(policy_type: str, model: Any, preprocessor: Any) -> bool:
    """Whether a loaded policy does real-time chunking through the adapter: the policy's own
    `supports_rtc()` where LeRobot has it (0.6.x; MolmoAct2's depends on its config), else
    RTC_TYPES. Not a checkpoint trained on relative actions (0.6.x π0.5's
    `use_relative_actions`): its tail would first have to be re-anchored on the state."""
    own = getattr(model, "supports_rtc", None)
    capable = policy_type in RTC_TYPES if own is None else bool(own() if callable(own) else own)
    relative = any(
        type(step).__name__ == "RelativeActionsProcessorStep" and getattr(step, "enabled", False)
        for step in getattr(preprocessor, "steps", ())
    )
    return capable and not relative


def feature_classes() -> tuple[Any, Any]:
    """(FeatureType, PolicyFeature): `lerobot.configs.types` in 0.4.x and 0.6.1, which also
    exports them as `lerobot.configs` (the name its own code uses)."""
    return (
        _first(("lerobot.configs.types", "FeatureType"), ("lerobot.configs", "FeatureType")),
        _first(("lerobot.configs.types", "PolicyFeature"), ("lerobot.configs", "PolicyFeature")),
    )
