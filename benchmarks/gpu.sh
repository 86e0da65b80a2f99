#!/usr/bin/env bash
# The GPU benchmark as one prepared command (under 6 minutes on one GPU). Needs python3 with
# torch (CUDA), numpy and pillow ($PYTHON, default python3); nothing is installed. The table
# also goes to $OUT (or .).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
"${PYTHON:-python3}" benchmarks/gpu.py "$@" | tee "${OUT:-.}/gpu_benchmark.md"
