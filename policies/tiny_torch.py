"""A small real torch model (`--policy.type=tiny_torch`): camera images + state → [T, A].

It exists so that tests and benchmarks exercise real torch (tensors to the device, a
forward pass under `inference_mode`, results back) at a compute cost one can scale:
`hidden` (width), `depth` (conv and MLP layers) and `image_size` (input height).

Architecture: one CNN encoder shared by every camera (strided convs, global average pool),
the features of the cameras in sorted name order concatenated with the state, then an MLP
head. The output is a bounded move from the observed state, `state + 10·tanh(head)`, so that
untrained weights keep the arm calm.

Images: the policy asks for `image_size` rows and the camera's aspect ratio
(640×480 → 96×128 at image_size 96), so a client that refuses to stretch (gRPC's default
`--image_fit=refuse`) can still resize. A frame of any other size that reaches
`preprocess` is resized to that H×W with `cv2.INTER_AREA`, plainly: no crop, so a frame of
another aspect ratio is stretched.

Weights: seeded (`seed` option) when `--policy.path` is empty, else read with
`torch.load(path, weights_only=True)` from a file that `save()` wrote, which also records
the architecture. torch is imported here only; the registry imports this module lazily.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from asyncinf.policies.policy import Policy
from asyncinf.policies.torch_device import import_torch, resolve_device, synchronize
from asyncinf.runtime.errors import PolicyError, PolicyOptionError
from asyncinf.runtime.messages import Handshake, Observation, PolicySpec

FORMAT = "asyncinf.tiny_torch"
FORMAT_VERSION = 1
STATE_SCALE = 100.0  # joint units (degrees, 0..100) to O(1) inputs
DELTA_SCALE = 10.0  # largest move from the observed state, in joint units
_ARCH_OPTIONS = ("hidden", "depth", "image_size")
_BOUNDS = {"hidden": (1, 4096), "depth": (1, 16), "image_size": (16, 1024), "seed": (0, 2**63 - 1)}


def _cv2() -> Any:
    try:
        import cv2  # noqa: PLC0415  (optional extra: asyncinf[opencv])
    except ImportError:
        raise PolicyError(
            "tiny_torch resizes frames of another size with OpenCV: pip install 'asyncinf[opencv]' "
            "(or send frames at the size the policy asks for)"
        ) from None
    return cv2


def _build(torch: Any, *, cameras: int, joints: int, chunk: int, hidden: int, depth: int) -> Any:
    nn = torch.nn
    channels = max(8, hidden // 2)
    conv: list[Any] = [nn.Conv2d(3, channels, 5, stride=2, padding=2), nn.ReLU()]
    for _ in range(depth):
        conv += [nn.Conv2d(channels, channels, 3, stride=2, padding=1), nn.ReLU()]
    conv += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    mlp: list[Any] = [nn.Linear(cameras * channels + joints, hidden), nn.ReLU()]
    for _ in range(depth - 1):
        mlp += [nn.Linear(hidden, hidden), nn.ReLU()]
    mlp.append(nn.Linear(hidden, chunk * joints))
    return nn.ModuleDict({"encoder": nn.Sequential(*conv), "head": nn.Sequential(*mlp)})


class TinyTorchPolicy(Policy):
    """See the module docstring. `save(path)` writes weights `--policy.path` can load."""

    default_options = {
        "hidden": 64,  # MLP width; the CNN has max(8, hidden // 2) channels
        "depth": 2,  # extra conv layers, and MLP layers
        "image_size": 96,  # input height; width keeps the camera's aspect ratio
        "seed": 0,  # weights, when --policy.path is empty
    }

    @classmethod
    def check_options(cls, spec: PolicySpec) -> None:
        super().check_options(spec)
        options = {**cls.default_options, **spec.options}
        for name, (low, high) in _BOUNDS.items():
            value = options[name]
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise PolicyOptionError(
                    f"--policy.{name}={value!r}: must be an integer in {low}..{high}"
                )

    def __init__(self, spec: PolicySpec, features: Handshake) -> None:
        super().__init__(spec, features)
        torch = self.torch = import_torch(spec.type)
        self.device = resolve_device(torch, spec.device)
        self.camera_names = sorted(self.cameras)
        checkpoint = self._read(spec.path) if spec.path else None
        if checkpoint is not None:
            self._adopt(checkpoint, spec)
        o = self.options
        size = o["image_size"]
        self._image_shapes: dict[str, tuple[int, int, int]] = {}
        for cam in self.camera_names:
            h, w = int(self.cameras[cam][0]), int(self.cameras[cam][1])
            self._image_shapes[cam] = (size, max(1, round(size * w / h)), 3)
        n = len(self.joint_names)
        with torch.random.fork_rng(devices=[]):  # seeds these weights, not the process's RNG
            torch.manual_seed(o["seed"])
            model = _build(
                torch,
                cameras=len(self.camera_names),
                joints=n,
                chunk=self.chunk_size,
                hidden=o["hidden"],
                depth=o["depth"],
            )
        if checkpoint is not None:
            try:
                model.load_state_dict(checkpoint["state_dict"])
            except (RuntimeError, KeyError, TypeError) as exc:
                raise PolicyError(f"--policy.path={spec.path}: weights do not fit: {exc}") from None
        self.model = model.to(self.device).eval()

    # -- loading ------------------------------------------------------------------------------

    def _read(self, path: str) -> dict[str, Any]:
        # weights_only refuses anything but tensors and plain containers, raising torch's
        # loader's UnpicklingError: nothing here unpickles.
        refused = self.torch.serialization.pickle.UnpicklingError
        try:
            data = self.torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise PolicyError(f"--policy.path={path}: no such file") from None
        except (OSError, RuntimeError, EOFError, ValueError, refused) as exc:
            raise PolicyError(f"--policy.path={path}: not a torch weights file ({exc})") from None
        if not (isinstance(data, dict) and data.get("format") == FORMAT):
            raise PolicyError(
                f"--policy.path={path}: not a tiny_torch file (see TinyTorchPolicy.save)"
            )
        if data.get("version") != FORMAT_VERSION:
            raise PolicyError(
                f"--policy.path={path}: tiny_torch format version {data.get('version')!r}, "
                f"this build reads {FORMAT_VERSION}"
            )
        return data

    def _adopt(self, checkpoint: dict[str, Any], spec: PolicySpec) -> None:
        """Take the architecture from the file; options given explicitly must agree with it."""
        saved = checkpoint["options"]
        for name in _ARCH_OPTIONS:
            if name in spec.options and spec.options[name] != saved[name]:
                raise PolicyError(
                    f"--policy.{name}={spec.options[name]!r}, but {spec.path} was saved with "
                    f"{name}={saved[name]!r}; omit the option or use that value"
                )
            self.options[name] = saved[name]
        for what, ours, theirs in (
            ("joints", self.joint_names, checkpoint["joint_names"]),
            ("cameras", self.camera_names, checkpoint["camera_names"]),
            ("actions_per_chunk", self.chunk_size, checkpoint["actions_per_chunk"]),
        ):
            if ours != theirs:
                raise PolicyError(
                    f"--policy.path={spec.path} was saved for {what} {theirs!r}; "
                    f"this robot and client have {ours!r}"
                )

    def save(self, path: str | Path) -> None:
        """Write the weights and the architecture, for `--policy.path`."""
        self.torch.save(
            {
                "format": FORMAT,
                "version": FORMAT_VERSION,
                "options": {k: self.options[k] for k in _ARCH_OPTIONS},
                "joint_names": list(self.joint_names),
                "camera_names": list(self.camera_names),
                "actions_per_chunk": self.chunk_size,
                "state_dict": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            },
            str(path),
        )

    # -- inference ----------------------------------------------------------------------------

    @property
    def image_shapes(self) -> dict[str, tuple[int, int, int]]:
        return dict(self._image_shapes)

    def preprocess(self, observation: Observation) -> dict[str, Any]:
        """numpy → tensors on the device: state [1, A]; per camera [1, 3, H, W] uint8."""
        torch = self.torch
        state = np.asarray(observation.state, np.float32)
        if state.shape != (len(self.joint_names),):
            raise PolicyError(
                f"observation state has shape {state.shape}, expected ({len(self.joint_names)},)"
            )
        images = []
        for cam in self.camera_names:
            img = observation.images.get(cam)
            if img is None:
                raise PolicyError(f"observation has no image from camera {cam!r}")
            if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
                raise PolicyError(
                    f"camera {cam!r}: expected an HxWx3 uint8 image, got {img.dtype} {img.shape}"
                )
            h, w, _ = self._image_shapes[cam]
            if img.shape[:2] != (h, w):
                cv2 = _cv2()
                img = cv2.resize(np.ascontiguousarray(img), (w, h), interpolation=cv2.INTER_AREA)
            elif not img.flags.writeable:  # a shared-memory view: torch wants its own copy
                img = img.copy()
            tensor = torch.from_numpy(np.ascontiguousarray(img)).to(self.device)
            images.append(tensor.permute(2, 0, 1).unsqueeze(0))
        state_t = torch.from_numpy(state.reshape(1, -1).copy()).to(self.device)
        return {"state": state_t, "images": images}

    supports_batch = True

    def predict_chunk(self, inputs: dict[str, Any]) -> Any:
        """The forward pass; waits for the device so the server's timing is the model's."""
        return self._forward(inputs["state"], inputs["images"])[0]

    def predict_batch(self, inputs: list[dict[str, Any]]) -> list[Any]:
        """Several sessions' inputs stacked on the batch dimension: one forward pass."""
        torch = self.torch
        state = torch.cat([one["state"] for one in inputs])
        cameras = zip(*(one["images"] for one in inputs), strict=True)
        images = [torch.cat(per_camera) for per_camera in cameras]
        return list(self._forward(state, images))

    def _forward(self, state: Any, images: list[Any]) -> Any:
        """state [B, A], per camera [B, 3, H, W] uint8 → actions [B, T, A]."""
        torch = self.torch
        with torch.inference_mode():
            feats = [self.model["encoder"](img.float().div(255.0).sub(0.5)) for img in images]
            x = torch.cat([*feats, state / STATE_SCALE], dim=1)
            delta = torch.tanh(self.model["head"](x)).view(len(state), self.chunk_size, -1)
            actions = state.unsqueeze(1) + DELTA_SCALE * delta
        synchronize(torch, self.device)
        return actions

    def postprocess(self, outputs: Any) -> np.ndarray:
        """Back to the host as float32 [T, A]."""
        return super().postprocess(outputs.detach().to("cpu").numpy())
