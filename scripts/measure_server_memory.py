"""Resident memory of a policy server holding one LeRobot checkpoint: asyncinf's vs LeRobot's.

    python scripts/measure_server_memory.py CHECKPOINT_DIR [--device cpu]

Run it in an environment with LeRobot (scripts/lerobot_env.sh). asyncinf: `asyncinf serve`
with the checkpoint preloaded and warmed up, measured once it serves. LeRobot: a process that
imports LeRobot's own `lerobot.async_inference.policy_server` (its server's imports) and
then makes exactly the calls its `SendPolicyInstructions` makes to load a policy, plus one
inference through the processors, as its first observation would. (Driving LeRobot's server
over its wire would need pickle, which this project does not write.) Prints VmRSS and VmHWM
(peak) of each, in MiB, and JSON with --json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LEROBOT_SERVER = """
import sys, torch
import lerobot.async_inference.policy_server  # noqa: F401  (the server's own imports)
from lerobot.policies.factory import get_policy_class, make_pre_post_processors
from lerobot.configs.policies import PreTrainedConfig
path, device = sys.argv[1], sys.argv[2]
policy_type = PreTrainedConfig.from_pretrained(path).type
policy = get_policy_class(policy_type).from_pretrained(path)
policy.to(device)
override = {"device": device}
pre, post = make_pre_post_processors(policy.config, pretrained_path=path,
    preprocessor_overrides={"device_processor": override,
                            "rename_observations_processor": {"rename_map": {}}},
    postprocessor_overrides={"device_processor": override})
batch = {"observation.state": torch.zeros(1, policy.config.robot_state_feature.shape[0])}
for key, feature in policy.config.image_features.items():
    batch[key] = torch.zeros(1, *feature.shape)
batch.update(task="", robot_type="")
with torch.no_grad():
    post(policy.predict_action_chunk(pre(batch)))
print("loaded", flush=True)
sys.stdin.read()
"""


def memory_mib(pid: int) -> dict[str, float]:
    status = Path(f"/proc/{pid}/status").read_text()
    return {
        key: int(re.search(rf"^{key}:\s+(\d+) kB", status, re.M).group(1)) / 1024
        for key in ("VmRSS", "VmHWM")
    }


def lerobot_server(path: str, device: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as cwd:  # importing it writes ./logs
        proc = subprocess.Popen(
            [sys.executable, "-c", LEROBOT_SERVER, path, device],
            cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            for line in proc.stdout:  # LeRobot prints its own lines before ours
                if line.strip() == "loaded":
                    return memory_mib(proc.pid)
            raise SystemExit("LeRobot's loading path failed")
        finally:
            proc.kill()
            proc.wait()


def asyncinf_server(path: str, device: str) -> dict[str, float]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "asyncinf.runtime.cli", "serve", "--port=0", "--robot.type=sim",
         "--policy.type=" + _policy_type(path), f"--policy.path={path}",
         f"--policy.device={device}"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        for line in proc.stderr:
            if "serving on" in line:
                return memory_mib(proc.pid)
            if time.monotonic() > deadline:
                break
        raise SystemExit("asyncinf serve did not start")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def _policy_type(path: str) -> str:
    return json.loads(Path(path, "config.json").read_text())["type"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rows = {
        "asyncinf serve": asyncinf_server(args.checkpoint, args.device),
        "LeRobot policy_server": lerobot_server(args.checkpoint, args.device),
    }
    for name, mem in rows.items():
        print(f"{name:24s} RSS {mem['VmRSS']:7.0f} MiB   peak {mem['VmHWM']:7.0f} MiB")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
