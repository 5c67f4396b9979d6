"""The `Policy` interface: an observation in, a chunk of actions out.

The server times three stages separately: `preprocess` (default: pass the observation
through), `predict_chunk` (the model), `postprocess` (to a float32 [T, A] array). A policy
overrides `predict_chunk` and, when it has real pre/post work, the other two.

Real-time chunking: a policy that sets `supports_rtc = True` takes a keyword `rtc` in
`predict_chunk` (an `RtcInput`, or None when the session runs without RTC) and makes its
chunk agree with the given tail over the first `inference_delay` actions. The server passes
`rtc` only to such policies; `--rtc` is refused for the others.

Batching across sessions: a server with several sessions on one policy hands it the inputs
of all that wait at once through `predict_batch`. Its default runs them one by one; a policy
whose model takes a batch dimension sets `supports_batch = True` and runs them in one pass.

State per robot (an observation history): a policy that keeps one says so with
`keeps_session_state` and hands it over with `session_state` / `restore_session_state`; the
server swaps it per session before each call, so robots sharing one loaded policy never mix
their histories (such a policy is not batched across sessions).
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import numpy as np

from asyncinf.policies.torch_device import DEVICE_TYPES
from asyncinf.runtime.errors import PolicyError, PolicyOptionError
from asyncinf.runtime.messages import Handshake, Observation, Options, PolicySpec
from asyncinf.runtime.registry import Registry

DEFAULT_CHUNK_SIZE = 50  # the built-in policies' T when the client leaves it to the policy


class Policy(abc.ABC):
    """Built once per (type, path, device) on the server; kept across client sessions."""

    # Options this policy type accepts in PolicySpec.options, with their defaults.
    default_options: ClassVar[Options] = {}
    # True: options beyond default_options are the policy's to check (a checkpoint's config).
    open_options: ClassVar[bool] = False
    # True: predict_chunk(inputs, rtc=RtcInput | None) does real-time chunking.
    supports_rtc: ClassVar[bool] = False
    # True: predict_batch runs several sessions' inputs in one pass of the model.
    supports_batch: ClassVar[bool] = False

    def __init__(self, spec: PolicySpec, features: Handshake) -> None:
        self.check_options(spec)
        self.spec = spec
        self.options = {**self.default_options, **spec.options}
        self.joint_names = list(features.joint_names)
        self.cameras = dict(features.cameras)
        self.robot_type = features.robot_type

    @classmethod
    def check_options(cls, spec: PolicySpec) -> None:
        """Raise PolicyOptionError for an option this type does not take or a value out of
        range. Cheap and free of the model's imports: the supervisor calls it before any
        process starts, and `__init__` calls it again."""
        unknown = set(spec.options) - set(cls.default_options)
        if unknown and not cls.open_options:
            raise PolicyOptionError(
                f"--policy.{sorted(unknown)[0]} is not an option of --policy.type={spec.type}; "
                f"known: {sorted(cls.default_options)}"
            )

    @property
    def chunk_size(self) -> int:
        """Actions per chunk: what the client asked for, else DEFAULT_CHUNK_SIZE."""
        return self.spec.actions_per_chunk or DEFAULT_CHUNK_SIZE

    @property
    def action_names(self) -> list[str]:
        return self.joint_names

    @property
    def image_shapes(self) -> dict[str, tuple[int, int, int]]:
        """The (H, W, 3) the policy wants per camera; the client resizes before sending."""
        return self.cameras

    def preprocess(self, observation: Observation) -> Any:
        return observation

    @abc.abstractmethod
    def predict_chunk(self, inputs: Any) -> Any:
        """Actions for timesteps t..t+T-1 from what `preprocess` returned."""

    def predict_batch(self, inputs: list[Any]) -> list[Any]:
        """`predict_chunk` of each of several sessions' inputs, in order (one by one here)."""
        return [self.predict_chunk(one) for one in inputs]

    def postprocess(self, outputs: Any) -> np.ndarray:
        actions = np.asarray(outputs, dtype=np.float32)
        expected = (self.chunk_size, len(self.action_names))
        if actions.shape != expected:
            raise PolicyError(
                f"policy returned actions of shape {actions.shape}, expected {expected}"
            )
        return actions

    @property
    def keeps_session_state(self) -> bool:
        """True when the policy keeps state between chunks of one robot (an observation
        history; it then implements `session_state` and `restore_session_state`): the server
        loads each session's own state before its calls."""
        return False

    def session_state(self) -> Any:
        """The state kept between one robot's chunks, as an object the server holds while
        other sessions run; `restore_session_state` takes it back. Not copied: the policy
        stops using it until it is restored."""
        return None

    def restore_session_state(self, state: Any) -> None:
        """Load what `session_state` returned; None: a new session's fresh state (the
        model's, as after `reset`)."""

    @property
    def info(self) -> dict[str, Any]:
        """Versions worth showing beside the run (e.g. LeRobot's), for `asyncinf status`."""
        return {}

    def reset(self) -> None:
        """Forget any state kept between chunks (a new episode or session)."""

    def blank_observation(self) -> Observation:
        """Zeros at the shapes the policy takes."""
        return Observation(
            timestep=0,
            capture_ns=0,
            state=np.zeros(len(self.joint_names), np.float32),
            images={k: np.zeros(s, np.uint8) for k, s in self.image_shapes.items()},
        )

    def warmup(self) -> None:
        """Run once on a blank observation so the first real call is not the slow one."""
        self.postprocess(self.predict_chunk(self.preprocess(self.blank_observation())))
        self.reset()


POLICIES: Registry[Policy] = Registry(
    "policy",
    {
        "scripted": "asyncinf.policies.scripted:ScriptedPolicy",
        "tiny_torch": "asyncinf.policies.tiny_torch:TinyTorchPolicy",
        "fake": "asyncinf.policies.fake:FakePolicy",
    },
    # Any other type is LeRobot's (imported only then, and only if it knows the type).
    fallback="asyncinf.policies.lerobot:policy_class",
)


def make_policy(spec: PolicySpec, features: Handshake) -> Policy:
    return POLICIES.load(spec.type)(spec, features)


def check_spec(spec: PolicySpec, *, loads_here: bool) -> None:
    """Refuse bad `--policy.*` values before any process starts (PolicyOptionError).

    Registered types are checked in full (their classes import without the model's
    dependencies). Any other type is LeRobot's: where the policy loads on this machine
    (`loads_here`) LeRobot must be installed; whether it knows the type and its options is
    checked when it loads, since importing LeRobot takes seconds.
    """
    check_rtc(spec)
    if spec.type in POLICIES.names():
        POLICIES.load(spec.type).check_options(spec)
        check_device_name(spec.device)
    elif loads_here:
        from asyncinf.policies.lerobot import compat  # noqa: PLC0415  (imports no LeRobot)

        compat.require(spec.type)
        check_device_name(spec.device)


def rtc_policy_types() -> list[str]:
    """The policy types that can do real-time chunking: the built-ins that say so, and
    LeRobot's (known without importing LeRobot)."""
    from asyncinf.policies.lerobot import compat  # noqa: PLC0415  (imports no LeRobot)

    builtin = [name for name in POLICIES.names() if POLICIES.load(name).supports_rtc]
    return [*builtin, *compat.RTC_TYPES]


def check_rtc(spec: PolicySpec) -> None:
    """Refuse `--rtc` for a policy type that cannot do it, naming those that can."""
    if spec.rtc is not None and spec.type not in rtc_policy_types():
        raise PolicyOptionError(
            f"--rtc: --policy.type={spec.type} cannot do real-time chunking; the policies "
            f"that can: {', '.join(rtc_policy_types())}"
        )


def check_device_name(name: str) -> None:
    """`cpu`, `cuda`, `cuda:N`, `mps`, `xpu` or `xpu:N` (whether it exists: at load)."""
    kind, colon, index = name.partition(":")
    if kind not in DEVICE_TYPES or (colon and not index.isdigit()) or (colon and kind == "cpu"):
        raise PolicyOptionError(
            f"--policy.device={name!r}: not a device; use one of {list(DEVICE_TYPES)}, "
            "e.g. cpu or cuda:0"
        )
