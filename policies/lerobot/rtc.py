"""Real-time chunking for LeRobot's flow-matching policies (SmolVLA, π0, π0.5; 0.6.x: more).

LeRobot's RTC processor inpaints a new chunk so that its first `inference_delay` actions agree
with the previous chunk's unexecuted tail, and eases off over `execution_horizon` actions.
It works in the model's own action space: the client's tail (robot units, in the robot's joint
order, which is the checkpoint's action order) goes through the checkpoint's preprocessor
normalizer, as an action, before it is given to `predict_action_chunk`. LeRobot pads a short
tail itself; a tail longer than the chunk is cut to it (LeRobot's padding would fail on it).

The processor is enabled the first time a session asks for RTC and rebuilt only when the
settings change. Once enabled it stays: a call without a tail is a plain one (LeRobot applies
no guidance without a tail), so sessions with and without RTC can share the policy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from asyncinf.policies.lerobot import compat
from asyncinf.runtime.errors import PolicyError, PolicyOptionError
from asyncinf.runtime.messages import RtcInput, RtcSettings


class Guidance:
    """One loaded policy's RTC: its settings, and the tail in the model's action space."""

    def __init__(self, torch: Any, model: Any, preprocessor: Any, device: Any) -> None:
        self.torch, self.model, self.device = torch, model, device
        self.lr = compat.rtc()
        normalizers = [
            step
            for step in getattr(preprocessor, "steps", ())
            if isinstance(step, self.lr.NormalizerProcessorStep)
        ]
        self._normalizer = normalizers[0] if normalizers else None
        self.settings: RtcSettings | None = None  # None: the processor was never enabled

    def configure(self, settings: RtcSettings) -> None:
        """Enable LeRobot's RTC processor with `settings` (which checked their own ranges,
        and whose schedule names are LeRobot's; PolicyOptionError if LeRobot refuses one)."""
        if settings == self.settings:
            return
        try:
            config = self.lr.RTCConfig(
                enabled=True,
                execution_horizon=int(settings.execution_horizon),
                max_guidance_weight=float(settings.max_guidance_weight),
                prefix_attention_schedule=self.lr.RTCAttentionSchedule[
                    settings.prefix_attention_schedule
                ],
            )
        except (ValueError, KeyError) as exc:  # a LeRobot whose own checks or names differ
            raise PolicyOptionError(f"--rtc: LeRobot refuses {settings}: {exc}") from None
        self.model.config.rtc_config = config
        init = getattr(self.model, "init_rtc_processor", None)  # GR00T reads the config itself
        if init is not None:
            init()
        # RTC differentiates the denoiser's output inside enable_grad(): with the weights
        # frozen, no graph is recorded through the model, only the trivial one RTC needs.
        self.model.requires_grad_(False)
        self.settings = settings

    def to_model(self, tail: np.ndarray) -> Any:
        """The tail [K, A] in robot units as a [K, A] tensor in the model's action space."""
        torch = self.torch
        # On the preprocessor's device: the normalizer moves its statistics to the tensor's.
        action = torch.as_tensor(np.asarray(tail, np.float32), device=self.device)
        if self._normalizer is not None:
            transition = self._normalizer(self.lr.create_transition(action=action))
            action = transition[self.lr.TransitionKey.ACTION]
        config = self.model.config
        if getattr(config, "adapt_to_pi_aloha", False):  # the inverse of what the model applies
            action = self.model._pi_aloha_encode_actions_inv(action)
        return action

    def arguments(self, rtc: RtcInput, width: int, length: int) -> dict[str, Any]:
        """`predict_action_chunk`'s keywords for one call whose chunk has `length` actions."""
        self.configure(rtc.settings)
        delay = int(rtc.inference_delay)
        if delay < 0:
            raise PolicyError(f"RTC inference_delay={delay}: must be 0 or more (control ticks)")
        tail = np.asarray(rtc.prev_chunk_left_over, np.float32)
        if tail.ndim != 2 or tail.shape[1] != width:
            raise PolicyError(
                f"RTC tail of shape {tail.shape}, expected [K, {width}] (the policy's actions)"
            )
        if len(tail) == 0:  # a cold start: nothing to agree with, no guidance
            return {}
        if length:  # known after the first call (warm-up)
            tail = tail[:length]
        return {"inference_delay": delay, "prev_chunk_left_over": self.to_model(tail)}
