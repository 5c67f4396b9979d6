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
# A LeRobot plugin robot (tests/lerobot_env/tinyarm_plugin.py: 4 joints, one 640x480 camera of
# its own type) at 30 Hz with the scripted policy: idle frames after the first chunk, over both
# transports; then what the adapter adds per tick to its own get_observation + send_action,
# and to LeRobot's SO-101 follower on emulated servos.
export HF_LEROBOT_CALIBRATION="$out/calibration"  # LeRobot's robots make their folder there
rm -rf "$out/site"
python "$(dirname "$0")/../tests/lerobot_env/lerobot_plugins.py" "$out/site"
tinyarm=(--robot.type=tinyarm "--robot.cameras={front: {type: tinyarm_camera, width: 640, height: 480, fps: 30}}")
for transport in shm grpc; do
    PYTHONPATH="$out/site" asyncinf bench e2e --g 0.5 --duration 30 --latency_ms 100 \
        --transport "$transport" "${tinyarm[@]}" --json "$out/tinyarm_$transport.json"
done
PYTHONPATH="$out/site" python "$(dirname "$0")/bench_lerobot_robot.py" --ticks 5000 \
    "${tinyarm[@]}" --json "$out/adapter_tinyarm.json"
python "$(dirname "$0")/bench_lerobot_robot.py" --json "$out/adapter_so101.json"
python "$(dirname "$0")/measure_server_memory.py" "$out/act" --device "$device" \
    --json "$out/server_memory.json"
