#!/usr/bin/env bash
# Builds (or reuses) a virtual environment at VENV holding asyncinf, LeRobot's policy stack and
# the Feetech SDK its SO follower drives (for the robot adapter's tests).
#
# LeRobot cannot be an extra of ours: it pins torch and torchvision to ranges that clash with
# ours, and its grpc/protobuf pins clash with the gRPC extra. So LeRobot goes in with --no-deps,
# followed by the packages that loading and running its policies actually import.
# torch 2.14.1 + torchvision 0.29.1 are the pair that imports together from these machines' disk
# (PyPI's torchvision beside the CPU torch 2.13.0 fails at import; for Python 3.12 pip takes the
# same pair, a CUDA build, from PyPI: ~3 GB to download, it runs on the CPU); they are installed
# first so that nothing later replaces them. Re-running with the same recipe (Python, LeRobot,
# packages) only reinstalls asyncinf.
#
# usage: [PYTHON=python3.12] [LEROBOT_VERSION=0.6.1] scripts/lerobot_env.sh VENV
#        (LEROBOT_VERSION=0.4.4 and PYTHON=python3 by default; LeRobot 0.5+ needs Python >= 3.12)
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 VENV" >&2
    exit 2
fi
venv=$1
repo="$(cd "$(dirname "$0")/.." && pwd)"
lerobot_version=${LEROBOT_VERSION:-0.4.4}
python=${PYTHON:-python3}

torch_pins=(torch==2.14.1 torchvision==0.29.1)
# Per version, the ranges of LeRobot's own METADATA for what its policies (ACT, Diffusion,
# SmolVLA, VQ-BeT, TDMPC), processors, robots and cameras import; nothing for training,
# datasets, visualisation or other SDKs.
case $lerobot_version in
0.4.*)
    min_python=3.10
    lerobot_deps=(
        draccus==0.10.0 "huggingface-hub>=0.34.2,<0.36" "packaging>=24.2,<26" "safetensors>=0.4.3"
        "datasets>=4,<5" "accelerate>=1.10,<2" "diffusers>=0.27.2,<0.36" "einops>=0.8,<0.9"
        "imageio>=2.34,<3" "av>=15,<16" "pyserial>=3.5,<4" "deepdiff>=7.0.1,<9" "gymnasium>=1.1.1,<2"
        "transformers>=4.57.1,<5" "num2words>=0.5.14,<0.6"
        "feetech-servo-sdk>=1.0.0,<2"  # LeRobot's `feetech` extra: its SO follower's bus, in tests
    )
    ;;
0.6.*)
    # PEP 695 syntax. Policies no longer import `datasets` (the feature helpers moved to
    # lerobot.utils.feature_utils), so neither it nor av/torchcodec is needed.
    min_python=3.12
    lerobot_deps=(
        "draccus>=0.11.6,<0.12" "huggingface-hub>=1.6,<2" "packaging>=24.2,<26"
        "safetensors>=0.4.3,<1" "numpy>=2,<2.3" "einops>=0.8,<0.9" "gymnasium>=1.1.1,<2"
        "termcolor>=2.4,<4" "tqdm>=4.66,<5" "requests>=2.32,<3" "Pillow>=10,<13"
        "opencv-python-headless>=4.9,<4.14"
        "diffusers>=0.38,<0.40"                                             # `diffusion` extra
        "transformers>=5.4,<5.6" "num2words>=0.5.14,<0.6" "accelerate>=1.14,<2"  # `smolvla` extra
        "feetech-servo-sdk>=1.0.0,<2" "pyserial>=3.5,<4" "deepdiff>=7.0.1,<9"   # `feetech` extra
    )
    ;;
*)
    echo "LEROBOT_VERSION=$lerobot_version: no recipe here; use 0.4.x (Python 3.10/3.11) or 0.6.x (Python >= 3.12)" >&2
    exit 2
    ;;
esac
if ! py_version=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null); then
    echo "PYTHON=$python does not run; set PYTHON to the interpreter for the venv" >&2
    exit 2
fi
if [[ $(printf '%s\n' "$min_python" "$py_version" | sort -V | head -1) != "$min_python" ]]; then
    echo "LeRobot $lerobot_version needs Python >= $min_python, but PYTHON=$python is $py_version; set PYTHON (e.g. PYTHON=python3.12)" >&2
    exit 2
fi
recipe="python$py_version lerobot==$lerobot_version ${torch_pins[*]} ${lerobot_deps[*]}"
stamp="$venv/.asyncinf-lerobot-recipe"

step() { printf '\n== %s\n' "$*"; }

if [[ -f $stamp && $(cat "$stamp") == "$recipe" ]]; then
    step "reusing $venv (LeRobot $lerobot_version)"
else
    step "creating $venv (Python $py_version)"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip
    step "torch + torchvision (${torch_pins[*]}; several GB, a few minutes)"
    "$venv/bin/python" -m pip install --progress-bar off "${torch_pins[@]}"
    step "lerobot $lerobot_version (without its pins)"
    "$venv/bin/python" -m pip install --progress-bar off --no-deps "lerobot==$lerobot_version"
    step "what LeRobot's policies import"
    "$venv/bin/python" -m pip install --progress-bar off "${lerobot_deps[@]}" "${torch_pins[@]}"
    echo "$recipe" >"$stamp"
fi

step "asyncinf (editable) with the gRPC, OpenCV and test extras"
# The torch pins ride along so that pip keeps the torch above instead of resolving anew.
"$venv/bin/python" -m pip install -q -e "$repo[grpc,opencv,serial,test]" "${torch_pins[@]}"
"$venv/bin/python" - <<'PY'
import importlib.metadata as md

import torch

print(f"ready: lerobot {md.version('lerobot')}, torch {torch.__version__}")
PY
