#!/usr/bin/env bash
# The LeRobot-policy benchmarks the closing notes quote, JSON into ${1:-out/bench-lerobot}.
# Run in LeRobot's environment (scripts/lerobot_env.sh) on a quiet machine. Builds the tiny
# checkpoints first (random weights: the timings are the architecture's, the actions mean
# nothing). DEVICE=cuda runs the policies on the GPU.
set -euo pipefail
out="${1:-out/bench-lerobot}"
device="${DEVICE:-cpu}"
mkdir -p "$out"
export HF_HUB_OFFLINE=1
python - "$out" <<'PY'
import sys
from asyncinf.policies.lerobot.tiny import make_tiny_checkpoint
for kind in ("act", "diffusion", "smolvla"):
    make_tiny_checkpoint(kind, f"{sys.argv[1]}/{kind}")
PY
run() {  # NAME KIND [bench e2e flags…]
    local name=$1 kind=$2
    shift 2
    asyncinf bench e2e --g 0.5 --duration 30 --policy.type="$kind" \
        --policy.path="$out/$kind" --policy.device="$device" --json "$out/$name.json" "$@"
}
# ACT, sim arm, 30 Hz, T = 50, g = 0.5, one 640x480 camera fitted to the checkpoint's 96x128.
run act_shm act --actions_per_chunk 50
run act_grpc act --actions_per_chunk 50 --transport grpc
run diffusion_shm diffusion
run smolvla_shm smolvla
python "$(dirname "$0")/measure_server_memory.py" "$out/act" --device "$device" \
    --json "$out/server_memory.json"
