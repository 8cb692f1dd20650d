#!/usr/bin/env bash
# One command for a machine with a GPU: bench/gpu_check.py's table for SegNext's ViT-B at 512 and
# 1024 px (training speed in fp32, bf16 and bf16 + torch.compile, peak memory, attention kernel,
# click latency, CUDA vs CPU agreement). Uses the project's .venv (created by run.sh if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash run.sh test --co -q > /dev/null
exec .venv/bin/python bench/gpu_check.py "$@"
