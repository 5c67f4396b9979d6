#!/usr/bin/env bash
# Every benchmark the closing notes quote, each beside its floor, JSON into ${1:-out/bench}.
# Run on a quiet machine: the numbers are wall-clock latencies.
set -euo pipefail
out="${1:-out/bench}"
mkdir -p "$out"
asyncinf bench transport --json "$out/transport.json"
asyncinf bench e2e --latency_ms 100 --duration 30 --json "$out/e2e_shm_30hz.json"
asyncinf bench e2e --latency_ms 100 --duration 30 --fps 200 --g 0.5 --json "$out/e2e_shm_200hz.json"
asyncinf bench e2e --latency_ms 100 --duration 30 --transport grpc --g 0.5 --json "$out/e2e_grpc_30hz.json"
python "$(dirname "$0")/bench_feetech.py" | tee "$out/feetech.txt"
