"""`LeRobotPolicy`: any LeRobot checkpoint behind the `Policy` interface.

The model sees exactly what LeRobot's synchronous path (`lerobot-record --policy.path`) gives
it: the state in the robot's joint order as `observation.state`, each camera as
`observation.images.<name>` (float in [0, 1], CHW) through LeRobot's own
`prepare_observation_for_inference`, the task and the robot type, then the checkpoint's
preprocessor (renaming, normalization, device). Frames reach it already fitted to the
checkpoint's input size by the client (runtime/images.py: never stretched).

Around the model nothing is wasted: the postprocessor runs once on the whole (1, T, A) chunk
(LeRobot's server runs it per action), inference is under `torch.no_grad()` (not
`inference_mode`, which breaks the autograd real-time chunking uses), and on an accelerator the
device is synchronized before a timing is read.

Real-time chunking (RTC types only: `supports_rtc`, known once loaded): see `rtc.py`.

Policies that keep an observation history (Diffusion, VQ-BeT, TDMPC: a `_queues` dict that
only `select_action` fills) get their queues filled the way `select_action` fills them before
`predict_action_chunk`, which is what LeRobot's own async server misses (#3445). After a reset
the first observation fills the whole history; later entries are the observations the server
was sent, one per chunk, not one per tick. Each session has its own history: the server swaps
the model's `_queues` (and TDMPC's warm start) per session (`session_state`).
"""

from __future__ import annotations

import json
import logging
from typing import Any, ClassVar

import numpy as np

from asyncinf.policies.lerobot import checkpoint, compat
from asyncinf.policies.lerobot.rtc import Guidance
from asyncinf.policies.policy import Policy
from asyncinf.policies.torch_device import import_torch, resolve_device, synchronize
from asyncinf.runtime.errors import PolicyError
from asyncinf.runtime.messages import Handshake, Observation, PolicySpec, RtcInput, RtcSettings

log = logging.getLogger(__name__)

# What the model's reset() sets afresh for a robot: the observation/action queues (Diffusion,
# VQ-BeT, TDMPC) and TDMPC's warm start of its planner.
SESSION_ATTRIBUTES = ("_queues", "_prev_mean")

STATE = "observation.state"
IMAGE_PREFIX = "observation.images."


class LeRobotPolicy(Policy):
    """Options: `rename_map` (LeRobot's form); any other is a field of the checkpoint's config."""

    default_options: ClassVar[dict[str, Any]] = {"rename_map": {}}
    open_options = True  # the rest override the checkpoint's config (draccus validates them)

    def __init__(self, spec: PolicySpec, features: Handshake) -> None:
        super().__init__(spec, features)
        found = checkpoint.find(spec.path)  # a mistyped path fails before the slow import
        self.torch = torch = import_torch(spec.type)
        lr = self.lerobot = compat.load()
        compat.check_type(spec.type)
        self.device = resolve_device(torch, spec.device)
        rename_map = self.options["rename_map"]
        if not isinstance(rename_map, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in rename_map.items()
        ):
            raise PolicyError(
                f"--policy.rename_map={rename_map!r}: expected a map of observation keys, e.g. "
                '\'{"observation.images.front": "observation.images.top"}\''
            )
        overrides = {k: v for k, v in self.options.items() if k not in self.default_options}
        log.info("loading LeRobot %s checkpoint %s on %s", spec.type, spec.path, self.device)
        loaded = checkpoint.load(
            lr,
            found,
            policy_type=spec.type,
            device=str(self.device),
            rename_map=rename_map,
            overrides=overrides,
        )
        self.config, self.model = loaded.config, loaded.policy
        self.pre, self.post = loaded.preprocessor, loaded.postprocessor
        where = f"the checkpoint {loaded.directory}"
        self._check_widths(where)
        self._image_shapes = self._camera_shapes(where, rename_map)
        self._has_state = self.config.robot_state_feature is not None
        self._returns = 0  # actions per predict_action_chunk call, measured at warm-up
        # Real-time chunking, where this type does it (None: it does not).
        self.guidance = (
            Guidance(torch, self.model, self.pre, self.device)
            if compat.supports_rtc(spec.type, self.model, self.pre)
            else None
        )

    @property  # one class serves every type: known per instance, once loaded
    def supports_rtc(self) -> bool:  # type: ignore[override]
        return self.guidance is not None

    # -- features, checked against the robot -------------------------------------------------

    def _check_widths(self, where: str) -> None:
        """State and action widths against the robot's joints; no inputs a robot lacks."""
        cfg, joints = self.config, self.joint_names
        for what, feature in (("state", cfg.robot_state_feature), ("action", cfg.action_feature)):
            if feature is not None and feature.shape[0] != len(joints):
                raise PolicyError(
                    f"{where} has {feature.shape[0]} {what} values, the robot has {len(joints)} "
                    f"joints ({joints}): a checkpoint drives the kind of robot it was trained "
                    "on; check --robot.type"
                )
        if cfg.action_feature is None:
            raise PolicyError(f"{where} has no action feature: not a control policy")
        if cfg.env_state_feature is not None:
            raise PolicyError(
                f"{where} needs observation.environment_state, which a robot does not provide"
            )

    def _camera_shapes(self, where: str, rename_map: dict[str, str]) -> dict[str, Any]:
        """(H, W, 3) per robot camera the checkpoint takes, found through `rename_map`."""
        cfg = self.config
        by_key = {
            rename_map.get(IMAGE_PREFIX + cam, IMAGE_PREFIX + cam): cam for cam in self.cameras
        }
        missing = sorted(set(cfg.image_features) - set(by_key))
        if missing:
            have = sorted(by_key)
            example = {IMAGE_PREFIX + by_key[have[0]]: missing[0]} if have else {}
            raise PolicyError(
                f"{where} needs camera(s) {missing}; the robot's cameras give {have}"
                + (f" after --policy.rename_map={rename_map}" if rename_map else "")
                + (
                    f": map them with --policy.rename_map='{json.dumps(example)}'"
                    if example
                    else ""
                )
                + ", or add the camera with --robot.cameras"
            )
        shapes = {}
        for key, feature in cfg.image_features.items():
            channels, height, width = feature.shape
            shapes[by_key[key]] = (int(height), int(width), int(channels))
        return shapes

    @property
    def image_shapes(self) -> dict[str, tuple[int, int, int]]:
        return dict(self._image_shapes)

    @property
    def chunk_size(self) -> int:
        return self.spec.actions_per_chunk or self._returns

    @property
    def keeps_session_state(self) -> bool:
        """Diffusion, VQ-BeT, TDMPC: their `_queues` hold this robot's recent observations."""
        return isinstance(getattr(self.model, "_queues", None), dict)

    def session_state(self) -> dict[str, Any]:
        return {k: getattr(self.model, k) for k in SESSION_ATTRIBUTES if hasattr(self.model, k)}

    def restore_session_state(self, state: dict[str, Any] | None) -> None:
        if state is None:
            self.model.reset()  # new queues: the session's state never shares the old ones
            return
        for name, value in state.items():
            setattr(self.model, name, value)

    @property
    def info(self) -> dict[str, Any]:
        return {"lerobot": self.lerobot.version, "torch": self.torch.__version__}

    # -- inference ---------------------------------------------------------------------------

    def preprocess(self, observation: Observation) -> dict[str, Any]:
        """LeRobot's sync-path batch, then the checkpoint's preprocessor."""
        raw: dict[str, np.ndarray] = {}
        if self._has_state:
            state = np.asarray(observation.state, np.float32)
            if state.shape != (len(self.joint_names),):
                raise PolicyError(
                    f"observation state has shape {state.shape}, "
                    f"expected ({len(self.joint_names)},)"
                )
            raw[STATE] = state.copy()  # torch.from_numpy needs a writable array of its own
        for cam, want in self._image_shapes.items():
            img = observation.images.get(cam)
            if img is None:
                raise PolicyError(f"observation has no image from camera {cam!r}")
            if img.shape != want or img.dtype != np.uint8:
                raise PolicyError(
                    f"camera {cam!r}: got {img.dtype} {img.shape}, the checkpoint takes uint8 "
                    f"{want} (the client fits frames to it; was --image_fit=none given?)"
                )
            # A copy: shared-memory views are read-only. The preprocessor renames the key.
            raw[IMAGE_PREFIX + cam] = np.array(img)
        batch = self.lerobot.prepare_observation_for_inference(
            raw, self.device, observation.task, self.robot_type
        )
        return self.pre(batch)

    def predict_chunk(self, inputs: dict[str, Any], rtc: RtcInput | None = None) -> Any:
        torch, model = self.torch, self.model
        guided: dict[str, Any] = {}
        if rtc is not None:
            if self.guidance is None:
                raise PolicyError(f"--policy.type={self.spec.type} does no real-time chunking")
            guided = self.guidance.arguments(rtc, len(self.action_names), self._returns)
        # no_grad, not inference_mode: RTC takes a gradient inside (torch.autograd.grad).
        with torch.no_grad():
            queues = getattr(model, "_queues", None)
            if isinstance(queues, dict):  # a history policy: fill its queues as select_action does
                inputs = dict(inputs)
                # The preprocessor leaves an "action": None entry; the action queue must not
                # be stacked (select_action pops it too).
                inputs.pop("action", None)
                images = list(self.config.image_features)
                if images and self.lerobot.OBS_IMAGES in queues:
                    inputs[self.lerobot.OBS_IMAGES] = torch.stack(
                        [inputs[k] for k in images], dim=-4
                    )
                self.lerobot.populate_queues(queues, inputs)
            actions = model.predict_action_chunk(inputs, **guided)
        synchronize(torch, self.device)
        return actions

    def postprocess(self, outputs: Any) -> np.ndarray:
        """One postprocessor call on the whole (1, T, A) chunk, then the first chunk_size rows."""
        actions = self.post(outputs)
        chunk = actions.detach().to("cpu").numpy().astype(np.float32, copy=False)
        if chunk.ndim == 3:
            chunk = chunk[0]
        return super().postprocess(chunk[: self.chunk_size])

    def reset(self) -> None:
        """A new session: the policy's queues and both processors' state start afresh."""
        self.model.reset()
        self.pre.reset()
        self.post.reset()

    def warmup(self) -> None:
        """A real inference at the checkpoint's shapes; learns how many actions a call returns."""
        self.model.reset()
        blank = self.blank_observation()
        outputs = self.predict_chunk(self.preprocess(blank))
        self._returns = int(outputs.shape[-2])
        asked = self.spec.actions_per_chunk
        if asked > self._returns:
            raise PolicyError(
                f"--actions_per_chunk={asked}: the checkpoint returns {self._returns} actions per "
                f"call (its n_action_steps / chunk_size); use --actions_per_chunk={self._returns} "
                "or fewer, or leave it out to take them all"
            )
        self.postprocess(outputs)
        if self.guidance is not None:  # the guided path too: no slow first RTC call
            self.model.reset()
            blank_tail = np.zeros((self._returns, len(self.action_names)), np.float32)
            guided = RtcInput(min(4, self._returns), blank_tail, RtcSettings())
            self.postprocess(self.predict_chunk(self.preprocess(blank), rtc=guided))
        self.reset()
        log.info(
            "warmed up: %d actions per call, %d per chunk sent%s",
            self._returns,
            self.chunk_size,
            ", real-time chunking too" if self.guidance is not None else "",
        )
