"""torch for the policies that use it: imported on demand, devices checked before loading.

A device that is not there is refused here, at load, naming the fix: LeRobot's own config
would quietly fall back to another device, and a robot would then run a GPU policy at CPU
speed without anyone being told.
"""

from __future__ import annotations

from typing import Any

from asyncinf.runtime.errors import PolicyError, PolicyOptionError

DEVICE_TYPES = ("cpu", "cuda", "mps", "xpu")


def import_torch(policy_type: str) -> Any:
    try:
        import torch  # noqa: PLC0415  (optional: asyncinf[torch], or LeRobot's environment)
    except ImportError:
        raise PolicyError(
            f"--policy.type={policy_type} needs torch: pip install 'asyncinf[torch]'"
        ) from None
    return torch


def resolve_device(torch: Any, name: str) -> Any:
    """`torch.device(name)` once it is known to exist on this machine."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise PolicyOptionError(
            f"--policy.device={name!r}: {exc}; use one of {DEVICE_TYPES}"
        ) from None
    if device.type not in DEVICE_TYPES:
        raise PolicyOptionError(f"--policy.device={name}: use one of {DEVICE_TYPES}")
    if device.type == "cpu":
        return device
    backend = getattr(torch, device.type) if device.type != "mps" else torch.backends.mps
    if not backend.is_available():  # a device this machine lacks: a bad option here (78)
        raise PolicyOptionError(
            f"--policy.device={name}: {device.type.upper()} is not available to this torch "
            f"({torch.__version__}); use --policy.device=cpu"
        )
    if device.type in ("cuda", "xpu") and device.index is not None:
        count = backend.device_count()
        if device.index >= count:
            raise PolicyOptionError(
                f"--policy.device={name}: this machine has {count} {device.type} device(s)"
            )
    return device


def synchronize(torch: Any, device: Any) -> None:
    """Wait for queued kernels, so that a timing read next is the model's, not the launch's."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "xpu":
        torch.xpu.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
